"""One contract for the security event log, run against DynamoDB (moto) and the in-memory twin;
then the service over the twin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.events import Client, Event, InMemorySecurityEventRepository, SecurityEvents
from chalicelib.identity import Owner
from chalicelib.paging import InvalidCursor, encode_cursor
from chalicelib.stores import Stores
from tests.conftest import FakeClock, follow

ALICE = Owner("alice", "a" * 32)
BOB = Owner("bob", "b" * 32)


def event(n: int, **details: object) -> Event:
    return Event(
        kind=f"kind-{n}",
        at=f"2026-01-01T00:00:{n:02d}.000Z",
        ip="203.0.113.7",
        user_agent="pytest",
        details=dict(details),
    )


def test_events_read_back_newest_first_in_pages_without_gaps(stores: Stores) -> None:
    for n in range(1, 6):
        stores.events.add(ALICE, event(n, seconds=n, target="bob"), expires_at=2_000_000_000)
    stores.events.add(BOB, event(9), expires_at=2_000_000_000)
    listed = follow(
        lambda cursor: stores.events.list(ALICE, limit=2, cursor=cursor), lambda page: page.cursor
    )
    pages = [page.events for page in listed]
    assert pages == [
        [event(5, seconds=5, target="bob"), event(4, seconds=4, target="bob")],
        [event(3, seconds=3, target="bob"), event(2, seconds=2, target="bob")],
        [event(1, seconds=1, target="bob")],
    ]
    full = stores.events.list(ALICE, limit=5, cursor=None)
    assert (len(full.events), full.cursor) == (5, None)
    assert stores.events.list(Owner("carol", "c" * 32), limit=5, cursor=None).events == []


def test_events_of_one_millisecond_are_all_kept(stores: Stores) -> None:
    for _ in range(3):
        stores.events.add(ALICE, event(1), expires_at=2_000_000_000)
    assert stores.events.list(ALICE, limit=10, cursor=None).events == [event(1)] * 3


def test_a_cursor_names_only_a_row_of_the_callers_log(stores: Stores) -> None:
    for n in range(1, 3):
        stores.events.add(ALICE, event(n), expires_at=2_000_000_000)
    cursor = stores.events.list(ALICE, limit=1, cursor=None).cursor
    assert cursor is not None
    assert stores.events.list(BOB, limit=5, cursor=cursor).events == []
    for bad in ("garbage", encode_cursor({"sk": "PROFILE"})):
        with pytest.raises(InvalidCursor):
            stores.events.list(ALICE, limit=1, cursor=bad)


def test_the_service_records_who_when_and_details() -> None:
    clock = FakeClock(datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC))
    events = SecurityEvents(InMemorySecurityEventRepository(), clock=clock)
    events.record(ALICE, "login", Client(ip="198.51.100.1", user_agent="x" * 300), sessionId="s")
    assert events.list(ALICE, limit=5).events == [
        Event(
            kind="login",
            at="2026-03-04T05:06:07.890Z",
            ip="198.51.100.1",
            user_agent="x" * 200,
            details={"sessionId": "s"},
        )
    ]


def test_a_log_shows_only_its_accounts_rows(stores: Stores) -> None:
    stores.events.add("alice", event(1), expires_at=2_000_000_000)
    stores.events.add(Owner("alice", "e" * 32), event(2), expires_at=2_000_000_000)
    stores.events.add(ALICE, event(3), expires_at=2_000_000_000)
    # Attempts at the name before the account existed, and an earlier account's events.
    assert stores.events.list(ALICE, limit=5, cursor=None).events == [event(3)]
