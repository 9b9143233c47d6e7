"""The mail worker's notices over the in-memory twins: each notice type mails the right address
once, and nothing goes where it should not.

The helpers here turn an account's security events into the envelopes the table's stream puts on
the bus (``security.<kind>``, ``data`` as ``GET /auth/events`` shows the event), for the tests of
the requests that used to mail their notices inline."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError
from chalice.test import Client

from chalicelib import responses
from chalicelib.eventroutes import NOTICE_TYPES
from chalicelib.events import Event
from chalicelib.identity import Owner
from chalicelib.mail import InMemoryMailer, Message
from chalicelib.notices import Notices
from chalicelib.stores import Stores
from chalicelib.table import plain
from chalicelib.workers import Idempotency
from tests.conftest import Api, FakeClock, account, owner_of
from tests.test_mfa_api import code, delete, enrol
from tests.test_workers import envelope, failed, invoke_worker, raw_record, record

ALICE = owner_of("alice")


def security_envelope(owner: Owner, event: Event, *, event_id: str) -> dict[str, Any]:
    """The envelope of a security event, as the stream handler makes it."""
    return envelope(
        f"security.{event.kind}",
        event_id=event_id,
        username=owner.username,
        account_id=owner.user_id,
        data=responses.event(event),
    )


def mail_notices(stores: Stores, mailer: InMemoryMailer, owner: Owner) -> None:
    """Run the mail worker's service over every event of the account's log (those already
    mailed are skipped by their marks, as a second delivery would be)."""
    notices = Notices(stores.users, mailer=mailer, once=Idempotency(stores.marks, worker="mail"))
    for event in stores.events.list(owner, limit=100, cursor=None).events:
        event_id = hashlib.sha256(f"{owner}|{event}".encode()).hexdigest()[:32]
        notices.send(security_envelope(owner, event, event_id=event_id))


def deliver_notices(client: Client, table: Any, username: str) -> None:
    """Hand the account's security events to the app's ``mail_worker`` as Lambda would (events
    already handled are skipped by their marks, as a second delivery would be)."""
    rows = table.query(
        KeyConditionExpression=Key("pk").eq(f"USER#{username}") & Key("sk").begins_with("EVENT#"),
        FilterExpression=Attr("userId").exists(),
        ConsistentRead=True,
    )["Items"]
    details = []
    for row in rows:
        event = Event(
            kind=str(row["kind"]),
            at=str(row["at"]),
            ip=str(row["ip"]),
            user_agent=str(row["userAgent"]),
            details=plain(row["details"]),
        )
        owner = Owner(username, str(row["userId"]))
        event_id = hashlib.sha256(str(row["sk"]).encode()).hexdigest()[:32]
        details.append(security_envelope(owner, event, event_id=event_id))
    for start in range(0, len(details), 10):
        assert failed(invoke_worker(client, "mail_worker", *details[start : start + 10])) == []


@pytest.fixture
def stores() -> Stores:
    stores = Stores.in_memory()
    verified = replace(account("alice"), email="alice@example.com", email_verified=True)
    stores.users.add(verified)
    return stores


@pytest.fixture
def mailbox() -> InMemoryMailer:
    return InMemoryMailer()


@pytest.fixture
def notices(stores: Stores, mailbox: InMemoryMailer, clock: FakeClock) -> Notices:
    return Notices(
        stores.users, mailer=mailbox, once=Idempotency(stores.marks, worker="mail", clock=clock)
    )


def event(kind: str, **details: Any) -> Event:
    return Event(
        kind=kind, at="2026-01-01T00:00:00.000Z", ip="203.0.113.7", user_agent="t", details=details
    )


def notice(kind: str, event_id: str = "e1", owner: Owner = ALICE, **details: Any) -> dict[str, Any]:
    return security_envelope(owner, event(kind, **details), event_id=event_id)


SUBJECTS = {
    "password_change": "Your password was changed",
    "password_reset": "Your password was changed",
    "mfa_enabled": "Two-step verification is on",
    "mfa_disabled": "Two-step verification is off",
}


def test_every_notice_type_is_mailed() -> None:
    assert {f"security.{kind}" for kind in SUBJECTS} | {"security.email_change"} == set(
        NOTICE_TYPES
    )


@pytest.mark.parametrize("kind", sorted(SUBJECTS))
def test_each_notice_goes_to_the_verified_address_once(
    kind: str, notices: Notices, mailbox: InMemoryMailer
) -> None:
    notices.send(notice(kind))
    notices.send(notice(kind))  # delivered twice
    (mail,) = mailbox.sent
    assert (mail.to, mail.subject) == ("alice@example.com", SUBJECTS[kind])
    assert "alice" in mail.text


def test_an_address_change_tells_the_old_address_the_new_one(
    notices: Notices, mailbox: InMemoryMailer
) -> None:
    notices.send(
        notice("email_change", previousEmail="old@example.com", newEmail="new@example.com")
    )
    (mail,) = mailbox.sent
    assert mail.to == "old@example.com"
    assert "new@example.com" in mail.text
    # Setting an address where there was no verified one tells no one.
    notices.send(notice("email_change", event_id="e2"))
    assert len(mailbox.sent) == 1


def test_no_verified_address_no_mail(
    notices: Notices, mailbox: InMemoryMailer, stores: Stores
) -> None:
    stores.users.add(replace(account("bob"), email="bob@example.com", email_verified=False))
    stores.users.add(account("carol"))
    notices.send(notice("password_change", owner=owner_of("bob")))
    notices.send(notice("mfa_enabled", event_id="e2", owner=owner_of("carol")))
    assert mailbox.sent == []


def test_an_account_gone_or_its_name_held_by_another_gets_nothing(
    notices: Notices, mailbox: InMemoryMailer, stores: Stores
) -> None:
    notices.send(notice("password_change", owner=Owner("alice", "f" * 32)))
    notices.send(notice("password_change", event_id="e2", owner=owner_of("nobody")))
    stores.partitions.delete_rows("alice")
    stores.partitions.delete_profile(owner_of("alice"))
    notices.send(notice("password_change", event_id="e3"))
    assert mailbox.sent == []


def test_other_events_are_not_notices(notices: Notices, mailbox: InMemoryMailer) -> None:
    notices.send(notice("login"))
    notices.send(envelope("item.created", event_id="e2", account_id=ALICE.user_id))
    assert mailbox.sent == []


def test_a_failed_send_is_retried_by_the_next_delivery(
    notices: Notices, mailbox: InMemoryMailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(message: Message) -> None:
        raise ClientError({"Error": {"Code": "TooManyRequestsException"}}, "SendEmail")

    monkeypatch.setattr(mailbox, "send", refuse)
    with pytest.raises(ClientError):
        notices.send(notice("mfa_disabled"))
    monkeypatch.undo()
    notices.send(notice("mfa_disabled"))
    assert [mail.subject for mail in mailbox.sent] == ["Two-step verification is off"]


def test_with_mail_off_the_notice_is_consumed_unsent(stores: Stores, clock: FakeClock) -> None:
    marks = Idempotency(stores.marks, worker="mail", clock=clock)
    Notices(stores.users, mailer=None, once=marks).send(notice("password_change"))
    # Handled, so not retried into the dead-letter queue: mail is simply off.
    now = int(clock().timestamp())
    assert not stores.marks.claim("mail", "e1", now=now, lease=now + 120)


class TestOverHttp:
    """The requests record their events and answer; the mail worker then mails the notices."""

    PASSWORD = "correct horse battery"

    def verified(self, api: Api, mailbox: InMemoryMailer, name: str, email: str) -> str:
        body = {"username": name, "password": self.PASSWORD, "email": email}
        assert api.post("/auth/signup", body).status_code == 201
        link = re.search(r"/verify-email\?token=([A-Za-z0-9_.%-]+)", mailbox.sent[-1].text)
        assert link is not None
        assert api.post("/auth/email/verify", {"token": link.group(1)}).status_code == 200
        return api.login(name, self.PASSWORD)

    def test_an_address_change_is_told_to_the_old_address_by_the_worker(
        self, api: Api, mailbox: InMemoryMailer, table: Any
    ) -> None:
        token = self.verified(api, mailbox, "alice", "old@example.com")
        changed = api.client.http.request(
            "PUT",
            "/auth/email",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=json.dumps({"email": "new@example.com", "password": self.PASSWORD}).encode(),
        )
        assert changed.status_code == 200
        # The request mailed only the new address's link.
        assert [mail.to for mail in mailbox.sent] == ["old@example.com", "new@example.com"]
        deliver_notices(api.client, table, "alice")
        deliver_notices(api.client, table, "alice")  # a second delivery mails nothing more
        notice = mailbox.sent[-1]
        assert (notice.to, notice.subject) == ("old@example.com", "Your email address was changed")
        assert "new@example.com" in notice.text
        assert len(mailbox.sent) == 3

    def test_a_password_change_is_told_by_the_worker(
        self, api: Api, mailbox: InMemoryMailer, table: Any
    ) -> None:
        token = self.verified(api, mailbox, "alice", "alice@example.com")
        changed = api.post(
            "/auth/password",
            {"currentPassword": self.PASSWORD, "newPassword": "a brand new passphrase"},
            {"Authorization": f"Bearer {token}"},
        )
        assert changed.status_code == 200
        assert len(mailbox.sent) == 1  # the verification link only
        deliver_notices(api.client, table, "alice")
        assert [(mail.to, mail.subject) for mail in mailbox.sent[1:]] == [
            ("alice@example.com", "Your password was changed")
        ]

    def test_two_step_verification_on_and_off_are_told_by_the_worker(
        self, api: Api, mailbox: InMemoryMailer, table: Any, clock: FakeClock
    ) -> None:
        token = self.verified(api, mailbox, "alice", "alice@example.com")
        secret, _ = enrol(api, token, clock)
        off = delete(
            api, "/auth/mfa/totp", {"password": self.PASSWORD, "code": code(secret, clock)}, token
        )
        assert off.status_code == 200
        assert len(mailbox.sent) == 1  # the verification link only
        deliver_notices(api.client, table, "alice")
        notices = sorted((mail.to, mail.subject) for mail in mailbox.sent[1:])
        assert notices == [
            ("alice@example.com", "Two-step verification is off"),
            ("alice@example.com", "Two-step verification is on"),
        ]

    def test_a_malformed_message_fails_alone(self, client: Client) -> None:
        good = envelope("security.login", event_id="fine", account_id=ALICE.user_id)
        event = {"Records": [raw_record("{oops", message_id="bad"), record(good)]}
        answer = client.lambda_.invoke("mail_worker", event).payload
        assert answer == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
