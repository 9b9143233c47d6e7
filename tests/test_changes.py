"""Change data capture: stream records to domain events (unit), and the whole path under moto:
a write through the API, the table's stream, the handler, the bus, a rule, a queue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from chalice.test import Client

from chalicelib import responses
from chalicelib.changes import TTL_IDENTITY, DomainEvent, events_of
from chalicelib.eventroutes import SOURCE
from chalicelib.events import Entry, Event, event_row
from chalicelib.identity import AccountToken, Owner
from chalicelib.items import Item, _row
from chalicelib.keys import (
    challenge_key,
    email_claim_key,
    link_key,
    login_failure_key,
    name_claim_key,
    rate_key,
    recovery_key,
    refresh_key,
    totp_key,
    under_user,
    upload_key,
    user_key,
)
from chalicelib.sessions import Session, _refresh_item, _session_item
from chalicelib.table import TTL_ATTRIBUTE, plain, storable
from chalicelib.uploads import Upload, _record
from tests.conftest import Api
from tools.localaws import Resources

ALICE = Owner("alice", "a" * 32)
AT = 1_767_225_600  # 2026-01-01T00:00:00Z
HASH = "$scrypt$ln=14,r=8,p=5$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
_SERIALIZER = TypeSerializer()


def image(row: dict[str, Any]) -> dict[str, Any]:
    """A row in DynamoDB JSON, as a stream record carries it."""
    return {name: _SERIALIZER.serialize(value) for name, value in storable(plain(row)).items()}


def record(
    name: str,
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    event_id: str = "e-1",
    ttl: bool = False,
) -> dict[str, Any]:
    """A stream record in the shape Lambda delivers."""
    row = new if new is not None else old
    assert row is not None
    stream: dict[str, Any] = {
        "ApproximateCreationDateTime": AT,
        "Keys": image({"pk": row["pk"], "sk": row["sk"]}),
        "SequenceNumber": "100",
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if old is not None:
        stream["OldImage"] = image(old)
    if new is not None:
        stream["NewImage"] = image(new)
    found: dict[str, Any] = {
        "eventID": event_id,
        "eventName": name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-2",
        "dynamodb": stream,
        "eventSourceARN": "arn:aws:dynamodb:eu-west-2:000000000000:table/t/stream/s",
    }
    if ttl:
        found["userIdentity"] = TTL_IDENTITY
    return found


def item(**changes: Any) -> Item:
    fields: dict[str, Any] = {
        "owner": ALICE.username,
        "owner_id": ALICE.user_id,
        "item_id": "0190a1b2c3d4" + "0" * 16,
        "name": "notes",
        "data": {"pages": 3, "ratio": 0.5, "tags": ["a"]},
        "status": "active",
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }
    return Item(**{**fields, **changes})


def upload_row(status: str = "pending") -> dict[str, Any]:
    upload = Upload(
        owner=ALICE.username,
        owner_id=ALICE.user_id,
        upload_id="0190a1b2c3d4" + "1" * 16,
        kind="image",
        filename="cat.png",
        content_type="image/png",
        size=1234,
        key="uploads/users/alice/images/x/cat.png",
        status=status,
        created_at="2026-01-01T00:00:00.000Z",
    )
    row = {**upload_key(ALICE.username, upload.upload_id), **_record(upload)}
    return {**row, TTL_ATTRIBUTE: AT + 86400} if status == "pending" else row


def session_row(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "username": ALICE.username,
        "user_id": ALICE.user_id,
        "session_id": "s3ss10n-id",
        "user_agent": "Firefox on Linux",
        "created_at": AT,
        "last_used_at": AT,
        "expires_at": AT + 86400,
        "idle_expires_at": AT + 3600,
        "token_version": 0,
    }
    return _session_item(Session(**{**fields, **changes}))


def profile_row(**changes: Any) -> dict[str, Any]:
    return {
        **user_key(ALICE.username),
        "userId": ALICE.user_id,
        "username": ALICE.username,
        "passwordHash": HASH,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "role": "user",
        **changes,
    }


def security_row(account: Owner | str = ALICE) -> dict[str, Any]:
    event = Event(
        kind="login",
        at="2026-01-01T00:00:00.000Z",
        ip="203.0.113.9",
        user_agent="Firefox on Linux",
        details={"sessionId": "s3ss10n-id"},
    )
    return event_row(Entry(account, event, AT + 90 * 86400))


def only(found: list[DomainEvent]) -> DomainEvent:
    assert len(found) == 1, found
    return found[0]


# Items


def test_an_item_inserted_is_item_created_shown_as_the_api_shows_it() -> None:
    created = item()
    event = only(events_of(record("INSERT", new=_row(created), event_id="e-7")))
    assert event.envelope() == {
        "type": "item.created",
        "version": 1,
        "id": "e-7",
        "time": "2026-01-01T00:00:00.000Z",
        "accountId": ALICE.user_id,
        "username": "alice",
        "data": responses.item(created),
    }
    assert event.data["data"] == {"pages": 3, "ratio": 0.5, "tags": ["a"]}


def test_an_item_modified_is_item_updated_with_its_new_contents() -> None:
    before, after = item(), item(name="renamed", status="archived", version=2)
    event = only(events_of(record("MODIFY", old=_row(before), new=_row(after))))
    assert (event.type, event.data) == ("item.updated", responses.item(after))


def test_an_item_removed_is_item_deleted_with_its_last_contents() -> None:
    gone = item(version=4)
    event = only(events_of(record("REMOVE", old=_row(gone))))
    assert (event.type, event.data) == ("item.deleted", responses.item(gone))


def test_a_modify_that_changed_nothing_means_nothing() -> None:
    row = _row(item())
    assert events_of(record("MODIFY", old=row, new=row)) == []


# Uploads


def test_an_upload_completed_is_the_pending_record_turned_ready() -> None:
    event = only(events_of(record("MODIFY", old=upload_row(), new=upload_row("ready"))))
    assert event.type == "upload.completed"
    assert event.data == {
        "id": "0190a1b2c3d4" + "1" * 16,
        "kind": "image",
        "filename": "cat.png",
        "contentType": "image/png",
        "size": 1234,
        "status": "ready",
        "createdAt": "2026-01-01T00:00:00.000Z",
    }


def test_an_upload_removed_is_upload_deleted() -> None:
    event = only(events_of(record("REMOVE", old=upload_row("ready"))))
    assert (event.type, event.data["status"]) == ("upload.deleted", "ready")
    assert "downloadUrl" not in event.data


def test_an_upload_started_or_expired_means_nothing() -> None:
    assert events_of(record("INSERT", new=upload_row())) == []
    # DynamoDB's TTL removes a pending upload never completed: an expiry, not a deletion.
    assert events_of(record("REMOVE", old=upload_row(), ttl=True)) == []


# Sessions and the profile


def test_a_session_removed_is_session_revoked_with_its_id() -> None:
    event = only(events_of(record("REMOVE", old=session_row())))
    assert (event.type, event.data) == ("session.revoked", {"sessionId": "s3ss10n-id"})


def test_a_session_expired_or_touched_is_not_revoked() -> None:
    assert events_of(record("REMOVE", old=session_row(), ttl=True)) == []
    assert events_of(record("INSERT", new=session_row())) == []
    touched = session_row(last_used_at=AT + 60)
    assert events_of(record("MODIFY", old=session_row(), new=touched)) == []


@pytest.mark.parametrize(
    "change",
    [
        # Logging out everywhere.
        {"tokenVersion": 1, "updatedAt": "2026-01-01T00:01:00.000Z"},
        # A password change or reset: a new hash and the next token version.
        {"tokenVersion": 1, "passwordHash": "$scrypt$ln=14,r=8,p=5$bmV3$bmV3"},
        # Disabled by an administrator.
        {"disabled": True},
    ],
)
def test_a_profile_that_revokes_every_token_is_session_revoked_all(change: dict[str, Any]) -> None:
    event = only(events_of(record("MODIFY", old=profile_row(), new=profile_row(**change))))
    assert (event.type, event.data) == ("session.revoked", {"sessionId": "all"})


@pytest.mark.parametrize(
    "change",
    [
        {"email": "alice@example.com", "emailVerified": False},
        {"role": "admin"},
        {"mfaEnabled": True},
        {"passwordHash": "$scrypt$ln=15,r=8,p=5$dXBncmFkZWQ$dXBncmFkZWQ"},  # a login's rehash
    ],
)
def test_other_profile_changes_mean_nothing(change: dict[str, Any]) -> None:
    assert events_of(record("MODIFY", old=profile_row(), new=profile_row(**change))) == []


def test_re_enabling_an_account_revokes_nothing() -> None:
    old, new = profile_row(disabled=True), profile_row(disabled=False)
    assert events_of(record("MODIFY", old=old, new=new)) == []


def test_a_profile_marked_deleted_is_account_deleted() -> None:
    marked = profile_row(deletedAt="2026-01-01T00:00:00.000Z")
    event = only(events_of(record("MODIFY", old=profile_row(), new=marked, event_id="e-9")))
    assert event.envelope() == {
        "type": "account.deleted",
        "version": 1,
        "id": "e-9",
        "time": "2026-01-01T00:00:00.000Z",
        "accountId": ALICE.user_id,
        "username": "alice",
        "data": {"username": "alice"},
    }
    # Once marked, later changes of the profile are not deletions again.
    later = profile_row(deletedAt="2026-01-01T00:00:00.000Z", updatedAt="x")
    assert events_of(record("MODIFY", old=marked, new=later)) == []


def test_one_record_meaning_two_events_gives_each_its_own_stable_id() -> None:
    marked = profile_row(deletedAt="2026-01-01T00:00:00.000Z", tokenVersion=3)
    change = record("MODIFY", old=profile_row(), new=marked, event_id="e-5")
    found = events_of(change)
    assert [(event.type, event.id) for event in found] == [
        ("session.revoked", "e-5#session.revoked"),
        ("account.deleted", "e-5#account.deleted"),
    ]
    # A redelivered record yields the same ids: consumers deduplicate by them.
    assert [event.id for event in events_of(change)] == [event.id for event in found]


def test_a_profile_created_or_removed_means_nothing() -> None:
    # account.deleted is the marking; the purge removes the profile last, long after.
    assert events_of(record("INSERT", new=profile_row())) == []
    assert events_of(record("REMOVE", old=profile_row(deletedAt="x"))) == []


# Security events


def test_a_security_event_logged_is_security_kind_shown_as_the_api_shows_it() -> None:
    row = security_row()
    event = only(events_of(record("INSERT", new=row)))
    assert event.type == "security.login"
    assert event.data == {
        "type": "login",
        "at": "2026-01-01T00:00:00.000Z",
        "ip": "203.0.113.9",
        "userAgent": "Firefox on Linux",
        "details": {"sessionId": "s3ss10n-id"},
    }
    # Their TTL ends them after 90 days: nothing happened then.
    assert events_of(record("REMOVE", old=row, ttl=True)) == []


# What yields nothing


def owned(key: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {**key, "userId": ALICE.user_id, **fields}


@pytest.mark.parametrize(
    "row",
    [
        owned(name_claim_key("alice"), username="alice"),
        owned(email_claim_key("alice@example.com"), username="alice"),
        owned(refresh_key("alice", "d" * 64), sessionId="s", state="active"),
        owned(link_key("alice", "reset"), tokenHash="f" * 64),
        owned(totp_key("alice"), secret="JBSWY3DPEHPK3PXP"),
        owned(recovery_key("alice"), codes=["c" * 64]),
        owned(challenge_key("alice", "c" * 64)),
        rate_key("203.0.113.9", 1_767_225_600) | {"count": 1},
        login_failure_key("alice", "203.0.113.9") | {"count": 1},
        owned(under_user("alice", "UPLOADS"), starts=3),
        owned(under_user("alice", "WSTICKET#" + "e" * 64)),
        owned(under_user("alice", "CONN#abc="), connectionId="abc="),
        {"pk": "CONN#abc=", "sk": "CONN", "userId": ALICE.user_id, "username": "alice"},
        {"pk": "DONE#notify#e-1", "sk": "DONE", "expiresAt": AT},
    ],
    ids=lambda row: f"{row['pk'].split('#')[0]}/{row['sk'].split('#')[0]}",
)
def test_rows_that_are_not_domain_resources_mean_nothing(row: dict[str, Any]) -> None:
    changed = {**row, "extra": 1}
    assert events_of(record("INSERT", new=row)) == []
    assert events_of(record("MODIFY", old=row, new=changed)) == []
    assert events_of(record("REMOVE", old=row)) == []


def test_unstamped_rows_mean_nothing() -> None:
    """Rows of the original system and attempts at a name nobody holds have no account id."""
    legacy_item = {key: value for key, value in _row(item()).items() if key != "userId"}
    legacy_session = {key: value for key, value in session_row().items() if key != "userId"}
    legacy_profile = {key: value for key, value in profile_row().items() if key != "userId"}
    assert events_of(record("INSERT", new=legacy_item)) == []
    assert events_of(record("REMOVE", old=legacy_session)) == []
    assert events_of(record("INSERT", new=security_row("nobody"))) == []
    bumped = {**legacy_profile, "tokenVersion": 1}
    assert events_of(record("MODIFY", old=legacy_profile, new=bumped)) == []


# No secrets


def test_no_event_holds_a_secret_hash_or_token() -> None:
    token = AccountToken.new("alice")
    secret_rows = [
        profile_row(),
        profile_row(tokenVersion=2, passwordHash=HASH + "x", deletedAt="2026"),
        _refresh_item(
            Session(
                username="alice",
                user_id=ALICE.user_id,
                session_id="s3ss10n-id",
                user_agent="",
                created_at=AT,
                last_used_at=AT,
                expires_at=AT + 60,
                idle_expires_at=AT + 60,
                token_version=0,
            ),
            token,
        ),
    ]
    records = [
        record("MODIFY", old=secret_rows[0], new=secret_rows[1]),
        record("REMOVE", old=secret_rows[2]),
        record("REMOVE", old=session_row()),
        record("INSERT", new=owned(totp_key("alice"), secret="JBSWY3DPEHPK3PXP")),
    ]
    found = [event for change in records for event in events_of(change)]
    assert {event.type for event in found} == {"session.revoked", "account.deleted"}
    shown = json.dumps([event.envelope() for event in found])
    for secret in [HASH, "passwordHash", token.digest, token.secret, "JBSWY3DPEHPK3PXP"]:
        assert secret not in shown


def test_records_that_are_not_changes_of_rows_mean_nothing() -> None:
    assert events_of({"eventID": "x", "eventName": "INSERT", "dynamodb": {}}) == []
    assert events_of({"eventID": "x", "eventName": "OTHER", "dynamodb": {}}) == []


def test_without_the_streams_time_the_event_is_stamped_now() -> None:
    change = record("INSERT", new=_row(item()))
    del change["dynamodb"]["ApproximateCreationDateTime"]
    moment = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert only(events_of(change, clock=lambda: moment)).time == "2026-03-01T12:00:00.250Z"


# End to end, in-process under moto


def lambda_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A record as GetRecords returns it, in the shape Lambda hands the handler: the time in
    epoch seconds, and the stream's ARN (moto's records lack it)."""
    stream = dict(raw["dynamodb"])
    stamp = stream["ApproximateCreationDateTime"]
    stream["ApproximateCreationDateTime"] = int(stamp.timestamp())
    shaped = {**raw, "dynamodb": stream, "eventSourceARN": stream_arn}
    # What Lambda sends is JSON: anything else in a record would fail here.
    return dict(json.loads(json.dumps(shaped)))


