"""The upgrade tool: rows of an earlier version get their account's id and show again."""

from __future__ import annotations

from typing import Any

from chalicelib.items import DynamoDBItemRepository
from chalicelib.keys import item_key, user_key
from chalicelib.users import DynamoDBUserRepository
from tools.migrate import migrate

ITEM_ID = "0123456789ab" + "0" * 16


def test_earlier_rows_are_stamped_once_and_show_again(table: Any) -> None:
    table.put_item(
        Item={**user_key("old"), "username": "old", "passwordHash": "h", "createdAt": "2024"}
    )
    # An item as an earlier version wrote it: no userId.
    table.put_item(
        Item={
            **item_key("old", ITEM_ID),
            "owner": "old",
            "itemId": ITEM_ID,
            "name": "note",
            "data": {},
            "status": "active",
            "createdAt": "2025",
            "updatedAt": "2025",
            "version": 1,
        }
    )
    table.put_item(Item={"pk": "USER#old", "sk": "SESSION#" + "s" * 22, "sessionId": "s" * 22})
    counts = migrate(table)
    assert (counts.ids, counts.rows) == (1, 1)
    user = DynamoDBUserRepository(table).get("old")
    assert user is not None
    assert user.user_id is not None
    assert DynamoDBUserRepository(table).find("OLD") == user
    item = DynamoDBItemRepository(table).get(user.owner, ITEM_ID)
    assert item is not None
    assert item.name == "note"
    # The session stays as it was: it ends, and its user logs in again.
    session = table.get_item(Key={"pk": "USER#old", "sk": "SESSION#" + "s" * 22})["Item"]
    assert "userId" not in session
    again = migrate(table)
    assert (again.ids, again.rows) == (0, 0)
    assert DynamoDBUserRepository(table).get("old") == user


def test_a_dry_run_counts_what_stamping_would_change_and_writes_nothing(table: Any) -> None:
    table.put_item(
        Item={**user_key("old"), "username": "old", "passwordHash": "h", "createdAt": "2024"}
    )
    table.put_item(Item={**item_key("old", ITEM_ID), "owner": "old", "itemId": ITEM_ID})
    before = table.scan()["Items"]
    counts = migrate(table, dry_run=True)
    assert (counts.ids, counts.rows) == (1, 1)
    assert table.scan()["Items"] == before
