"""Account deletion: one contract for the partition repositories (DynamoDB under moto and the
in-memory twin), and the purge of uploaded objects."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import boto3

from chalicelib.deletion import AccountPurge, DynamoDBPartitionRepository
from chalicelib.events import Event
from chalicelib.items import Item
from chalicelib.keys import user_key
from chalicelib.sessions import RefreshToken, Session
from chalicelib.stores import Stores
from chalicelib.uploads import Upload
from tests.conftest import account, owner_of
from tools.localaws import Resources

NOW = "2026-01-01T00:00:00.000Z"


def fill(stores: Stores, name: str) -> None:
    """One row of every kind the account can own."""
    owner = owner_of(name)
    stores.users.add(account(name))
    session = Session(
        username=name,
        user_id=owner.user_id,
        session_id="s" * 22,
        user_agent="pytest",
        created_at=1,
        last_used_at=1,
        expires_at=9,
        idle_expires_at=5,
        token_version=0,
    )
    stores.sessions.create(session, RefreshToken(username=name, secret="a" * 43))
    stores.items.add(
        Item(
            owner=name,
            owner_id=owner.user_id,
            item_id="0" * 28,
            name="n",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    stores.uploads.add(
        Upload(
            owner=name,
            owner_id=owner.user_id,
            upload_id="1" * 28,
            kind="image",
            filename="a.png",
            content_type="image/png",
            size=1,
            key=f"uploads/users/{name}/images/{'1' * 28}/a.png",
            status="pending",
            created_at=NOW,
        ),
        expires_at=10,
    )
    stores.events.add(
        owner,
        Event(kind="signup", at=NOW, ip="203.0.113.7", user_agent="pytest", details={}),
        expires_at=10,
    )


def test_deleting_a_partition_takes_every_row_and_only_that_users(stores: Stores) -> None:
    fill(stores, "alice")
    fill(stores, "alicia")
    alice, alicia = owner_of("alice"), owner_of("alicia")
    # Profile, name claim, session, refresh token, item, upload, event.
    assert stores.partitions.delete_partition("alice") == 7
    assert stores.users.get("alice") is None
    assert stores.users.find("ALICE") is None
    assert stores.sessions.all("alice") == []
    assert stores.items.list(alice, status=None, limit=10, cursor=None).items == []
    assert stores.uploads.list(alice, limit=10, cursor=None).uploads == []
    assert stores.events.list(alice, limit=10, cursor=None).events == []
    assert stores.partitions.delete_partition("alice") == 0
    assert stores.users.get("alicia") is not None
    assert len(stores.items.list(alicia, status=None, limit=10, cursor=None).items) == 1
    assert len(stores.sessions.all("alicia")) == 1


def test_the_dynamodb_purge_takes_rows_it_does_not_know_and_the_objects(
    table: Any, aws: boto3.Session, resources: Resources
) -> None:
    table.put_item(Item={**user_key("alice"), "username": "alice"})
    # A kind of row a later (or earlier) version may have written.
    table.put_item(Item={"pk": "USER#alice", "sk": "SOMETHING#1"})
    table.put_item(Item={"pk": "USER#alicia", "sk": "SOMETHING#1"})
    s3 = aws.client("s3")
    for key in ("uploads/users/alice/images/1/a.png", "uploads/users/alicia/images/2/b.png"):
        s3.put_object(Bucket=resources.uploads_bucket, Key=key, Body=b"x")
    purge = AccountPurge(DynamoDBPartitionRepository(table), s3=s3, bucket=resources.uploads_bucket)
    assert purge.purge("alice") == 3
    assert [row["pk"] for row in table.scan()["Items"]] == ["USER#alicia"]
    remaining = s3.list_objects_v2(Bucket=resources.uploads_bucket)["Contents"]
    assert [entry["Key"] for entry in remaining] == ["uploads/users/alicia/images/2/b.png"]
    assert purge.purge("alice") == 0


def test_a_deleted_name_is_free_again_in_any_case(stores: Stores) -> None:
    fill(stores, "alice")
    stores.partitions.delete_partition("alice")
    stores.users.add(replace(account("alice"), username="Alice", user_id="f" * 32))
    assert stores.users.find("alice") == replace(
        account("alice"), username="Alice", user_id="f" * 32
    )
