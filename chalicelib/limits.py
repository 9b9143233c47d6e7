"""Brute-force and abuse limits: per-account login back-off and per-IP request limits.

Counters live in the table and are updated atomically (``ADD``); their TTL only cleans up, the
windows are enforced here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def _failure_key(username: str) -> dict[str, str]:
    return {**user_key(username), SORT_KEY: "LOGINFAIL"}


class LoginThrottle:
    """After ``free_failures`` wrong passwords, each further one locks the account's password
    login for 1 s, 2 s, 4 s ... up to ``max_backoff``; a success or ``window`` without failures
    resets it."""

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

    def check(self, username: str) -> bool:
        """Raise ``TooManyAttempts`` while locked; True when failures are on record."""
        item = self._table.get_item(Key=_failure_key(username), ConsistentRead=True).get("Item")
        if item is None:
            return False
        now = self._now()
        locked_until = int(str(item.get("lockedUntil", 0)))
        if locked_until > now:
            raise TooManyAttempts(locked_until - now)
        return True

    def failed(self, username: str) -> int:
        """Count a failure; return the lock it starts in seconds (0 for a free failure)."""
        now = self._now()
        expires = now + self._window
        try:
            response = self._table.update_item(
                Key=_failure_key(username),
                UpdateExpression="SET lastFailureAt = :now, #ttl = :expires ADD failures :one",
                ConditionExpression="attribute_not_exists(#pk) OR lastFailureAt > :stale",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":now": now,
                    ":expires": expires,
                    ":one": 1,
                    ":stale": now - self._window,
                },
                ReturnValues="UPDATED_NEW",
            )
            failures = int(str(response["Attributes"]["failures"]))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            # The last failure is older than the window: start counting afresh.
            self._table.put_item(
                Item={
                    **_failure_key(username),
                    "failures": 1,
                    "lastFailureAt": now,
                    TTL_ATTRIBUTE: expires,
                }
            )
            failures = 1
        if failures <= self._free:
            return 0
        backoff = min(1 << min(failures - self._free - 1, 30), self._max_backoff)
        self._table.update_item(
            Key=_failure_key(username),
            UpdateExpression="SET lockedUntil = :until",
            ExpressionAttributeValues={":until": now + backoff},
        )
        return backoff

    def succeeded(self, username: str) -> None:
        self._table.delete_item(Key=_failure_key(username))

    def _now(self) -> int:
        return int(self._clock().timestamp())


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
