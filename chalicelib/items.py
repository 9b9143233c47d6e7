"""Items: small JSON documents each user owns, under the owner's partition.

Rows: ``USER#{owner}`` / ``ITEM#{id}``. Ids sort by creation time, so a reverse query lists the
newest first. The sparse index ``gsi1`` holds every item under ``ITEMSTATUS#{status}`` sorted by
id, for the administrators' cross-user listing by status.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.paging import KEY_TEXT, collect, decode_cursor, encode_cursor
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY, plain
from chalicelib.users import put_owned

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

STATUSES = ("active", "pending", "archived")
_ITEM = "ITEM#"
_INDEX = INDEXES[0]
_ID = re.compile("[0-9a-f]{28}")
_ITEM_SK = re.compile("ITEM#[0-9a-f]{28}")
_OWNER_PK = re.compile(f"USER#{KEY_TEXT}{{1,128}}")


class ItemNotFound(Exception):
    """No item with this id belongs to the caller."""


class VersionMismatch(Exception):
    """The item changed since the version the caller based its change on."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current version is {current}")
        self.current = current


@dataclass(frozen=True, kw_only=True)
class Item:
    owner: str
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


def new_item_id(now_ms: int) -> str:
    """48 bits of milliseconds then 64 random bits, in hex: unique and sortable by creation."""
    return f"{now_ms:012x}{secrets.token_hex(8)}"