def stream_records(session: boto3.Session, table_name: str) -> tuple[str, list[dict[str, Any]]]:
    """Every record of the table's stream so far (moto keeps one shard)."""
    arn = session.client("dynamodb").describe_table(TableName=table_name)["Table"][
        "LatestStreamArn"
    ]
    # botocore sends calls naming a stream to an account endpoint (<account>.streams-ddb...),
    # which moto does not intercept; the regional one is the same API.
    streams = session.client("dynamodbstreams", config=Config(account_id_endpoint_mode="disabled"))
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(100):
            page = streams.get_records(ShardIterator=iterator)
            records += page["Records"]  # type: ignore[arg-type]
            if not page["Records"] or "NextShardIterator" not in page:
                break
            iterator = page["NextShardIterator"]
    return arn, records


def received(session: boto3.Session, url: str) -> list[dict[str, Any]]:
    sqs = session.client("sqs")
    bodies: list[dict[str, Any]] = []
    for _ in range(50):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_an_api_write_reaches_the_bus_and_a_queue_its_rule_targets(
    aws: boto3.Session, resources: Resources, client: Client, api: Api
) -> None:
    # The dev stage's bus, rule and queue, as tools/localaws.py provisions them.
    url = aws.client("sqs").get_queue_url(QueueName=resources.queues["notify"])["QueueUrl"]
    api.signup("alice")
    login = api.post("/auth/login", {"username": "alice", "password": "correct horse battery"})
    token, session_id = login.json_body["token"], login.json_body["sessionId"]
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    created = client.http.post(
        "/items", headers=bearer, body=json.dumps({"name": "notes", "data": {"n": 1.5}})
    )
    assert created.status_code == 201
    shown = client.http.get(f"/items/{created.json_body['id']}", headers=bearer).json_body
    assert client.http.post("/auth/logout-all", headers=bearer).status_code == 200

    stream_arn, raw = stream_records(aws, resources.table_name)
    event = {"Records": [lambda_record(change, stream_arn) for change in raw]}
    client.lambda_.invoke("on_table_change", event)

    bodies = received(aws, url)
    assert {body["source"] for body in bodies} == {SOURCE}
    details = [body["detail"] for body in bodies]
    assert [body["detail-type"] for body in bodies] == [detail["type"] for detail in details]
    by_type = {detail["type"]: detail for detail in details}
    user_id = by_type["item.created"]["accountId"]
    assert by_type["item.created"]["data"] == shown
    assert by_type["item.created"]["username"] == "alice"
    # Logging out everywhere: the token version rose (all), and the one session went.
    revoked = [
        detail["data"]["sessionId"] for detail in details if detail["type"] == "session.revoked"
    ]
    assert sorted(revoked) == sorted(["all", session_id])
    assert {"security.signup", "security.login", "security.logout_all"} <= by_type.keys()
    assert all(detail["accountId"] == user_id and detail["version"] == 1 for detail in details)
    # Each event once, under an id of its own.
    assert len({detail["id"] for detail in details}) == len(details)
    assert "passwordHash" not in json.dumps(bodies)
    assert "$scrypt$" not in json.dumps(bodies)
