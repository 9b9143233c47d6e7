"""The security event log: structured log lines plus rows kept 90 days under the user.

Attempts at a name nobody holds are logged too, unstamped: a log lists only the rows stamped
with its account's id, so an account never sees what happened to an earlier holder of its name.

``DynamoDBSecurityEventRepository`` stores the rows; ``InMemorySecurityEventRepository`` is its
twin with the same contract (``tests/test_event_repository.py``).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Attr, Key

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.identity import Owner
from chalicelib.keys import (
    EVENT,
    EVENT_SK,
    ConcurrentChange,
    SideWrite,
    event_sort_key,
    transact,
    user_pk,
)
from chalicelib.metrics import LOCAL, Metrics
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


@dataclass(frozen=True)
class Entry:
    """One event for one account's log (a bare name: unstamped), kept until ``expires_at``."""

    account: Owner | str
    event: Event
    expires_at: int

    @property
    def username(self) -> str:
        return self.account if isinstance(self.account, str) else self.account.username


class SecurityEventRepository(Protocol):
    def add(self, account: Owner | str, event: Event, *, expires_at: int) -> None:
        """Append to the account's log (a bare name: unstamped); the row goes (TTL) after
        ``expires_at``."""

    def add_all(self, entries: Sequence[Entry], *, along: Sequence[SideWrite] = ()) -> None:
        """Append every entry, and write the rows ``along``, in one round trip."""

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> Page:
        """Newest first, this account's rows only; the cursor is opaque and only ever names a
        row in this user's partition."""


class DynamoDBSecurityEventRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, account: Owner | str, event: Event, *, expires_at: int) -> None:
        self._table.put_item(Item=event_row(Entry(account, event, expires_at)))

    def add_all(self, entries: Sequence[Entry], *, along: Sequence[SideWrite] = ()) -> None:
        if along:
            puts = [{"Put": {"Item": event_row(entry)}} for entry in entries]
            transact(self._table, puts, along)
        elif len(entries) == 1:
            self.add(entries[0].account, entries[0].event, expires_at=entries[0].expires_at)
        elif entries:
            # The batch writer resends what DynamoDB leaves unprocessed.
            with self._table.batch_writer() as batch:
                for entry in entries:
                    batch.put_item(Item=event_row(entry))

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> Page:
        username = owner.username
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username))
            & Key(SORT_KEY).begins_with(EVENT),
            "FilterExpression": Attr("userId").eq(owner.user_id),
            "ScanIndexForward": False,
        }
        if cursor is not None:
            query["ExclusiveStartKey"] = {
                PARTITION_KEY: user_pk(username),
                SORT_KEY: decode_cursor(cursor, {"sk": EVENT_SK})["sk"],
            }
        rows, resume = collect(self._table, query, limit=limit, filtered=True)
        events = [_event(row) for row in rows[:limit]]
        if len(rows) > limit:
            return Page(events, encode_cursor({"sk": str(rows[limit - 1][SORT_KEY])}))
        return Page(events, None if resume is None else encode_cursor({"sk": resume[SORT_KEY]}))


