"""One contract for the item repository, run against DynamoDB (moto) and the in-memory twin."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.items import (
    SHARD_POSITION,
    START,
    Item,
    ItemNotFound,
    ItemPage,
    ShardRead,
    VersionMismatch,
    _row,
    merge_shards,
    shard_names,
    shard_positions,
)
from chalicelib.keys import ConcurrentChange, OwnerMissing, status_shard
from chalicelib.paging import InvalidCursor, decode_cursor, encode_cursor
from chalicelib.stores import Stores
from tests.conftest import account, follow, owner_of
from tools import reindex as reindex_command
from tools.reindex import reindex

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


# The status index in shards (STATUS_INDEX_SHARDS, 8 here): the listing merges them.


def spread(count: int, *, same_ms: bool = False) -> list[Item]:
    """``count`` items of alice's and bob's over every shard, ids as the service makes them
    (with ``same_ms``, all created in the same millisecond)."""
    made = []
    for n in range(count):
        ms = 1_700_000_000_000 if same_ms else 1_700_000_000_000 + n // 3
        random_half = (n * 0x9E3779B97F4A7C15) % 2**64
        made.append(item("alice" if n % 2 else "bob", n, item_id=f"{ms:012x}{random_half:016x}"))
    return made


def status_pages(stores: Stores, status: str, limit: int) -> list[list[str]]:
    def list_page(*, limit: int, cursor: str | None) -> ItemPage:
        return stores.items.by_status(status, limit=limit, cursor=cursor)

    return all_pages(list_page, limit)


@pytest.mark.parametrize("same_ms", [False, True])
@pytest.mark.parametrize("limit", [1, 2, 7, 40])
def test_by_status_merges_the_shards_newest_first_in_full_pages(
    owners: Stores, limit: int, same_ms: bool
) -> None:
    made = spread(30, same_ms=same_ms)
    for each in made:
        owners.items.add(each)
    owners.items.add(item("alice", 99, status="archived"))
    assert len({status_shard(each.item_id, 8) for each in made}) == 8
    expected = sorted((each.item_id for each in made), reverse=True)
    pages = status_pages(owners, "active", limit)
    assert [found for page in pages for found in page] == expected
    # Every page is full but the last, and no page is empty.
    assert [len(page) for page in pages] == [limit] * (30 // limit) + (
        [30 % limit] if 30 % limit else []
    )


def test_by_status_across_shards_follows_status_changes_between_pages(owners: Stores) -> None:
    made = spread(20)
    for each in made:
        owners.items.add(each)
    newest_first = sorted(made, key=lambda each: each.item_id, reverse=True)
    first = owners.items.by_status("active", limit=5, cursor=None)
    assert [each.item_id for each in first.items] == [each.item_id for each in newest_first[:5]]
    # Between pages: one seen item and two unseen ones leave the status, one comes back later.
    moved = [newest_first[2], newest_first[8], newest_first[15]]
    for each in moved:
        owners.items.update(
            owner_of(each.owner),
            each.item_id,
            expected_version=1,
            name=each.name,
            data={},
            status="archived",
            updated_at=NOW,
        )
    owners.items.update(
        owner_of(moved[1].owner),
        moved[1].item_id,
        expected_version=2,
        name=moved[1].name,
        data={},
        status="active",
        updated_at=NOW,
    )
    rest = follow(
        lambda cursor: owners.items.by_status("active", limit=5, cursor=cursor or first.cursor),
        lambda page: page.cursor,
    )
    later = [each.item_id for page in rest for each in page.items]
    # Each item once, in id order, without the ones that left; the one back is in its place.
    assert later == [each.item_id for each in newest_first[5:] if each not in (moved[0], moved[2])]
    archived = owners.items.by_status("archived", limit=50, cursor=None).items
    assert [each.item_id for each in archived] == [moved[0].item_id, moved[2].item_id]


def test_a_status_cursor_names_only_positions_in_the_status_shards(owners: Stores) -> None:
    for each in spread(12):
        owners.items.add(each)
    cursor = owners.items.by_status("active", limit=3, cursor=None).cursor
    assert cursor is not None
    positions = shard_positions(cursor, 8)
    # An old (unsharded) cursor, a cursor of another shard count, a key where a position
    # belongs, a position that is not an id: all refused.
    bad = [
        encode_cursor({**positions, "0": "ITEM#" + "0" * 28}),
        encode_cursor({"pk": "USER#bob", "sk": "ITEM#" + "0" * 28, "gsi": "0" * 28}),
        encode_cursor(dict.fromkeys(shard_names(4), "")),
        encode_cursor({**positions, "legacy": "USER#bob"}),
        "garbage",
    ]
    for refused in bad:
        with pytest.raises(InvalidCursor):
            owners.items.by_status("active", limit=3, cursor=refused)


def test_a_page_reads_each_unfinished_shard_once(table: Any) -> None:
    user(stores := Stores.dynamodb(table), "alice")
    user(stores, "bob")
    for each in spread(30):
        stores.items.add(each)
    queries: list[dict[str, Any]] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        queries.append(params)

    events = table.meta.client.meta.events
    events.register("provide-client-params.dynamodb.Query", seen, unique_id="test-queries")
    try:
        page = stores.items.by_status("active", limit=4, cursor=None)
    finally:
        events.unregister("provide-client-params.dynamodb.Query", unique_id="test-queries")
    assert len(page.items) == 4
    # The eight shards and the unsharded key of older rows, a page and one each.
    assert len(queries) == 9
    assert {query["Limit"] for query in queries} == {5}


def legacy_row(each: Item) -> dict[str, Any]:
    """An item row as versions before sharding wrote it: the status index key unsharded."""
    return {**_row(each), "userId": each.owner_id, "gsi1pk": f"ITEMSTATUS#{each.status}"}


def test_rows_of_the_unsharded_index_are_listed_and_reindexed(table: Any) -> None:
    stores = Stores.dynamodb(table)
    user(stores, "alice")
    user(stores, "bob")
    made = spread(16)
    for each in made[:6]:
        table.put_item(Item=legacy_row(each))
    for each in made[6:]:
        stores.items.add(each)
    expected = sorted((each.item_id for each in made), reverse=True)
    assert [found for page in status_pages(stores, "active", 3) for found in page] == expected

    planned = reindex(table, shards=8, apply=False)
    assert len(planned) == 6
    assert reindex(table, shards=8, apply=False) == planned
    assert reindex(table, shards=8, apply=True) == planned
    assert reindex(table, shards=8, apply=True) == []
    keys = {row["gsi1pk"] for row in table.scan()["Items"] if "gsi1pk" in row}
    assert keys == {f"ITEMSTATUS#active#{shard}" for shard in range(8)}
    assert [found for page in status_pages(stores, "active", 3) for found in page] == expected

    # Fewer shards: the rows of the shards dropped are listed again once re-indexed.
    fewer = Stores.dynamodb(table, status_shards=3)
    listed = [found for page in status_pages(fewer, "active", 5) for found in page]
    assert set(listed) < set(expected)
    assert len(reindex(table, shards=3, apply=True)) > 0
    assert [found for page in status_pages(fewer, "active", 5) for found in page] == expected


def test_a_shard_cut_short_holds_back_older_items_of_the_others() -> None:
    # DynamoDB may end a shard's page early (1 MB): its unread items can be newer than another
    # shard's, so nothing older than its last item may be given out yet.
    shards = {
        "0": [item("a", n) for n in (20, 19, 12)],
        "1": [item("b", n) for n in (18, 17, 16, 11, 10)],
    }

    def read(name: str, after: str) -> ShardRead:
        rest = [each for each in shards[name] if after == START or each.item_id < after]
        cut = 1 if name == "0" else limit + 1
        return ShardRead(rest[:cut], len(rest) > cut)

    limit = 3
    pages = follow(
        lambda cursor: merge_shards(
            {"0": START, "1": START} if cursor is None else decode_cursor(cursor, SHAPE),
            limit=limit,
            read=read,
        ),
        lambda page: page.cursor,
    )
    listed = [each.item_id for page in pages for each in page.items]
    assert listed == sorted(
        (each.item_id for rows in shards.values() for each in rows), reverse=True
    )
    assert all(0 < len(page.items) <= limit for page in pages)


SHAPE = dict.fromkeys(("0", "1"), SHARD_POSITION)


def test_the_reindex_command_is_a_dry_run_unless_applied(
    table: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = Stores.dynamodb(table)
    user(stores, "alice")
    user(stores, "bob")
    for each in spread(3):
        table.put_item(Item=legacy_row(each))
    assert reindex_command.main(["--table", table.name]) == 0
    assert capsys.readouterr().out.endswith(
        f"3 index entries to move (dry run; --apply to make them) (table {table.name}, 8 shards)\n"
    )
    assert reindex(table, shards=8, apply=False) != []
    assert reindex_command.main(["--table", table.name, "--shards", "4", "--apply"]) == 0
    assert f"3 index entries moved (table {table.name}, 4 shards)" in capsys.readouterr().out
    assert reindex(table, shards=4, apply=False) == []
