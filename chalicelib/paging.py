"""Opaque pagination cursors.

A cursor carries only sort-key positions (never a partition key): the caller's own partition is
supplied again on every request, so a tampered cursor cannot reach another user's rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from chalicelib.errors import Invalid

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


# Reads one request may make while filling a page, so a sparse filter cannot run past the
# Lambda's timeout; the page then ends early with a cursor.
MAX_READS = 5
# Safe text for key parts: no lone surrogates (DynamoDB refuses them), bounded length.
KEY_TEXT = "[^\ud800-\udfff]"


class InvalidCursor(Invalid):
    """The pagination cursor was not issued for this listing."""

    message = "Invalid pagination cursor"


def encode_cursor(position: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: dict[str, re.Pattern[str]]) -> dict[str, str]:
    """The position in ``cursor``: exactly the keys of ``shape``, each value matching its pattern
    (which also keeps oversized or malformed keys away from DynamoDB)."""
    if len(cursor) > 2048:
        raise InvalidCursor(cursor[:32])
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor(cursor) from None
    if not isinstance(position, dict) or set(position) != set(shape):
        raise InvalidCursor(cursor)
    for name, pattern in shape.items():
        value = position[name]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidCursor(cursor)
    return position


def collect(
    table: Table, query: dict[str, Any], *, limit: int, filtered: bool = False
) -> tuple[list[Any], dict[str, Any] | None]:
    """Up to ``limit + 1`` rows of ``query`` (one more than asked tells that a next page exists),
    and where to resume if the read budget ran out first (a filter that matches little)."""
    rows: list[Any] = []
    for _ in range(MAX_READS):
        # With a filter DynamoDB limits the rows it reads, not the ones it returns: read ahead.
        page = table.query(**query, Limit=200 if filtered else limit + 1 - len(rows))
        rows += page.get("Items", [])
        if len(rows) > limit or "LastEvaluatedKey" not in page:
            return rows, None
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return rows, query["ExclusiveStartKey"]
