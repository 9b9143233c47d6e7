"""Email addresses, verification and password reset: the link repository's contract and the
service, each run over the in-memory twins and over DynamoDB (moto), on an injected clock."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from chalicelib.accounts import InvalidCredentials
from chalicelib.events import Client
from chalicelib.identity import Owner
from chalicelib.limits import TooManyAttempts
from chalicelib.mail import InMemoryMailer, Message
from chalicelib.policy import WeakPassword
from chalicelib.recovery import InvalidLink, Link, Recovery, RecoveryLimits
from chalicelib.sessions import InvalidRefreshToken
from chalicelib.stores import Stores
from chalicelib.users import EmailTaken
from tests.conftest import FakeClock, without_mfa
from tests.purging import delete_and_purge
from tests.test_accounts import PASSWORD, build
from tests.test_notices import mail_notices

SITE = "https://gatehouse.example"
NEW_PASSWORD = "a completely new passphrase"


def client(n: int = 7) -> Client:
    return Client(ip=f"203.0.113.{n}", user_agent="pytest")


class Waits:
    """A timer that only the service's sleeps move, to see how long an answer waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def timer(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def mailbox() -> InMemoryMailer:
    return InMemoryMailer()


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def recovery(stores: Stores, clock: FakeClock, mailbox: InMemoryMailer, waits: Waits) -> Recovery:
    accounts = build(stores, clock)
    return Recovery(
        stores.users,
        stores.links,
        accounts=accounts,
        events=accounts._events,
        mailer=mailbox,
        site_url=SITE,
        counters=stores.limits,
        limits=RecoveryLimits(per_account=5, per_address=50, window=3600),
        clock=clock,
        answer_after=0.5,
        timer=waits.timer,
        sleep=waits.sleep,
    )


def token_in(message: Message, path: str) -> str:
    """The token of the link to ``path`` in a mail, checked to be the same in both bodies."""
    links = re.findall(rf"{re.escape(SITE + path)}\?token=[^\s\"'<]+", message.text)
    assert len(set(links)) == 1, message.text
    assert links[0].replace("&", "&amp;") in message.html or links[0] in message.html
    return str(parse_qs(urlsplit(links[0]).query)["token"][0])


def signed_up(recovery: Recovery, mailbox: InMemoryMailer, name: str, email: str) -> Owner:
    user = recovery.register(name, PASSWORD, email, client())
    recovery.verify_email(token_in(mailbox.sent[-1], "/verify-email"), client())
    return user.owner


class TestLinks:
    def link(self, owner: Owner, digest: str = "d" * 64, expires_at: int = 2000) -> Link:
        return Link(owner=owner, purpose="reset", digest=digest, expires_at=expires_at, subject="s")

    def test_a_link_is_used_once_and_a_newer_one_voids_it(self, stores: Stores) -> None:
        alice = Owner("alice", "a" * 32)
        first = self.link(alice)
        stores.links.put(first)
        assert stores.links.get("alice", "reset") == first
        assert stores.links.get("alice", "verify") is None
        newer = self.link(alice, digest="e" * 64)
        stores.links.put(newer)
        assert not stores.links.consume(first, now=1000)
        assert stores.links.consume(newer, now=1000)
        assert not stores.links.consume(newer, now=1000)
        assert stores.links.get("alice", "reset") is None

    def test_an_expired_link_or_one_of_another_account_is_not_used(self, stores: Stores) -> None:
        alice = Owner("alice", "a" * 32)
        stores.links.put(self.link(alice, expires_at=1000))
        assert not stores.links.consume(self.link(Owner("alice", "b" * 32), expires_at=1000), now=1)
        assert not stores.links.consume(self.link(alice, expires_at=1000), now=1000)


