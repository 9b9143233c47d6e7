"""Brute-force and abuse limits: per-account login back-off and per-IP request limits.

Counters live in the table and are updated atomically (``ADD``, conditional writes); their TTL
only cleans up, the windows are enforced here. ``DynamoDBLimitRepository`` stores them;
``InMemoryLimitRepository`` is its twin with the same contract (``tests/test_limit_repository.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.identity import name_key
from chalicelib.keys import is_condition_failure, login_failure_key, rate_key
from chalicelib.table import PARTITION_KEY, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class TooManyAttempts(Exception):
    """Slow down: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = max(1, retry_after)


class AttemptRaced(Exception):
    """Another attempt changed the failure count since it was read."""


@dataclass(frozen=True, kw_only=True)
class Failures:
    """Recent failed password attempts on one account from one address."""

    count: int
    last_attempt_at: int
    locked_until: int = 0


class LimitRepository(Protocol):
    def failures(self, username: str, address: str) -> Failures | None: ...

    def count_attempt(
        self,
        username: str,
        address: str,
        *,
        previous: Failures | None,
        new: Failures,
        expires_at: int,
    ) -> None:
        """Replace ``previous`` (None: no row yet) with ``new``; raise ``AttemptRaced`` if the
        stored count is no longer ``previous``."""

    def clear_failures(self, username: str, address: str) -> None: ...

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        """Count one request in the window; return the window's count so far."""


class DynamoDBLimitRepository:
    """Failure rows and per-IP counters, each in partitions of their own (``keys.py``)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def failures(self, username: str, address: str) -> Failures | None:
        row = self._table.get_item(
            Key=login_failure_key(username, address), ConsistentRead=True
        ).get("Item")
        if row is None:
            return None
        return Failures(
            count=int(str(row["failures"])),
            last_attempt_at=int(str(row["lastAttemptAt"])),
            locked_until=int(str(row.get("lockedUntil", 0))),
        )

    def count_attempt(
        self,
        username: str,
        address: str,
        *,
        previous: Failures | None,
        new: Failures,
        expires_at: int,
    ) -> None:
        condition = "attribute_not_exists(#pk)"
        names = {"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE}
        values: dict[str, Any] = {}
        if previous is not None:
            condition = "failures = :previous AND lastAttemptAt = :last"
            names = {"#ttl": TTL_ATTRIBUTE}
            values = {":previous": previous.count, ":last": previous.last_attempt_at}
        try:
            self._table.update_item(
                Key=login_failure_key(username, address),
                UpdateExpression=(
                    "SET failures = :attempt, lastAttemptAt = :now, lockedUntil = :until, "
                    "#ttl = :expires"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    **values,
                    ":attempt": new.count,
                    ":now": new.last_attempt_at,
                    ":until": new.locked_until,
                    ":expires": expires_at,
                },
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise AttemptRaced(username) from exc

    def clear_failures(self, username: str, address: str) -> None:
        self._table.delete_item(Key=login_failure_key(username, address))

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        response = self._table.update_item(
            Key=rate_key(address, window_start),
            UpdateExpression="SET #ttl = :expires ADD hits :one",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":expires": expires_at, ":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(str(response["Attributes"]["hits"]))


class InMemoryLimitRepository:
    """The DynamoDB repository's twin; nothing expires (no TTL)."""

    def __init__(self) -> None:
        self._failures: dict[tuple[str, str], Failures] = {}
        self._hits: dict[tuple[str, int], int] = {}
        self._lock = threading.RLock()

    def failures(self, username: str, address: str) -> Failures | None:
        with self._lock:
            return self._failures.get((name_key(username), address))

    def count_attempt(
        self,
        username: str,
        address: str,
        *,
        previous: Failures | None,
        new: Failures,
        expires_at: int,
    ) -> None:
        with self._lock:
            stored = self._failures.get((name_key(username), address))
            same = (
                stored is None
                if previous is None
                else stored is not None
                and (stored.count, stored.last_attempt_at)
                == (previous.count, previous.last_attempt_at)
            )
            if not same:
                raise AttemptRaced(username)
            self._failures[(name_key(username), address)] = new

    def clear_failures(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((name_key(username), address), None)

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        with self._lock:
            count = self._hits.get((address, window_start), 0) + 1
            self._hits[(address, window_start)] = count
            return count


class LoginThrottle:
    """Back-off on password attempts per account and client address.

    After ``free_failures`` failed attempts from one address, each further attempt locks the
    account's password login for that address for 1 s, 2 s, 4 s ... up to ``max_backoff``; a
    success, or ``window`` without attempts, resets it. Keying by address means an attacker
    cannot lock the owner out from the owner's own network.

    Every attempt is counted before its password is checked, with a conditional write on the
    previous count, so parallel guesses cannot slip in between a failure and its lock.
    """

    def __init__(
        self,
        repository: LimitRepository,
        *,
        free_failures: int,
        max_backoff: int,
        window: int,
        clock: Clock = utc_now,
    ) -> None:
        self._repository = repository
        self._free = free_failures
        self._max_backoff = max_backoff
        self._window = window
        self._clock = clock

    def reserve(self, username: str, address: str) -> int:
        """Count an attempt; return the lock in seconds it starts if it fails (0: none).

        Raises ``TooManyAttempts`` while locked, or when a parallel attempt counted first.
        """
        now = int(self._clock().timestamp())
        previous = self._repository.failures(username, address)
        failures = 0
        if previous is not None:
            if previous.locked_until > now:
                raise TooManyAttempts(previous.locked_until - now)
            if now - previous.last_attempt_at < self._window:
                failures = previous.count
        attempt = failures + 1
        lock = 0
        if attempt > self._free:
            lock = min(1 << min(attempt - self._free - 1, 30), self._max_backoff)
        try:
            self._repository.count_attempt(
                username,
                address,
                previous=previous,
                new=Failures(count=attempt, last_attempt_at=now, locked_until=now + lock),
                expires_at=now + max(self._window, lock),
            )
        except AttemptRaced as exc:
            raise TooManyAttempts(max(1, lock)) from exc
        return lock

    def succeeded(self, username: str, address: str) -> None:
        self._repository.clear_failures(username, address)


class IpRateLimiter:
    """At most ``limit`` requests per ``window`` seconds from one address (fixed windows)."""

    def __init__(
        self, repository: LimitRepository, *, limit: int, window: int, clock: Clock = utc_now
    ) -> None:
        self._repository = repository
        self._limit = limit
        self._window = window
        self._clock = clock

    def hit(self, address: str) -> None:
        now = int(self._clock().timestamp())
        start = now - now % self._window
        hits = self._repository.hit(
            address, window_start=start, expires_at=start + 2 * self._window
        )
        if hits > self._limit:
            raise TooManyAttempts(start + self._window - now)


class UserRateLimiter:
    """At most ``limit`` of one ``action`` per ``window`` seconds by one user (fixed windows).

    The per-IP counters' rows, under ``{action}:{username}``: no address (IPv4, an IPv6 /64 or
    ``unknown``) can spell a key with a letter past ``f`` before its colon.
    """

    def __init__(
        self,
        repository: LimitRepository,
        *,
        action: str,
        limit: int,
        window: int,
        clock: Clock = utc_now,
    ) -> None:
        self._windows = IpRateLimiter(repository, limit=limit, window=window, clock=clock)
        self._action = action

    def hit(self, username: str) -> None:
        self._windows.hit(f"{self._action}:{username}")
