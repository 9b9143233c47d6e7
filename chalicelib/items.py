"""Items: small JSON documents each user owns, under the owner's partition.

Ids sort by creation time, so a reverse query lists the newest first. The sparse index ``gsi1``
holds every item under its status, sorted by id, for the administrators' cross-user listing
(keys in ``chalicelib/keys.py``), spread over ``STATUS_INDEX_SHARDS`` partitions per status so
that no one index partition takes every write (docs/SCALING.md); ``merge_shards`` reads them
back as one listing, newest first. ``DynamoDBItemRepository`` stores them;
``InMemoryItemRepository`` is its twin with the same contract (``tests/test_item_repository.py``).
"""

from __future__ import annotations

import re
import secrets
import threading
import typing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, cast

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import NotFound
from chalicelib.identity import Owner
from chalicelib.keys import (
    ITEM,
    ITEM_ID,
    ITEM_SK,
    STATUS_INDEX,
    ConcurrentChange,
    OwnerMissing,
    is_condition_failure,
    item_key,
    item_status_pk,
    put_owned,
    status_shard,
    user_pk,
)
from chalicelib.paging import collect, decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY, plain, storable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

    from chalicelib.users import UserRepository

ItemStatus = Literal["active", "pending", "archived"]
STATUSES: tuple[str, ...] = typing.get_args(ItemStatus)
# The settings' default (STATUS_INDEX_SHARDS): index partitions per status.
DEFAULT_STATUS_SHARDS = 8
# The unsharded key of rows written before sharding, read as one more shard (keys.py).
LEGACY_SHARD = "legacy"
# Where a listing stands in one shard: not read yet, done, or after an item id. Ids are unique
# (48 bits of time, 64 random bits), so an id alone marks the position.
START, DONE = "", "-"
SHARD_POSITION = re.compile(f"(?:|{DONE}|{ITEM_ID.pattern})")


class ItemNotFound(NotFound):
    """No item with this id belongs to the caller."""

    message = "Item not found"


class VersionMismatch(Exception):
    """The item changed since the version the caller based its change on."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


@dataclass(frozen=True, kw_only=True)
class Item:
    owner: str
    owner_id: str
    item_id: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "active"
    created_at: str
    updated_at: str
    version: int = 1


@dataclass(frozen=True)
class ItemPage:
    items: list[Item]
    cursor: str | None


@dataclass(frozen=True)
class ShardRead:
    """Up to a page and one of a shard's items after a position, newest first; ``more``: the
    shard may hold older ones still."""

    items: list[Item]
    more: bool


ReadShard = Callable[[str, str], ShardRead]
RunAll = Callable[[ReadShard, dict[str, str]], Iterable[ShardRead]]


def shard_names(shards: int) -> list[str]:
    return [*(str(shard) for shard in range(shards)), LEGACY_SHARD]


def shard_number(name: str) -> int | None:
    return None if name == LEGACY_SHARD else int(name)


def shard_positions(cursor: str | None, shards: int) -> dict[str, str]:
    """Each shard's position in a listing. A position is only an id, a bound on the sort key
    inside the status's own shards (the partition keys are the listing's, never the cursor's),
    so a cursor can reach no other rows. An id need not belong to its shard by ``status_shard``:
    entries written under another shard count stay where they were until re-indexed."""
    if cursor is None:
        return dict.fromkeys(shard_names(shards), START)
    return decode_cursor(cursor, dict.fromkeys(shard_names(shards), SHARD_POSITION))


def _one_by_one(read: ReadShard, positions: dict[str, str]) -> Iterator[ShardRead]:
    return (read(name, position) for name, position in positions.items())


def merge_shards(
    positions: dict[str, str], *, limit: int, read: ReadShard, run: RunAll = _one_by_one
) -> ItemPage:
    """One page of the shards merged newest first, and the cursor of the next.

    Each unfinished shard is read once, for ``limit + 1`` items at most (``run`` may read them
    in parallel). A shard cut short (``more``) may hold items older than the last it gave but
    newer than another shard's: only items at or above every such cut are given out.
    """
    live = {name: position for name, position in positions.items() if position != DONE}
    reads = dict(zip(live, run(read, live), strict=True))
    cuts = [
        shard.items[-1].item_id if shard.items else live[name]
        for name, shard in reads.items()
        if shard.more
    ]
    frontier = max(cuts, default=START)
    merged = sorted(
        (
            (item.item_id, item.owner, name, item)
            for name, shard in reads.items()
            for item in shard.items
        ),
        key=lambda row: row[:2],
        reverse=True,
    )
    taken = [row for row in merged[:limit] if row[0] >= frontier]
    following = dict(positions)
    for name, shard in reads.items():
        used = [row[0] for row in taken if row[2] == name]
        if used:
            following[name] = used[-1]
        if not shard.more and len(used) == len(shard.items):
            following[name] = DONE
    items = [row[3] for row in taken]
    if all(position == DONE for position in following.values()):
        return ItemPage(items, None)
    return ItemPage(items, encode_cursor(following))


def new_item_id(now_ms: int) -> str:
    """48 bits of milliseconds then 64 random bits, in hex: unique and sortable by creation."""
    return f"{now_ms:012x}{secrets.token_hex(8)}"


class ItemRepository(Protocol):
    def add(self, item: Item) -> None:
        """Store a new item while its owner exists: ``OwnerMissing``, or ``ConcurrentChange``
        if the write lost a race."""

    def get(self, owner: Owner, item_id: str) -> Item | None:
        """The owner's item (not one left under the name by an earlier account)."""

    def list(self, owner: Owner, *, status: str | None, limit: int, cursor: str | None) -> ItemPage:
        """The owner's items, newest first; the cursor names only a row of that owner."""

    def by_status(self, status: str, *, limit: int, cursor: str | None) -> ItemPage:
        """Every user's items with ``status``, newest first."""

    def update(
        self,
        owner: Owner,
        item_id: str,
        *,
        expected_version: int,
        name: str,
        data: dict[str, Any],
        status: str,
        updated_at: str,
    ) -> Item:
        """New contents and the next version, if the item is still at ``expected_version``:
        ``ItemNotFound`` or ``VersionMismatch`` otherwise."""

    def delete(self, owner: Owner, item_id: str, *, expected_version: int | None) -> None:
        """Delete, at ``expected_version`` if given: ``ItemNotFound`` or ``VersionMismatch``."""


