"""One contract for the item repository, run against DynamoDB (moto) and the in-memory twin."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.items import Item, ItemNotFound, ItemPage, VersionMismatch
from chalicelib.keys import ConcurrentChange, OwnerMissing
from chalicelib.paging import InvalidCursor, encode_cursor
from chalicelib.stores import Stores
from tests.conftest import account, follow, owner_of

NOW = "2026-01-01T00:00:00.000Z"


def user(stores: Stores, name: str) -> None:
    stores.users.add(account(name))


def item(owner: str, n: int, **changes: Any) -> Item:
    base = Item(
        owner=owner,
        owner_id=owner_of(owner).user_id,
        item_id=f"{n:012x}{n:016x}",
        name=f"item {n}",
        data={"n": n, "half": 0.5, "whole": 2.0, "list": [1, "a", True, None]},
        status="active",
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(base, **changes)


@pytest.fixture
def owners(stores: Stores) -> Stores:
    user(stores, "alice")
    user(stores, "bob")
    return stores


def test_an_added_item_reads_back_with_numbers_as_stored(owners: Stores) -> None:
    owners.items.add(item("alice", 1))
    # DynamoDB keeps numbers as decimals: 2.0 comes back as 2, 0.5 as 0.5.
    assert owners.items.get(owner_of("alice"), item("alice", 1).item_id) == item(
        "alice", 1, data={"n": 1, "half": 0.5, "whole": 2, "list": [1, "a", True, None]}
    )
    assert owners.items.get(owner_of("bob"), item("alice", 1).item_id) is None


def test_an_item_needs_its_owner(stores: Stores) -> None:
    with pytest.raises(OwnerMissing):
        stores.items.add(item("ghost", 1))
    assert stores.items.get(owner_of("ghost"), item("ghost", 1).item_id) is None


def test_an_existing_id_is_not_overwritten(owners: Stores) -> None:
    owners.items.add(item("alice", 1))
    with pytest.raises(ConcurrentChange):
        owners.items.add(item("alice", 1, name="other"))
    stored = owners.items.get(owner_of("alice"), item("alice", 1).item_id)
    assert stored is not None
    assert stored.name == "item 1"


def test_update_is_conditional_on_the_version(owners: Stores) -> None:
    owners.items.add(item("alice", 1))
    item_id = item("alice", 1).item_id
    updated = owners.items.update(
        owner_of("alice"),
        item_id,
        expected_version=1,
        name="renamed",
        data={"x": 1.5},
        status="archived",
        updated_at="2026-02-02T00:00:00.000Z",
    )
    assert updated == item(
        "alice",
        1,
        name="renamed",
        data={"x": 1.5},
        status="archived",
        updated_at="2026-02-02T00:00:00.000Z",
        version=2,
    )
    assert owners.items.get(owner_of("alice"), item_id) == updated
    with pytest.raises(VersionMismatch) as stale:
        owners.items.update(
            owner_of("alice"),
            item_id,
            expected_version=1,
            name="x",
            data={},
            status="active",
            updated_at=NOW,
        )
    assert stale.value.current == 2
    with pytest.raises(ItemNotFound):
        owners.items.update(
            owner_of("bob"),
            item_id,
            expected_version=2,
            name="x",
            data={},
            status="active",
            updated_at=NOW,
        )
    assert owners.items.get(owner_of("bob"), item_id) is None


def test_concurrent_updates_of_one_version_let_exactly_one_win(owners: Stores) -> None:
    owners.items.add(item("alice", 1))
    item_id = item("alice", 1).item_id
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            owners.items.update(
                owner_of("alice"),
                item_id,
                expected_version=1,
                name=f"writer {index}",
                data={},
                status="active",
                updated_at=NOW,
            )
            outcomes.append("updated")
        except VersionMismatch:
            outcomes.append("stale")

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["stale"] * 7 + ["updated"]
    stored = owners.items.get(owner_of("alice"), item_id)
    assert stored is not None
    assert stored.version == 2


def test_delete_is_conditional_and_never_resurrects(owners: Stores) -> None:
    owners.items.add(item("alice", 1))
    item_id = item("alice", 1).item_id
    with pytest.raises(VersionMismatch):
        owners.items.delete(owner_of("alice"), item_id, expected_version=2)
    with pytest.raises(ItemNotFound):
        owners.items.delete(owner_of("bob"), item_id, expected_version=None)
    owners.items.delete(owner_of("alice"), item_id, expected_version=1)
    assert owners.items.get(owner_of("alice"), item_id) is None
    with pytest.raises(ItemNotFound):
        owners.items.delete(owner_of("alice"), item_id, expected_version=None)
    with pytest.raises(ItemNotFound):
        owners.items.update(
            owner_of("alice"),
            item_id,
            expected_version=1,
            name="x",
            data={},
            status="active",
            updated_at=NOW,
        )
    assert owners.items.get(owner_of("alice"), item_id) is None


def all_pages(list_page: Callable[..., ItemPage], limit: int) -> list[list[str]]:
    pages = follow(lambda cursor: list_page(limit=limit, cursor=cursor), lambda page: page.cursor)
    return [[found.item_id for found in page.items] for page in pages]


@pytest.mark.parametrize("status", [None, "pending"])
def test_listing_is_newest_first_in_pages_without_gaps(owners: Stores, status: str | None) -> None:
    for n in range(1, 8):
        owners.items.add(item("alice", n, status="pending" if n % 2 else "active"))
    owners.items.add(item("bob", 9, status="pending"))
    expected = [item("alice", n).item_id for n in range(7, 0, -1) if status is None or n % 2]

    def list_page(*, limit: int, cursor: str | None) -> ItemPage:
        return owners.items.list(owner_of("alice"), status=status, limit=limit, cursor=cursor)

    pages = all_pages(list_page, 2)
    assert [found for page in pages for found in page] == expected
    assert [len(page) for page in pages] == [2] * (len(expected) // 2) + (
        [len(expected) % 2] if len(expected) % 2 else []
    )


def test_a_cursor_names_only_a_row_of_the_caller(owners: Stores) -> None:
    for n in range(1, 4):
        owners.items.add(item("alice", n))
    cursor = owners.items.list(owner_of("alice"), status=None, limit=1, cursor=None).cursor
    assert cursor is not None
    assert owners.items.list(owner_of("bob"), status=None, limit=10, cursor=cursor).items == []
    for bad in ("garbage", encode_cursor({"sk": "PROFILE"}), encode_cursor({"pk": "USER#bob"})):
        with pytest.raises(InvalidCursor):
            owners.items.list(owner_of("alice"), status=None, limit=1, cursor=bad)


def test_by_status_lists_every_owner_newest_first(owners: Stores) -> None:
    for n in range(1, 7):
        owners.items.add(item("alice" if n % 2 else "bob", n, status="pending"))
    owners.items.add(item("alice", 7, status="active"))
    expected = [item("", n).item_id for n in range(6, 0, -1)]

    def list_page(*, limit: int, cursor: str | None) -> ItemPage:
        return owners.items.by_status("pending", limit=limit, cursor=cursor)

    assert all_pages(list_page, 4) == [expected[:4], expected[4:]]
    page = owners.items.by_status("pending", limit=6, cursor=None)
    assert (len(page.items), page.cursor) == (6, None)
    assert {found.owner for found in page.items} == {"alice", "bob"}
    with pytest.raises(InvalidCursor):
        owners.items.by_status("pending", limit=1, cursor=encode_cursor({"sk": "ITEM#x"}))


def test_an_update_moves_the_item_between_statuses(owners: Stores) -> None:
    owners.items.add(item("alice", 1, status="pending"))
    owners.items.update(
        owner_of("alice"),
        item("alice", 1).item_id,
        expected_version=1,
        name="done",
        data={},
        status="archived",
        updated_at=NOW,
    )
    assert owners.items.by_status("pending", limit=5, cursor=None).items == []
    assert [
        found.name for found in owners.items.by_status("archived", limit=5, cursor=None).items
    ] == ["done"]