class Items:
    """The owner-scoped item store; every change is conditional on the version it replaces."""

    def __init__(self, table: Table, *, clock: Clock = utc_now) -> None:
        self._table = table
        self._clock = clock

    def create(self, owner: str, *, name: str, data: dict[str, Any], status: str) -> Item:
        now = self._clock()
        item = Item(
            owner=owner,
            item_id=new_item_id(int(now.timestamp() * 1000)),
            name=name,
            data=data,
            status=status,
            created_at=iso(now),
            updated_at=iso(now),
        )
        # The owner must still exist: a token that outlives its account's deletion (up to the
        # authorizer cache TTL) cannot leave items behind in a purged partition.
        put_owned(self._table, _row(item), owner=owner)
        return item

    def get(self, owner: str, item_id: str) -> Item:
        row = self._table.get_item(Key=_key(owner, item_id), ConsistentRead=True).get("Item")
        if row is None:
            raise ItemNotFound(item_id)
        return _item(row)

    def list(self, owner: str, *, status: str | None, limit: int, cursor: str | None) -> ItemPage:
        """Newest first; the cursor only ever names a row in the caller's own partition."""
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(f"USER#{owner}")
            & Key(SORT_KEY).begins_with(_ITEM),
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if status is not None:
            query["FilterExpression"] = Attr("status").eq(status)
        if cursor is not None:
            after = decode_cursor(cursor, {"sk": _ITEM_SK})["sk"]
            query["ExclusiveStartKey"] = {PARTITION_KEY: f"USER#{owner}", SORT_KEY: after}
        rows, resume = collect(self._table, query, limit=limit, filtered=status is not None)
        items = [_item(row) for row in rows[:limit]]
        if len(rows) > limit:
            return ItemPage(items, encode_cursor({"sk": _ITEM + items[-1].item_id}))
        return ItemPage(items, None if resume is None else encode_cursor({"sk": resume[SORT_KEY]}))

    def by_status(self, status: str, *, limit: int, cursor: str | None) -> ItemPage:
        """Every user's items with ``status``, newest first, through the sparse index."""
        query: dict[str, Any] = {
            "IndexName": _INDEX.name,
            "KeyConditionExpression": Key(_INDEX.partition_key).eq(f"ITEMSTATUS#{status}"),
            "ScanIndexForward": False,
        }
        if cursor is not None:
            position = decode_cursor(cursor, {"pk": _OWNER_PK, "sk": _ITEM_SK, "gsi": _ID})
            query["ExclusiveStartKey"] = {
                PARTITION_KEY: position["pk"],
                SORT_KEY: position["sk"],
                _INDEX.partition_key: f"ITEMSTATUS#{status}",
                _INDEX.sort_key: position["gsi"],
            }
        rows, _ = collect(self._table, query, limit=limit)
        items = [_item(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return ItemPage(items, None)
        last = rows[limit - 1]
        position = {"pk": str(last[PARTITION_KEY]), "sk": str(last[SORT_KEY])}
        return ItemPage(items, encode_cursor({**position, "gsi": str(last[_INDEX.sort_key])}))

    def replace(
        self,
        owner: str,
        item_id: str,
        *,
        expected_version: int,
        name: str,
        data: dict[str, Any],
        status: str,
    ) -> Item:
        """Write new contents if the item is still at ``expected_version``."""
        try:
            response = self._table.update_item(
                Key=_key(owner, item_id),
                UpdateExpression=(
                    "SET #name = :name, #data = :data, #status = :status, updatedAt = :now, "
                    "#gpk = :gpk ADD version :one"
                ),
                # Conditional on existence too, so a late update never resurrects a deleted item.
                ConditionExpression="attribute_exists(#pk) AND version = :expected",
                ExpressionAttributeNames={
                    "#pk": PARTITION_KEY,
                    "#name": "name",
                    "#data": "data",
                    "#status": "status",
                    "#gpk": _INDEX.partition_key,
                },
                ExpressionAttributeValues={
                    ":name": name,
                    ":data": _storable(data),
                    ":status": status,
                    ":now": iso(self._clock()),
                    ":gpk": f"ITEMSTATUS#{status}",
                    ":one": 1,
                    ":expected": expected_version,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            self._explain(exc, owner, item_id)
        return _item(response["Attributes"])

    def patch(
        self,
        owner: str,
        item_id: str,
        *,
        expected_version: int,
        name: str | None = None,
        data: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> Item:
        """Change the given fields if the item is still at ``expected_version``."""
        current = self.get(owner, item_id)
        if current.version != expected_version:
            raise VersionMismatch(current.version)
        return self.replace(
            owner,
            item_id,
            expected_version=expected_version,
            name=current.name if name is None else name,
            data=current.data if data is None else data,
            status=current.status if status is None else status,
        )

    def delete(self, owner: str, item_id: str, *, expected_version: int | None) -> None:
        request: dict[str, Any] = {
            "Key": _key(owner, item_id),
            "ConditionExpression": "attribute_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }
        if expected_version is not None:
            request["ConditionExpression"] += " AND version = :expected"
            request["ExpressionAttributeValues"] = {":expected": expected_version}
        try:
            self._table.delete_item(**request)
        except ClientError as exc:
            self._explain(exc, owner, item_id)

    def _explain(self, exc: ClientError, owner: str, item_id: str) -> NoReturn:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise exc
        current = self._table.get_item(Key=_key(owner, item_id), ConsistentRead=True).get("Item")
        if current is None:
            raise ItemNotFound(item_id) from exc
        raise VersionMismatch(int(str(current["version"]))) from exc


def _storable(data: dict[str, Any]) -> Any:
    """DynamoDB takes Decimal, not float."""
    return json.loads(json.dumps(data), parse_float=Decimal)


def _key(owner: str, item_id: str) -> dict[str, str]:
    return {PARTITION_KEY: f"USER#{owner}", SORT_KEY: _ITEM + item_id}


def _row(item: Item) -> dict[str, Any]:
    return {
        **_key(item.owner, item.item_id),
        "owner": item.owner,
        "itemId": item.item_id,
        "name": item.name,
        "data": _storable(item.data),
        "status": item.status,
        "createdAt": item.created_at,
        "updatedAt": item.updated_at,
        "version": item.version,
        _INDEX.partition_key: f"ITEMSTATUS#{item.status}",
        _INDEX.sort_key: item.item_id,
    }


def _item(row: dict[str, Any]) -> Item:
    return Item(
        owner=str(row["owner"]),
        item_id=str(row["itemId"]),
        name=str(row["name"]),
        data=plain(row.get("data", {})),
        status=str(row["status"]),
        created_at=str(row["createdAt"]),
        updated_at=str(row["updatedAt"]),
        version=int(str(row["version"])),
    )
