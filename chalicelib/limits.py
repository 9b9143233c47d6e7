"""Brute-force and abuse limits: per-account login back-off and per-IP request limits.

Counters live in the table and are updated atomically (``ADD``); their TTL only cleans up, the
windows are enforced here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, user_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class TooManyAttempts(Exception):
    """Slow down: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = max(1, retry_after)


def _failure_key(username: str, address: str) -> dict[str, str]:
    return {**user_key(username), SORT_KEY: f"LOGINFAIL#{address}"}


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
        table: Table,
        *,
        free_failures: int,
        max_backoff: int,
        window: int,
        clock: Clock = utc_now,
    ) -> None:
        self._table = table
        self._free = free_failures
        self._max_backoff = max_backoff
        self._window = window
        self._clock = clock

    def reserve(self, username: str, address: str) -> int:
        """Count an attempt; return the lock in seconds it starts if it fails (0: none).

        Raises ``TooManyAttempts`` while locked, or when a parallel attempt counted first.
        """
        key = _failure_key(username, address)
        now = int(self._clock().timestamp())
        row = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        failures = 0
        condition = "attribute_not_exists(#pk)"
        names = {"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE}
        values: dict[str, Any] = {}
        if row is not None:
            locked_until = int(str(row.get("lockedUntil", 0)))
            if locked_until > now:
                raise TooManyAttempts(locked_until - now)
            previous, last = int(str(row["failures"])), int(str(row["lastAttemptAt"]))
            condition = "failures = :previous AND lastAttemptAt = :last"
            names = {"#ttl": TTL_ATTRIBUTE}
            values = {":previous": previous, ":last": last}
            if now - last < self._window:
                failures = previous
        attempt = failures + 1
        lock = 0
        if attempt > self._free:
            lock = min(1 << min(attempt - self._free - 1, 30), self._max_backoff)
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression=(
                    "SET failures = :attempt, lastAttemptAt = :now, lockedUntil = :until, "
                    "#ttl = :expires"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    **values,
                    ":attempt": attempt,
                    ":now": now,
                    ":until": now + lock,
                    ":expires": now + max(self._window, lock),
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            raise TooManyAttempts(max(1, lock)) from exc
        return lock

    def succeeded(self, username: str, address: str) -> None:
        self._table.delete_item(Key=_failure_key(username, address))


class IpRateLimiter:
    """At most ``limit`` requests per ``window`` seconds from one address (fixed windows)."""

    def __init__(self, table: Table, *, limit: int, window: int, clock: Clock = utc_now) -> None:
        self._table = table
        self._limit = limit
        self._window = window
        self._clock = clock

    def hit(self, address: str) -> None:
        now = int(self._clock().timestamp())
        start = now - now % self._window
        response = self._table.update_item(
            Key={PARTITION_KEY: f"RATE#{address}", SORT_KEY: f"WINDOW#{start}"},
            UpdateExpression="SET #ttl = :expires ADD hits :one",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":expires": start + 2 * self._window, ":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        if int(str(response["Attributes"]["hits"])) > self._limit:
            raise TooManyAttempts(start + self._window - now)