def event_row(entry: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {
        PARTITION_KEY: user_pk(entry.username),
        SORT_KEY: event_sort_key(entry.event.at, secrets.token_hex(4)),
        "kind": entry.event.kind,
        "at": entry.event.at,
        "ip": entry.event.ip,
        "userAgent": entry.event.user_agent,
        "details": storable(entry.event.details),
        TTL_ATTRIBUTE: entry.expires_at,
    }
    if isinstance(entry.account, Owner):
        row["userId"] = entry.account.user_id
    return row


@dataclass(frozen=True)
class EventWrite:
    """An event written along with another repository's write (a login's session, a signup)."""

    repository: SecurityEventRepository
    entry: Entry

    def transact_item(self) -> dict[str, Any]:
        return {"Put": {"Item": event_row(self.entry)}}

    def refusal(self) -> Exception:
        return ConcurrentChange("a put without a condition was refused")

    def apply(self) -> None:
        entry = self.entry
        self.repository.add(entry.account, entry.event, expires_at=entry.expires_at)


class InMemorySecurityEventRepository:
    """The DynamoDB repository's twin: one log per user, ordered by the same sort keys."""

    def __init__(self) -> None:
        # Per name: sort key -> (the account id stamped, or None; the event).
        self._logs: dict[str, dict[str, tuple[str | None, Event]]] = {}
        self._lock = threading.RLock()

    def add(self, account: Owner | str, event: Event, *, expires_at: int) -> None:
        stored = Event(
            kind=event.kind,
            at=event.at,
            ip=event.ip,
            user_agent=event.user_agent,
            details=plain(storable(event.details)),
        )
        username, user_id = (
            (account, None) if isinstance(account, str) else (account.username, account.user_id)
        )
        sort_key = event_sort_key(event.at, secrets.token_hex(4))
        with self._lock:
            self._logs.setdefault(username, {})[sort_key] = (user_id, stored)

    def add_all(self, entries: Sequence[Entry], *, along: Sequence[SideWrite] = ()) -> None:
        with self._lock:
            for side in along:
                side.apply()
            for entry in entries:
                self.add(entry.account, entry.event, expires_at=entry.expires_at)

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> Page:
        with self._lock:
            logged = self._logs.get(owner.username, {}).items()
            rows = sorted(
                ((key, event) for key, (user_id, event) in logged if user_id == owner.user_id),
                reverse=True,
            )
        if cursor is not None:
            after = decode_cursor(cursor, {"sk": EVENT_SK})["sk"]
            rows = [(sort_key, event) for sort_key, event in rows if sort_key < after]
        events = [event for _, event in rows[:limit]]
        if len(rows) > limit:
            return Page(events, encode_cursor({"sk": rows[limit - 1][0]}))
        return Page(events, None)

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's log (only the rows stamped ``stamped``, if given); how many went."""
        with self._lock:
            log = self._logs.get(username, {})
            keys = [key for key, (user_id, _) in log.items() if stamped in (None, user_id)]
            for key in keys:
                del log[key]
            return len(keys)


class SecurityEvents:
    def __init__(
        self,
        repository: SecurityEventRepository,
        *,
        clock: Clock = utc_now,
        metrics: Metrics = LOCAL,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._metrics = metrics

    def record(self, account: Owner | str, kind: str, client: Client, **details: Any) -> None:
        """Log what happened to an account, or (a bare name) to a name nobody holds."""
        self.record_all([self.entry(account, kind, client, **details)])

    def entry(self, account: Owner | str, kind: str, client: Client, **details: Any) -> Entry:
        """An event to record later: with ``record_all``, or along with another write
        (``along``, then ``written`` once that write is done)."""
        now = self._clock()
        event = Event(
            kind=kind,
            at=iso(now),
            ip=client.ip,
            user_agent=client.user_agent[:_USER_AGENT_CHARS],
            details=details,
        )
        return Entry(account, event, int((now + RETENTION).timestamp()))

    def record_all(self, entries: Sequence[Entry], *, along: Sequence[SideWrite] = ()) -> None:
        """Store the entries (and the rows ``along``) in one round trip, and log them."""
        self._repository.add_all(entries, along=along)
        self.written(*entries)

    def along(self, *entries: Entry) -> list[SideWrite]:
        """The entries as rows another repository writes with its own."""
        return [EventWrite(self._repository, entry) for entry in entries]

    def written(self, *entries: Entry) -> None:
        """Log entries that were stored along with another write, and count them (the business
        metrics, ``chalicelib/metrics.py``)."""
        for entry in entries:
            fields = {"event": entry.event.kind, "username": entry.username, "ip": entry.event.ip}
            logger.info("security event", extra={"fields": {**fields, **entry.event.details}})
        self._metrics.count_events(entry.event.kind for entry in entries)

    def list(self, owner: Owner, *, limit: int, cursor: str | None = None) -> Page:
        """Newest first. The cursor is opaque and only ever names a row in this user's log."""
        return self._repository.list(owner, limit=limit, cursor=cursor)


def _event(row: dict[str, Any]) -> Event:
    return Event(
        kind=str(row["kind"]),
        at=str(row["at"]),
        ip=str(row.get("ip", "")),
        user_agent=str(row.get("userAgent", "")),
        details=plain(row.get("details", {})),
    )


# The row parser, for the table's stream (chalicelib/changes.py).
event_from_row = _event