class TestVerification:
    def test_signing_up_with_an_address_mails_a_link_that_verifies_it_once(
        self, recovery: Recovery, mailbox: InMemoryMailer, stores: Stores
    ) -> None:
        user = recovery.register("alice", PASSWORD, "Alice@Example.com", client())
        assert (user.email, user.email_verified) == ("Alice@Example.com", False)
        (mail,) = mailbox.sent
        assert mail.to == "Alice@Example.com"
        token = token_in(mail, "/verify-email")
        assert recovery.verify_email(token, client()) == "Alice@Example.com"
        stored = stores.users.get("alice")
        assert stored is not None
        assert stored.email_verified
        assert stores.users.find_by_email("alice@example.COM") == stored
        with pytest.raises(InvalidLink):
            recovery.verify_email(token, client())

    def test_a_verification_link_lasts_24_hours(
        self, recovery: Recovery, mailbox: InMemoryMailer, clock: FakeClock
    ) -> None:
        recovery.register("alice", PASSWORD, "alice@example.com", client())
        token = token_in(mailbox.sent[-1], "/verify-email")
        clock.advance(hours=24)
        with pytest.raises(InvalidLink):
            recovery.verify_email(token, client())

    def test_malformed_and_forged_tokens_are_invalid_links(self, recovery: Recovery) -> None:
        for token in ("", "garbage", "YWxpY2U." + "x" * 43, "." + "x" * 43):
            with pytest.raises(InvalidLink):
                recovery.verify_email(token, client())

    def test_a_verified_address_belongs_to_one_account(
        self, recovery: Recovery, mailbox: InMemoryMailer, stores: Stores
    ) -> None:
        signed_up(recovery, mailbox, "alice", "shared@example.com")
        recovery.register("bob", PASSWORD, "SHARED@example.com", client())
        with pytest.raises(EmailTaken):
            recovery.verify_email(token_in(mailbox.sent[-1], "/verify-email"), client())
        bob = stores.users.get("bob")
        assert bob is not None
        assert not bob.email_verified
        # Once alice is gone, the address is free again.
        alice = stores.users.get("alice")
        assert alice is not None
        delete_and_purge(stores, alice.owner)
        recovery.change_email(bob.owner, "shared@example.com", PASSWORD, client())
        recovery.verify_email(token_in(mailbox.sent[-1], "/verify-email"), client())
        assert stores.users.find_by_email("shared@example.com") is not None

    def test_a_change_notifies_the_old_address_and_frees_it(
        self, recovery: Recovery, mailbox: InMemoryMailer, stores: Stores
    ) -> None:
        alice = signed_up(recovery, mailbox, "alice", "old@example.com")
        with pytest.raises(InvalidCredentials):
            recovery.change_email(alice, "new@example.com", "not my password", client())
        changed = recovery.change_email(alice, "new@example.com", PASSWORD, client())
        assert (changed.email, changed.email_verified) == ("new@example.com", False)
        verification = mailbox.sent[-1]
        assert verification.to == "new@example.com"
        # The event names the address it replaced, and the mail worker tells that address.
        (change,) = [
            event
            for event in stores.events.list(alice, limit=50, cursor=None).events
            if event.kind == "email_change"
        ]
        assert change.details == {"previousEmail": "old@example.com", "newEmail": "new@example.com"}
        mail_notices(stores, mailbox, alice)
        notice = mailbox.sent[-1]
        assert notice.to == "old@example.com"
        assert "new@example.com" in notice.text
        assert stores.users.find_by_email("old@example.com") is None
        # The old address's link no longer confirms anything: the profile has moved on.
        old_link = token_in(mailbox.sent[0], "/verify-email")
        with pytest.raises(InvalidLink):
            recovery.verify_email(old_link, client())


