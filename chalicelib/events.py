"""The security event log: structured log lines plus rows kept 90 days under the user.

``DynamoDBSecurityEventRepository`` stores the rows; ``InMemorySecurityEventRepository`` is its
twin with the same contract (``tests/test_event_repository.py``).
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Key

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.keys import EVENT, EVENT_SK, event_sort_key, user_pk
from chalicelib.paging import collect, decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, plain, storable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

logger = logging.getLogger(__name__)
RETENTION = timedelta(days=90)
_USER_AGENT_CHARS = 200


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


class SecurityEventRepository(Protocol):
    def add(self, username: str, event: Event, *, expires_at: int) -> None:
        """Append to the user's log; the row goes (TTL) after ``expires_at``."""

    def list(self, username: str, *, limit: int, cursor: str | None) -> Page:
        """Newest first; the cursor is opaque and only ever names a row in this user's log."""


class DynamoDBSecurityEventRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, username: str, event: Event, *, expires_at: int) -> None:
        self._table.put_item(
            Item={
                PARTITION_KEY: user_pk(username),
                SORT_KEY: event_sort_key(event.at, secrets.token_hex(4)),
                "kind": event.kind,
                "at": event.at,
                "ip": event.ip,
                "userAgent": event.user_agent,
                "details": storable(event.details),
                TTL_ATTRIBUTE: expires_at,
            }
        )

    def list(self, username: str, *, limit: int, cursor: str | None) -> Page:
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username))
            & Key(SORT_KEY).begins_with(EVENT),
            "ScanIndexForward": False,
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = {
                PARTITION_KEY: user_pk(username),
                SORT_KEY: decode_cursor(cursor, {"sk": EVENT_SK})["sk"],
            }
        rows, resume = collect(self._table, query, limit=limit)
        events = [_event(row) for row in rows[:limit]]
        if len(rows) > limit:
            return Page(events, encode_cursor({"sk": str(rows[limit - 1][SORT_KEY])}))
        return Page(events, None if resume is None else encode_cursor({"sk": resume[SORT_KEY]}))


class InMemorySecurityEventRepository:
    """The DynamoDB repository's twin: one log per user, ordered by the same sort keys."""

    def __init__(self) -> None:
        self._logs: dict[str, dict[str, Event]] = {}
        self._lock = threading.RLock()

    def add(self, username: str, event: Event, *, expires_at: int) -> None:
        stored = Event(
            kind=event.kind,
            at=event.at,
            ip=event.ip,
            user_agent=event.user_agent,
            details=plain(storable(event.details)),
        )
        with self._lock:
            self._logs.setdefault(username, {})[event_sort_key(event.at, secrets.token_hex(4))] = (
                stored
            )

    def list(self, username: str, *, limit: int, cursor: str | None) -> Page:
        with self._lock:
            rows = sorted(self._logs.get(username, {}).items(), reverse=True)
        if cursor is not None:
            after = decode_cursor(cursor, {"sk": EVENT_SK})["sk"]
            rows = [(sort_key, event) for sort_key, event in rows if sort_key < after]
        events = [event for _, event in rows[:limit]]
        if len(rows) > limit:
            return Page(events, encode_cursor({"sk": rows[limit - 1][0]}))
        return Page(events, None)

    def delete_owned(self, username: str) -> int:
        """Forget the user's log; how many rows went."""
        with self._lock:
            return len(self._logs.pop(username, {}))


class SecurityEvents:
    def __init__(self, repository: SecurityEventRepository, *, clock: Clock = utc_now) -> None:
        self._repository = repository
        self._clock = clock

    def record(self, username: str, kind: str, client: Client, **details: Any) -> None:
        now = self._clock()
        logger.info(
            "security event",
            extra={"fields": {"event": kind, "username": username, "ip": client.ip, **details}},
        )
        event = Event(
            kind=kind,
            at=iso(now),
            ip=client.ip,
            user_agent=client.user_agent[:_USER_AGENT_CHARS],
            details=details,
        )
        self._repository.add(username, event, expires_at=int((now + RETENTION).timestamp()))

    def list(self, username: str, *, limit: int, cursor: str | None = None) -> Page:
        """Newest first. The cursor is opaque and only ever names a row in this user's log."""
        return self._repository.list(username, limit=limit, cursor=cursor)


def _event(row: dict[str, Any]) -> Event:
    return Event(
        kind=str(row["kind"]),
        at=str(row["at"]),
        ip=str(row.get("ip", "")),
        user_agent=str(row.get("userAgent", "")),
        details=plain(row.get("details", {})),
    )
