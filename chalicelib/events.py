"""The security event log: structured log lines plus rows kept 90 days under the user."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.paging import decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, plain

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

logger = logging.getLogger(__name__)
RETENTION = timedelta(days=90)
_EVENT = "EVENT#"
_EVENT_SK = re.compile(r"EVENT#\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z#[0-9a-f]{8}")


@dataclass(frozen=True, kw_only=True)
class Client:
    """Who is on the other end of a request, as far as we can tell."""

    ip: str
    user_agent: str


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: str
    at: str
    ip: str
    user_agent: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Page:
    events: list[Event]
    cursor: str | None


class SecurityEvents:
    def __init__(self, table: Table, *, clock: Clock = utc_now) -> None:
        self._table = table
        self._clock = clock

    def record(self, username: str, kind: str, client: Client, **details: Any) -> None:
        now = self._clock()
        at = iso(now)
        logger.info(
            "security event",
            extra={"fields": {"event": kind, "username": username, "ip": client.ip, **details}},
        )
        self._table.put_item(
            Item={
                PARTITION_KEY: f"USER#{username}",
                # Time first so a query reads newest first; the suffix keeps same-ms events apart.
                SORT_KEY: f"{_EVENT}{at}#{secrets.token_hex(4)}",
                "kind": kind,
                "at": at,
                "ip": client.ip,
                "userAgent": client.user_agent[:200],
                "details": details,
                TTL_ATTRIBUTE: int((now + RETENTION).timestamp()),
            }
        )

    def list(self, username: str, *, limit: int, cursor: str | None = None) -> Page:
        """Newest first. The cursor is opaque and only ever names a row in this user's log."""
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(f"USER#{username}")
            & Key(SORT_KEY).begins_with(_EVENT),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = {
                PARTITION_KEY: f"USER#{username}",
                SORT_KEY: decode_cursor(cursor, {"sk": _EVENT_SK})["sk"],
            }
        page = self._table.query(**query)
        events = [
            Event(
                kind=str(item["kind"]),
                at=str(item["at"]),
                ip=str(item.get("ip", "")),
                user_agent=str(item.get("userAgent", "")),
                details=plain(item.get("details", {})),
            )
            for item in page.get("Items", [])
        ]
        last = page.get("LastEvaluatedKey")
        return Page(events, None if last is None else encode_cursor({"sk": str(last[SORT_KEY])}))