class TestReset:
    def test_forgot_answers_alike_and_mails_only_a_verified_address(
        self, recovery: Recovery, mailbox: InMemoryMailer, waits: Waits
    ) -> None:
        signed_up(recovery, mailbox, "alice", "alice@example.com")
        recovery.register("bob", PASSWORD, "bob@example.com", client())  # never verified
        sent = len(mailbox.sent)
        for login in ("nobody", "bob", "bob@example.com", "nobody@example.com"):
            recovery.forgot(login, client())
        assert len(mailbox.sent) == sent
        for login in ("alice", "ALICE", "Alice@Example.com"):
            recovery.forgot(login, client())
        assert [mail.to for mail in mailbox.sent[sent:]] == ["alice@example.com"] * 3
        # Every answer waited until the same moment, mail or not.
        assert len(waits.slept) == 7
        assert waits.now == pytest.approx(0.5 * 7)

    def test_a_reset_sets_the_password_ends_every_session_and_tells_the_owner(
        self, recovery: Recovery, mailbox: InMemoryMailer, stores: Stores, clock: FakeClock
    ) -> None:
        alice = signed_up(recovery, mailbox, "alice", "alice@example.com")
        accounts = build(stores, clock)
        session = without_mfa(accounts.login("alice", PASSWORD, client()))
        recovery.forgot("alice", client())
        token = token_in(mailbox.sent[-1], "/reset")
        with pytest.raises(WeakPassword):
            recovery.reset(token, "password1", client())
        recovery.reset(token, NEW_PASSWORD, client())  # the weak try did not use up the link
        assert session.refresh is not None
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(session.refresh.encode(), client())
        assert accounts.list_sessions(alice) == []
        assert accounts.login("alice", NEW_PASSWORD, client()).user.owner == alice
        mail_notices(stores, mailbox, alice)
        notice = mailbox.sent[-1]
        assert (notice.to, "password" in notice.subject.lower()) == ("alice@example.com", True)
        kinds = {event.kind for event in accounts.events(alice, limit=50, cursor=None).events}
        assert {"password_reset_requested", "password_reset"} <= kinds
        with pytest.raises(InvalidLink):
            recovery.reset(token, "yet another passphrase", client())

    def test_a_reset_link_lasts_one_hour(
        self, recovery: Recovery, mailbox: InMemoryMailer, clock: FakeClock
    ) -> None:
        signed_up(recovery, mailbox, "alice", "alice@example.com")
        recovery.forgot("alice", client())
        token = token_in(mailbox.sent[-1], "/reset")
        clock.advance(minutes=60)
        with pytest.raises(InvalidLink):
            recovery.reset(token, NEW_PASSWORD, client())

    def test_a_newer_link_or_a_password_change_voids_a_reset_link(
        self, recovery: Recovery, mailbox: InMemoryMailer, stores: Stores, clock: FakeClock
    ) -> None:
        alice = signed_up(recovery, mailbox, "alice", "alice@example.com")
        recovery.forgot("alice", client())
        first = token_in(mailbox.sent[-1], "/reset")
        recovery.forgot("alice", client())
        second = token_in(mailbox.sent[-1], "/reset")
        with pytest.raises(InvalidLink):
            recovery.reset(first, NEW_PASSWORD, client())
        build(stores, clock).change_password(alice, PASSWORD, "changed in the meantime", client())
        with pytest.raises(InvalidLink):
            recovery.reset(second, NEW_PASSWORD, client())

    def test_requests_are_limited_per_account_and_per_address(
        self, recovery: Recovery, mailbox: InMemoryMailer
    ) -> None:
        signed_up(recovery, mailbox, "alice", "alice@example.com")
        for n in range(4):  # the sign-up counted once already
            recovery.forgot("alice", client(n))
        with pytest.raises(TooManyAttempts):
            recovery.forgot("ALICE", client(99))
        # Another name from the same addresses is its own budget.
        recovery.forgot("bob", client(1))


def test_a_signup_whose_mail_fails_still_creates_the_account(
    recovery: Recovery, mailbox: InMemoryMailer, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(message: Message) -> None:
        raise ClientError({"Error": {"Code": "MessageRejected"}}, "SendEmail")

    monkeypatch.setattr(mailbox, "send", refuse)
    user = recovery.register("alice", PASSWORD, "alice@example.com", client())
    assert stores.users.get("alice") == user
    monkeypatch.undo()
    # The owner asks again once mail works.
    recovery.change_email(user.owner, "alice@example.com", PASSWORD, client())
    recovery.verify_email(token_in(mailbox.sent[-1], "/verify-email"), client())
    assert stores.users.find_by_email("alice@example.com") is not None
