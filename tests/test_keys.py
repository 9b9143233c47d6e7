"""The stored layout, byte for byte: what each DynamoDB repository writes, and that rows written
by earlier versions still read. Changing any of these breaks existing tables."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.events import DynamoDBSecurityEventRepository, Event
from chalicelib.identity import Owner
from chalicelib.items import DynamoDBItemRepository, Item
from chalicelib.keys import error_code, user_key
from chalicelib.limits import Attempt, DynamoDBLimitRepository, Failures
from chalicelib.sessions import DynamoDBSessionRepository, RefreshToken, Session
from chalicelib.uploads import DynamoDBUploadRepository, Upload
from chalicelib.users import DynamoDBUserRepository, User

NOW = "2026-01-01T00:00:00.000Z"
ITEM_ID = "0123456789ab" + "0" * 16


ALICE = Owner("alice", "a" * 32)


def rows(table: Any) -> list[dict[str, Any]]:
    """Every row but alice's profile and name claim."""
    every = sorted(table.scan()["Items"], key=lambda row: (row["pk"], row["sk"]))
    return [row for row in every if row["sk"] not in {"PROFILE", "NAME"}]


def add_alice(table: Any) -> None:
    DynamoDBUserRepository(table).add(
        User(username="alice", user_id=ALICE.user_id, password_hash="h", created_at=NOW)
    )


def test_session_and_refresh_rows(table: Any) -> None:
    add_alice(table)
    repository = DynamoDBSessionRepository(table)
    session = Session(
        username="alice",
        user_id=ALICE.user_id,
        session_id="s" * 22,
        user_agent="pytest",
        created_at=100,
        last_used_at=100,
        expires_at=900,
        idle_expires_at=500,
        token_version=2,
    )
    first = RefreshToken(username="alice", secret="a" * 43)
    second = RefreshToken(username="alice", secret="b" * 43)
    repository.create(session, first)
    repository.rotate(session, used=first, new=second, now=200, idle_expires_at=600)
    assert rows(table) == [
        {
            "pk": "USER#alice",
            "sk": f"REFRESH#{first.digest}",
            "sessionId": "s" * 22,
            "userId": ALICE.user_id,
            "state": "consumed",
            "consumedAt": 200,
            "expiresAt": 900,
        },
        {
            "pk": "USER#alice",
            "sk": f"REFRESH#{second.digest}",
            "sessionId": "s" * 22,
            "userId": ALICE.user_id,
            "state": "active",
            "expiresAt": 900,
        },
        {
            "pk": "USER#alice",
            "sk": "SESSION#" + "s" * 22,
            "sessionId": "s" * 22,
            "userId": ALICE.user_id,
            "userAgent": "pytest",
            "createdAt": 100,
            "lastUsedAt": 200,
            "idleExpiresAt": 600,
            "tokenVersion": 2,
            "expiresAt": 900,
        },
    ]


def test_a_session_row_without_the_later_attributes_reads(table: Any) -> None:
    table.put_item(
        Item={
            "pk": "USER#alice",
            "sk": "SESSION#" + "s" * 22,
            "sessionId": "s" * 22,
            "createdAt": 100,
            "lastUsedAt": 100,
            "idleExpiresAt": 500,
            "expiresAt": 900,
        }
    )
    session = DynamoDBSessionRepository(table).get("alice", "s" * 22)
    assert session is not None
    # Without an account id it can never be live again: its account logs in once more.
    assert (session.user_agent, session.token_version, session.user_id) == ("", 0, "")


def test_item_row_and_its_index_keys(table: Any) -> None:
    add_alice(table)
    DynamoDBItemRepository(table).add(
        Item(
            owner="alice",
            owner_id=ALICE.user_id,
            item_id=ITEM_ID,
            name="note",
            data={"x": 1.5, "n": 2},
            status="pending",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    assert rows(table)[0] == {
        "pk": "USER#alice",
        "sk": f"ITEM#{ITEM_ID}",
        "owner": "alice",
        "userId": ALICE.user_id,
        "itemId": ITEM_ID,
        "name": "note",
        "data": {"x": Decimal("1.5"), "n": 2},
        "status": "pending",
        "createdAt": NOW,
        "updatedAt": NOW,
        "version": 1,
        "gsi1pk": "ITEMSTATUS#pending#0",
        "gsi1sk": ITEM_ID,
    }


def test_upload_row_pending_then_ready(table: Any) -> None:
    add_alice(table)
    repository = DynamoDBUploadRepository(table)
    repository.add(
        Upload(
            owner="alice",
            owner_id=ALICE.user_id,
            upload_id=ITEM_ID,
            kind="image",
            filename="a.png",
            content_type="image/png",
            size=10,
            key=f"uploads/users/alice/images/{ITEM_ID}/a.png",
            status="pending",
            created_at=NOW,
        ),
        expires_at=1234,
    )
    pending = {
        "pk": "USER#alice",
        "sk": f"UPLOAD#{ITEM_ID}",
        "owner": "alice",
        "userId": ALICE.user_id,
        "uploadId": ITEM_ID,
        "kind": "image",
        "filename": "a.png",
        "contentType": "image/png",
        "size": 10,
        "objectKey": f"uploads/users/alice/images/{ITEM_ID}/a.png",
        "status": "pending",
        "createdAt": NOW,
        # No TTL: the sweep finds it in the index by its deadline, and removes it and its object.
        "gsi1pk": "PENDINGUPLOAD",
        "gsi1sk": "1970-01-01T00:20:34.000Z",
    }
    assert rows(table) == [pending]
    repository.mark_ready(ALICE, ITEM_ID)
    ready = {key: value for key, value in pending.items() if not key.startswith("gsi1")}
    assert rows(table) == [{**ready, "status": "ready"}]


def test_event_row(table: Any) -> None:
    event = Event(kind="login", at=NOW, ip="203.0.113.7", user_agent="pytest", details={"n": 1})
    DynamoDBSecurityEventRepository(table).add(ALICE, event, expires_at=99)
    (row,) = rows(table)
    assert re.fullmatch(r"EVENT#2026-01-01T00:00:00\.000Z#[0-9a-f]{8}", row.pop("sk"))
    assert row == {
        "pk": "USER#alice",
        "userId": ALICE.user_id,
        "kind": "login",
        "at": NOW,
        "ip": "203.0.113.7",
        "userAgent": "pytest",
        "details": {"n": 1},
        "expiresAt": 99,
    }


def test_failure_and_rate_rows(table: Any) -> None:
    repository = DynamoDBLimitRepository(table)
    repository.count_attempts(
        "Alice",
        [
            Attempt(
                scope="203.0.113.7",
                previous=None,
                new=Failures(count=1, last_attempt_at=100, locked_until=101),
                expires_at=3700,
            )
        ],
    )
    repository.hit("203.0.113.7", window_start=60, expires_at=180)
    assert rows(table) == [
        {
            "pk": "LOGIN#alice",
            "sk": "FAIL#203.0.113.7",
            "failures": 1,
            "lastAttemptAt": 100,
            "lockedUntil": 101,
            "expiresAt": 3700,
        },
        {"pk": "RATE#203.0.113.7", "sk": "WINDOW#60", "hits": 1, "expiresAt": 180},
    ]


def test_error_code_reads_the_aws_error_code(table: Any) -> None:
    with pytest.raises(ClientError) as failed:
        table.update_item(
            Key=user_key("nobody"),
            UpdateExpression="SET x = :x",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":x": 1},
        )
    assert error_code(failed.value) == "ConditionalCheckFailedException"
    assert error_code(ClientError({}, "GetItem")) == ""
