"""One contract for the limit counters, run against DynamoDB (moto) and the in-memory twin; then
the per-IP limiter over the twin."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from chalicelib.limits import (
    UNKNOWN_DEVICES,
    Attempt,
    AttemptRaced,
    AttemptTakenBack,
    Failures,
    FailuresCleared,
    FailuresRead,
    InMemoryLimitRepository,
    IpRateLimiter,
    RateHit,
    TooManyAttempts,
)
from chalicelib.stores import Stores
from tests.conftest import FakeClock

ADDRESS = "203.0.113.7"


def test_failures_are_counted_per_user_and_address(stores: Stores) -> None:
    assert stores.limits.failures("alice", ADDRESS) is None
    first = Failures(count=1, last_attempt_at=100, locked_until=100)
    stores.limits.count_attempts(
        "alice", [Attempt(scope=ADDRESS, previous=None, new=first, expires_at=3700)]
    )
    assert stores.limits.failures("alice", ADDRESS) == first
    assert stores.limits.failures("alice", "198.51.100.1") is None
    assert stores.limits.failures("bob", ADDRESS) is None
    second = Failures(count=2, last_attempt_at=105, locked_until=106)
    stores.limits.count_attempts(
        "alice", [Attempt(scope=ADDRESS, previous=first, new=second, expires_at=3705)]
    )
    assert stores.limits.failures("alice", ADDRESS) == second
    stores.limits.clear_failures("alice", ADDRESS)
    assert stores.limits.failures("alice", ADDRESS) is None


def test_a_count_based_on_a_stale_read_is_refused(stores: Stores) -> None:
    first = Failures(count=1, last_attempt_at=100, locked_until=100)
    stores.limits.count_attempts(
        "alice", [Attempt(scope=ADDRESS, previous=None, new=first, expires_at=3700)]
    )
    with pytest.raises(AttemptRaced):
        stores.limits.count_attempts(
            "alice", [Attempt(scope=ADDRESS, previous=None, new=first, expires_at=3700)]
        )
    stale = Failures(count=1, last_attempt_at=99)
    with pytest.raises(AttemptRaced):
        stores.limits.count_attempts(
            "alice", [Attempt(scope=ADDRESS, previous=stale, new=first, expires_at=3700)]
        )
    assert stores.limits.failures("alice", ADDRESS) == first


def test_parallel_counts_from_one_read_let_exactly_one_through(stores: Stores) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            stores.limits.count_attempts(
                "alice",
                [
                    Attempt(
                        scope=ADDRESS,
                        previous=None,
                        new=Failures(count=1, last_attempt_at=index),
                        expires_at=3700,
                    )
                ],
            )
            outcomes.append("counted")
        except AttemptRaced:
            outcomes.append("raced")

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["counted"] + ["raced"] * 7


def test_hits_are_counted_per_address_and_window(stores: Stores) -> None:
    assert [stores.limits.hit(ADDRESS, window_start=60, expires_at=180) for _ in range(3)] == [
        1,
        2,
        3,
    ]
    assert stores.limits.hit(ADDRESS, window_start=120, expires_at=240) == 1
    assert stores.limits.hit("198.51.100.1", window_start=60, expires_at=180) == 1


def test_the_ip_limiter_allows_the_limit_per_fixed_window() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 0, 0, 50, tzinfo=UTC))
    limiter = IpRateLimiter(InMemoryLimitRepository(), limit=2, window=60, clock=clock)
    limiter.hit(ADDRESS)
    limiter.hit(ADDRESS)
    with pytest.raises(TooManyAttempts) as refused:
        limiter.hit(ADDRESS)
    assert refused.value.retry_after == 10
    limiter.hit("198.51.100.1")
    clock.advance(seconds=10)  # the next window
    limiter.hit(ADDRESS)


def rate(stores: Stores, *, limit: int = 2) -> RateHit:
    return RateHit(
        repository=stores.limits,
        address=ADDRESS,
        window_start=60,
        expires_at=180,
        limit=limit,
        retry_after=7,
    )


def test_a_rate_hit_counts_until_the_window_is_full_and_then_refuses(stores: Stores) -> None:
    hit = rate(stores)
    hit.apply()
    hit.apply()
    with pytest.raises(TooManyAttempts) as refused:
        hit.apply()
    assert refused.value.retry_after == 7
    # A refused request is not counted.
    assert stores.limits.hit(ADDRESS, window_start=60, expires_at=180) == 3


def test_attempts_on_both_rows_and_the_rate_hit_are_counted_together_or_not_at_all(
    stores: Stores,
) -> None:
    here = Failures(count=1, last_attempt_at=100)
    anywhere = Failures(count=4, last_attempt_at=100)
    attempts = [
        Attempt(scope=ADDRESS, previous=None, new=here, expires_at=3700),
        Attempt(scope=UNKNOWN_DEVICES, previous=None, new=anywhere, expires_at=3700),
    ]
    full = rate(stores, limit=1)
    full.apply()
    with pytest.raises(TooManyAttempts):
        stores.limits.count_attempts("alice", attempts, along=[full])
    assert stores.limits.failures("alice", ADDRESS) is None
    assert stores.limits.failures("alice", UNKNOWN_DEVICES) is None
    stores.limits.count_attempts("alice", attempts, along=[rate(stores, limit=2)])
    assert stores.limits.failures("ALICE", UNKNOWN_DEVICES) == anywhere
    # One stale row refuses the whole count, the hit included.
    with pytest.raises(AttemptRaced):
        stores.limits.count_attempts("alice", attempts, along=[rate(stores, limit=3)])
    assert stores.limits.hit(ADDRESS, window_start=60, expires_at=180) == 3
    assert stores.limits.failures("alice", ADDRESS) == here


def test_a_success_takes_its_attempt_back_and_clears_its_address(stores: Stores) -> None:
    anywhere = Failures(count=4, last_attempt_at=100, locked_until=100)
    stores.limits.count_attempts(
        "alice",
        [
            Attempt(scope=UNKNOWN_DEVICES, previous=None, new=anywhere, expires_at=3700),
            Attempt(scope=ADDRESS, previous=None, new=anywhere, expires_at=3700),
        ],
    )
    for side in (
        AttemptTakenBack(stores.limits, "Alice"),
        FailuresCleared(stores.limits, "alice", ADDRESS),
    ):
        side.apply()
    assert stores.limits.failures("alice", UNKNOWN_DEVICES) == replace(anywhere, count=3)
    assert stores.limits.failures("alice", ADDRESS) is None


def test_failure_rows_are_read_along_by_key(stores: Stores) -> None:
    first = Failures(count=2, last_attempt_at=100, locked_until=101)
    stores.limits.count_attempts(
        "alice", [Attempt(scope=ADDRESS, previous=None, new=first, expires_at=3700)]
    )
    read = FailuresRead(stores.limits, "ALICE", ADDRESS)
    assert read.read() == first
    assert read.key() == {"pk": "LOGIN#alice", "sk": f"FAIL#{ADDRESS}"}
    assert read.parse(None) is None
