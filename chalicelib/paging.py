"""Opaque pagination cursors.

A cursor carries only sort-key positions (never a partition key): the caller's own partition is
supplied again on every request, so a tampered cursor cannot reach another user's rows.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class InvalidCursor(Exception):
    """The pagination cursor was not issued for this listing."""


def encode_cursor(position: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, prefix: str) -> dict[str, str]:
    """The position in ``cursor``; every value must start with ``prefix``."""
    if len(cursor) > 2048:
        raise InvalidCursor(cursor[:32])
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None
    if not isinstance(position, dict) or not position:
        raise InvalidCursor(cursor)
    if not all(isinstance(v, str) and v.startswith(prefix) for v in position.values()):
        raise InvalidCursor(cursor)
    return position


def collect(
    table: Table, query: dict[str, Any], *, limit: int, filtered: bool = False
) -> list[Any]:
    """Up to ``limit + 1`` rows of ``query`` (one more than asked tells that a next page exists)."""
    rows: list[Any] = []
    while True:
        # With a filter DynamoDB limits the rows it reads, not the ones it returns: read ahead.
        page = table.query(**query, Limit=200 if filtered else limit + 1 - len(rows))
        rows += page.get("Items", [])
        if len(rows) > limit or "LastEvaluatedKey" not in page:
            return rows
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