class DynamoDBItemRepository:
    def __init__(self, table: Table, *, status_shards: int = DEFAULT_STATUS_SHARDS) -> None:
        self._table = table
        self._shards = status_shards

    def add(self, item: Item) -> None:
        row = _row(item, self._shards)
        put_owned(self._table, row, owner=Owner(item.owner, item.owner_id))

    def get(self, owner: Owner, item_id: str) -> Item | None:
        row = self._table.get_item(Key=item_key(owner.username, item_id), ConsistentRead=True).get(
            "Item"
        )
        return None if row is None or row.get("userId") != owner.user_id else _item(row)

    def list(self, owner: Owner, *, status: str | None, limit: int, cursor: str | None) -> ItemPage:
        pk = user_pk(owner.username)
        mine = Attr("userId").eq(owner.user_id)
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(pk) & Key(SORT_KEY).begins_with(ITEM),
            "FilterExpression": mine if status is None else mine & Attr("status").eq(status),
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if cursor is not None:
            after = decode_cursor(cursor, {"sk": ITEM_SK})["sk"]
            query["ExclusiveStartKey"] = {PARTITION_KEY: pk, SORT_KEY: after}
        rows, resume = collect(self._table, query, limit=limit, filtered=True)
        items = [_item(row) for row in rows[:limit]]
        if len(rows) > limit:
            return ItemPage(items, encode_cursor({"sk": ITEM + items[-1].item_id}))
        return ItemPage(items, None if resume is None else encode_cursor({"sk": resume[SORT_KEY]}))

    def by_status(self, status: str, *, limit: int, cursor: str | None) -> ItemPage:
        positions = shard_positions(cursor, self._shards)
        # The client, not the table resource, is safe to share between threads; the resource's
        # handlers on it still turn plain values and key conditions into DynamoDB's form.
        client = self._table.meta.client

        def read(name: str, after: str) -> ShardRead:
            condition: Any = Key(STATUS_INDEX.partition_key).eq(
                item_status_pk(status, shard_number(name))
            )
            if after != START:
                condition = condition & Key(STATUS_INDEX.sort_key).lt(after)
            page = client.query(
                TableName=self._table.name,
                IndexName=STATUS_INDEX.name,
                KeyConditionExpression=condition,
                ScanIndexForward=False,
                Limit=limit + 1,
            )
            rows = cast("list[dict[str, Any]]", page.get("Items", []))
            return ShardRead([_item(row) for row in rows], "LastEvaluatedKey" in page)

        def in_parallel(read: ReadShard, live: dict[str, str]) -> list[ShardRead]:
            with ThreadPoolExecutor(max_workers=len(live) or 1) as pool:
                return list(pool.map(read, live, live.values()))

        return merge_shards(positions, limit=limit, read=read, run=in_parallel)

    def update(
        self,
        owner: Owner,
        item_id: str,
        *,
        expected_version: int,
        name: str,
        data: dict[str, Any],
        status: str,
        updated_at: str,
    ) -> Item:
        try:
            response = self._table.update_item(
                Key=item_key(owner.username, item_id),
                UpdateExpression=(
                    "SET #name = :name, #data = :data, #status = :status, updatedAt = :now, "
                    "#gpk = :gpk ADD version :one"
                ),
                # Conditional on existence too, so a late update never resurrects a deleted item.
                ConditionExpression="userId = :owner AND version = :expected",
                ExpressionAttributeNames={
                    "#name": "name",
                    "#data": "data",
                    "#status": "status",
                    "#gpk": STATUS_INDEX.partition_key,
                },
                ExpressionAttributeValues={
                    ":name": name,
                    ":data": storable(data),
                    ":status": status,
                    ":now": updated_at,
                    ":gpk": item_status_pk(status, status_shard(item_id, self._shards)),
                    ":one": 1,
                    ":expected": expected_version,
                    ":owner": owner.user_id,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            self._explain(exc, owner, item_id)
        return _item(response["Attributes"])

    def delete(self, owner: Owner, item_id: str, *, expected_version: int | None) -> None:
        request: dict[str, Any] = {
            "Key": item_key(owner.username, item_id),
            "ConditionExpression": "userId = :owner",
            "ExpressionAttributeValues": {":owner": owner.user_id},
        }
        if expected_version is not None:
            request["ConditionExpression"] += " AND version = :expected"
            request["ExpressionAttributeValues"][":expected"] = expected_version
        try:
            self._table.delete_item(**request)
        except ClientError as exc:
            self._explain(exc, owner, item_id)

    def _explain(self, exc: ClientError, owner: Owner, item_id: str) -> NoReturn:
        if not is_condition_failure(exc):
            raise exc
        current = self.get(owner, item_id)
        if current is None:
            raise ItemNotFound(item_id) from exc
        raise VersionMismatch(current.version) from exc


class InMemoryItemRepository:
    """The DynamoDB repository's twin; owners are checked in the user repository it is given."""

    def __init__(
        self, users: UserRepository, *, status_shards: int = DEFAULT_STATUS_SHARDS
    ) -> None:
        self._users = users
        self._shards = status_shards
        self._items: dict[tuple[str, str], Item] = {}
        self._lock = threading.RLock()

    def add(self, item: Item) -> None:
        with self._lock:
            profile = self._users.get(item.owner)
            if profile is None or profile.user_id != item.owner_id:
                raise OwnerMissing(item.owner)
            if (item.owner, item.item_id) in self._items:
                raise ConcurrentChange(item.owner)
            self._items[(item.owner, item.item_id)] = _stored(item)

    def get(self, owner: Owner, item_id: str) -> Item | None:
        with self._lock:
            item = self._items.get((owner.username, item_id))
        return item if item is not None and item.owner_id == owner.user_id else None

    def list(self, owner: Owner, *, status: str | None, limit: int, cursor: str | None) -> ItemPage:
        after = None if cursor is None else decode_cursor(cursor, {"sk": ITEM_SK})["sk"]
        with self._lock:
            items = sorted(
                (item for item in self._items.values() if item.owner_id == owner.user_id),
                key=lambda item: item.item_id,
                reverse=True,
            )
        items = [
            item
            for item in items
            if (after is None or ITEM + item.item_id < after)
            and (status is None or item.status == status)
        ]
        if len(items) > limit:
            return ItemPage(items[:limit], encode_cursor({"sk": ITEM + items[limit - 1].item_id}))
        return ItemPage(items, None)

    def by_status(self, status: str, *, limit: int, cursor: str | None) -> ItemPage:
        positions = shard_positions(cursor, self._shards)
        with self._lock:
            found = [item for item in self._items.values() if item.status == status]

        def read(name: str, after: str) -> ShardRead:
            # The index's order: by id, then (for equal ids, which never occur) by owner.
            shard = sorted(
                (
                    item
                    for item in found
                    if name != LEGACY_SHARD
                    and status_shard(item.item_id, self._shards) == int(name)
                    and (after == START or item.item_id < after)
                ),
                key=lambda item: (item.item_id, item.owner),
                reverse=True,
            )
            return ShardRead(shard[: limit + 1], len(shard) > limit + 1)

        return merge_shards(positions, limit=limit, read=read)

    def update(
        self,
        owner: Owner,
        item_id: str,
        *,
        expected_version: int,
        name: str,
        data: dict[str, Any],
        status: str,
        updated_at: str,
    ) -> Item:
        with self._lock:
            current = self._current(owner, item_id, expected_version)
            changed = _stored(
                replace(
                    current,
                    name=name,
                    data=data,
                    status=status,
                    updated_at=updated_at,
                    version=current.version + 1,
                )
            )
            self._items[(owner.username, item_id)] = changed
            return changed

    def delete(self, owner: Owner, item_id: str, *, expected_version: int | None) -> None:
        with self._lock:
            current = self._current(owner, item_id, expected_version)
            del self._items[(current.owner, current.item_id)]

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's items (only those stamped ``stamped``, if given); how many went."""
        with self._lock:
            keys = [
                key
                for key, item in self._items.items()
                if key[0] == username and stamped in (None, item.owner_id)
            ]
            for key in keys:
                del self._items[key]
            return len(keys)

    def _current(self, owner: Owner, item_id: str, expected_version: int | None) -> Item:
        current = self.get(owner, item_id)
        if current is None:
            raise ItemNotFound(item_id)
        if expected_version is not None and current.version != expected_version:
            raise VersionMismatch(current.version)
        return current


class Items:
    """The owner-scoped item store; every change is conditional on the version it replaces."""

    def __init__(self, repository: ItemRepository, *, clock: Clock = utc_now) -> None:
        self._repository = repository
        self._clock = clock

    def create(self, owner: Owner, *, name: str, data: dict[str, Any], status: str) -> Item:
        now = self._clock()
        item = Item(
            owner=owner.username,
            owner_id=owner.user_id,
            item_id=new_item_id(int(now.timestamp() * 1000)),
            name=name,
            data=data,
            status=status,
            created_at=iso(now),
            updated_at=iso(now),
        )
        # The owner must still exist with its id: a token that outlives its account's deletion
        # (up to the authorizer cache TTL) can neither leave items behind in a purged partition
        # nor write into a new account that took the name.
        self._repository.add(item)
        return item

    def get(self, owner: Owner, item_id: str) -> Item:
        item = self._repository.get(owner, item_id)
        if item is None:
            raise ItemNotFound(item_id)
        return item

    def list(self, owner: Owner, *, status: str | None, limit: int, cursor: str | None) -> ItemPage:
        """Newest first; the cursor only ever names a row in the caller's own partition."""
        return self._repository.list(owner, status=status, limit=limit, cursor=cursor)

    def by_status(self, status: str, *, limit: int, cursor: str | None) -> ItemPage:
        """Every user's items with ``status``, newest first, through the sparse index."""
        return self._repository.by_status(status, limit=limit, cursor=cursor)

    def replace(
        self,
        owner: Owner,
        item_id: str,
        *,
        expected_version: int,
        name: str,
        data: dict[str, Any],
        status: str,
    ) -> Item:
        """Write new contents if the item is still at ``expected_version``."""
        return self._repository.update(
            owner,
            item_id,
            expected_version=expected_version,
            name=name,
            data=data,
            status=status,
            updated_at=iso(self._clock()),
        )

    def patch(
        self,
        owner: Owner,
        item_id: str,
        *,
        expected_version: int,
        name: str | None = None,
        data: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> Item:
        """Change only the fields given, if the item is still at ``expected_version``."""
        current = self.get(owner, item_id)
        if current.version != expected_version:
            raise VersionMismatch(current.version)
        # The replace is conditional on the version read, so a change in between is refused.
        return self.replace(
            owner,
            item_id,
            expected_version=current.version,
            name=current.name if name is None else name,
            data=current.data if data is None else data,
            status=current.status if status is None else status,
        )

    def delete(self, owner: Owner, item_id: str, *, expected_version: int | None) -> None:
        self._repository.delete(owner, item_id, expected_version=expected_version)


def _stored(item: Item) -> Item:
    """The item as DynamoDB gives it back: numbers in data come back as int or float."""
    return replace(item, data=plain(storable(item.data)))


def _row(item: Item, shards: int = DEFAULT_STATUS_SHARDS) -> dict[str, Any]:
    return {
        **item_key(item.owner, item.item_id),
        "owner": item.owner,
        "userId": item.owner_id,
        "itemId": item.item_id,
        "name": item.name,
        "data": storable(item.data),
        "status": item.status,
        "createdAt": item.created_at,
        "updatedAt": item.updated_at,
        "version": item.version,
        STATUS_INDEX.partition_key: item_status_pk(item.status, status_shard(item.item_id, shards)),
        STATUS_INDEX.sort_key: item.item_id,
    }


def _item(row: dict[str, Any]) -> Item:
    return Item(
        owner=str(row["owner"]),
        owner_id=str(row.get("userId", "")),
        item_id=str(row["itemId"]),
        name=str(row["name"]),
        data=plain(row.get("data", {})),
        status=str(row["status"]),
        created_at=str(row["createdAt"]),
        updated_at=str(row["updatedAt"]),
        version=int(str(row["version"])),
    )


# The row parser, for the table's stream (chalicelib/changes.py).
item_from_row = _item
