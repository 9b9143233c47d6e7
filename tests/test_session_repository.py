"""One contract for the session repository, run against DynamoDB (moto) and the in-memory twin."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from chalicelib.events import Entry, Event, EventWrite
from chalicelib.keys import OwnerMissing
from chalicelib.limits import RateHit, TooManyAttempts
from chalicelib.sessions import (
    InvalidRefreshToken,
    RefreshRecord,
    RefreshToken,
    Session,
    SessionRevoked,
)
from chalicelib.stores import Stores
from chalicelib.users import HashChanged, HashUpgrade, User

ALICE = User(
    username="alice", user_id="a" * 32, password_hash="h", created_at="2026-01-01T00:00:00.000Z"
)
SESSION = Session(
    username="alice",
    user_id=ALICE.user_id or "",
    session_id="s" * 22,
    user_agent="pytest",
    created_at=1000,
    last_used_at=1000,
    expires_at=5000,
    idle_expires_at=2000,
    token_version=0,
)
FIRST = RefreshToken(username="alice", secret="a" * 43)
SECOND = RefreshToken(username="alice", secret="b" * 43)


def started(stores: Stores) -> None:
    stores.users.add(ALICE)
    stores.sessions.create(SESSION, FIRST)


def test_a_session_opens_only_for_the_account_holding_the_name(stores: Stores) -> None:
    with pytest.raises(OwnerMissing):
        stores.sessions.create(SESSION, FIRST)
    stores.users.add(replace(ALICE, user_id="b" * 32))
    # The name now belongs to another account: a late login of the old one opens nothing.
    with pytest.raises(OwnerMissing):
        stores.sessions.create(SESSION, FIRST)
    assert stores.sessions.get("alice", SESSION.session_id) is None
    assert stores.sessions.refresh_record(FIRST) is None


def test_a_created_session_and_its_token_read_back(stores: Stores) -> None:
    started(stores)
    assert stores.sessions.get("alice", SESSION.session_id) == SESSION
    assert stores.sessions.get("alice", "t" * 22) is None
    assert stores.sessions.get("bob", SESSION.session_id) is None
    assert stores.sessions.refresh_record(FIRST) == RefreshRecord(
        session_id=SESSION.session_id, state="active"
    )
    assert stores.sessions.refresh_record(SECOND) is None


def test_with_profile_reads_the_profile_and_the_session(stores: Stores) -> None:
    assert stores.sessions.with_profile("alice", SESSION.session_id) == (None, None)
    started(stores)
    assert stores.sessions.with_profile("alice", SESSION.session_id) == (ALICE, SESSION)
    assert stores.sessions.with_profile("alice", "t" * 22) == (ALICE, None)


def test_rotation_consumes_the_used_token_and_refreshes_the_session(stores: Stores) -> None:
    started(stores)
    assert stores.sessions.rotate(SESSION, used=FIRST, new=SECOND, now=1500, idle_expires_at=3000)
    assert stores.sessions.refresh_record(FIRST) == RefreshRecord(
        session_id=SESSION.session_id, state="consumed", consumed_at=1500
    )
    assert stores.sessions.refresh_record(SECOND) == RefreshRecord(
        session_id=SESSION.session_id, state="active"
    )
    session = stores.sessions.get("alice", SESSION.session_id)
    assert session is not None
    assert (session.last_used_at, session.idle_expires_at) == (1500, 3000)


def test_a_consumed_token_does_not_rotate_and_leaves_no_successor(stores: Stores) -> None:
    started(stores)
    assert stores.sessions.rotate(SESSION, used=FIRST, new=SECOND, now=1500, idle_expires_at=3000)
    third = RefreshToken(username="alice", secret="c" * 43)
    assert not stores.sessions.rotate(
        SESSION, used=FIRST, new=third, now=1600, idle_expires_at=3100
    )
    assert stores.sessions.refresh_record(third) is None
    unknown = RefreshToken(username="alice", secret="d" * 43)
    assert not stores.sessions.rotate(
        SESSION, used=unknown, new=third, now=1600, idle_expires_at=3100
    )
    assert stores.sessions.refresh_record(third) is None


def test_rotating_in_an_ended_session_is_refused_and_not_undone(stores: Stores) -> None:
    started(stores)
    assert stores.sessions.delete("alice", SESSION.session_id)
    with pytest.raises(InvalidRefreshToken):
        stores.sessions.rotate(SESSION, used=FIRST, new=SECOND, now=1500, idle_expires_at=3000)
    assert stores.sessions.get("alice", SESSION.session_id) is None
    assert stores.sessions.refresh_record(SECOND) is None


def test_concurrent_rotations_of_one_token_let_exactly_one_win(stores: Stores) -> None:
    started(stores)
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def attempt(index: int) -> None:
        new = RefreshToken(username="alice", secret=f"{index}" * 43)
        barrier.wait()
        outcomes.append(
            stores.sessions.rotate(SESSION, used=FIRST, new=new, now=1500, idle_expires_at=3000)
        )

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    successors = [RefreshToken(username="alice", secret=f"{index}" * 43) for index in range(8)]
    assert sum(stores.sessions.refresh_record(token) is not None for token in successors) == 1


def test_all_lists_only_the_users_sessions_and_delete_ends_one(stores: Stores) -> None:
    started(stores)
    other = replace(SESSION, session_id="u" * 22)
    stores.sessions.create(other, SECOND)
    stores.users.add(replace(ALICE, username="bob", user_id="c" * 32))
    bob = replace(SESSION, username="bob", user_id="c" * 32)
    stores.sessions.create(bob, RefreshToken(username="bob", secret="a" * 43))
    assert sorted(s.session_id for s in stores.sessions.all("alice")) == ["s" * 22, "u" * 22]
    assert stores.sessions.delete("alice", "u" * 22)
    assert not stores.sessions.delete("alice", "u" * 22)
    assert stores.sessions.all("alice") == [SESSION]
    assert stores.sessions.all("bob") == [bob]
    assert stores.sessions.all("carol") == []


def full_window(stores: Stores) -> RateHit:
    hit = RateHit(
        repository=stores.limits,
        address="203.0.113.7",
        window_start=60,
        expires_at=180,
        limit=1,
        retry_after=5,
    )
    hit.apply()
    return hit


def test_refresh_state_reads_the_token_its_session_and_the_profile(stores: Stores) -> None:
    assert stores.sessions.refresh_state(FIRST) == (None, None, None)
    started(stores)
    record = RefreshRecord(session_id=SESSION.session_id, state="active")
    assert stores.sessions.refresh_state(FIRST) == (record, SESSION, ALICE)


@pytest.mark.parametrize("change", ["disabled", "logged out everywhere"])
def test_a_rotation_for_a_revoked_account_writes_nothing(stores: Stores, change: str) -> None:
    started(stores)
    if change == "disabled":
        stores.users.set_access("alice", role=None, disabled=True, updated_at="now")
    else:
        stores.users.bump_token_version(ALICE.owner, updated_at="now")
    with pytest.raises(SessionRevoked):
        stores.sessions.rotate(SESSION, used=FIRST, new=SECOND, now=1500, idle_expires_at=3000)
    assert stores.sessions.refresh_record(FIRST) == RefreshRecord(
        session_id=SESSION.session_id, state="active"
    )
    assert stores.sessions.refresh_record(SECOND) is None


def test_a_rotation_refused_by_the_rate_limit_writes_nothing(stores: Stores) -> None:
    started(stores)
    with pytest.raises(TooManyAttempts):
        stores.sessions.rotate(
            SESSION,
            used=FIRST,
            new=SECOND,
            now=1500,
            idle_expires_at=3000,
            along=[full_window(stores)],
        )
    assert stores.sessions.refresh_record(FIRST) == RefreshRecord(
        session_id=SESSION.session_id, state="active"
    )
    assert stores.sessions.refresh_record(SECOND) is None
    assert stores.sessions.get("alice", SESSION.session_id) == SESSION


def test_a_session_is_created_with_its_side_rows_or_not_at_all(stores: Stores) -> None:
    stores.users.add(ALICE)
    event = Event(kind="login", at="2026-01-01T00:00:00.000Z", ip="x", user_agent="", details={})
    logged = EventWrite(stores.events, Entry(ALICE.owner, event, 99))
    with pytest.raises(TooManyAttempts):
        stores.sessions.create(SESSION, FIRST, along=[full_window(stores), logged])
    assert stores.sessions.get("alice", SESSION.session_id) is None
    assert stores.events.list(ALICE.owner, limit=10, cursor=None).events == []
    upgrade = HashUpgrade(stores.users, ALICE.owner, old="h", new="h2", updated_at="now")
    stores.sessions.create(SESSION, FIRST, profile=upgrade, along=[logged])
    assert stores.sessions.get("alice", SESSION.session_id) == SESSION
    assert [e.kind for e in stores.events.list(ALICE.owner, limit=10, cursor=None).events] == [
        "login"
    ]
    profile = stores.users.get("alice")
    assert profile is not None
    assert profile.password_hash == "h2"
    # A hash changed since it was read refuses the upgrade, and the session with it.
    other = replace(SESSION, session_id="u" * 22)
    with pytest.raises(HashChanged):
        stores.sessions.create(other, SECOND, profile=upgrade)
    assert stores.sessions.get("alice", other.session_id) is None
