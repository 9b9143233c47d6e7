"""Brute-force and abuse limits: login back-off per account and address, an account-wide budget
for unknown devices, known devices, and per-IP request limits.

Counters live in the table and are updated atomically (``ADD``, conditional writes); their TTL
only cleans up, the windows are enforced here. ``DynamoDBLimitRepository`` stores them;
``InMemoryLimitRepository`` is its twin with the same contract (``tests/test_limit_repository.py``).

A login reads its failure rows with the profile (``FailuresRead``, one ``BatchGetItem``), counts
its attempt and its per-IP hit in one transaction (``count_attempts`` with a ``RateHit`` along),
and its success resets the rows in the session's transaction (``FailuresCleared``,
``AttemptTakenBack``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.identity import name_key
from chalicelib.keys import (
    ConcurrentChange,
    Key,
    SideWrite,
    apply_alone,
    is_condition_failure,
    login_failure_key,
    rate_key,
    transact,
)
from chalicelib.table import PARTITION_KEY, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

    from chalicelib.tokens import CachedKeys

# The scope of the account-wide row: failures from every device the account does not know. No
# client address (IPv4, an IPv6 /64 or ``unknown``) is spelt with a ``*``.
UNKNOWN_DEVICES = "*"


class TooManyAttempts(Exception):
    """Slow down: try again after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = max(1, retry_after)


class AttemptRaced(Exception):
    """Another attempt changed the failure count since it was read."""


@dataclass(frozen=True, kw_only=True)
class Failures:
    """Recent failed password attempts on one account from one address (or unknown devices)."""

    count: int
    last_attempt_at: int
    locked_until: int = 0


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One failure row's next state, written only if it still holds ``previous`` (None: no row)."""

    scope: str
    previous: Failures | None
    new: Failures
    expires_at: int


class LimitRepository(Protocol):
    def failures(self, username: str, address: str) -> Failures | None: ...

    def count_attempts(
        self, username: str, attempts: Sequence[Attempt], *, along: Sequence[SideWrite] = ()
    ) -> None:
        """Replace each attempt's ``previous`` (None: no row yet) with its ``new`` and write the
        rows ``along``, all or nothing: ``AttemptRaced`` if a stored count is no longer
        ``previous``."""

    def clear_failures(self, username: str, address: str) -> None: ...

    def take_back(self, username: str, scope: str) -> None:
        """Uncount one attempt of the row (a success's own, counted before its check)."""

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        """Count one request in the window; return the window's count so far."""

    def take(self, hit: RateHit) -> None:
        """Count one request in its window unless the window is full (``TooManyAttempts``)."""


def _failures(row: dict[str, Any]) -> Failures:
    return Failures(
        # A row left with only a taken-back count reads as no recent failures.
        count=max(0, int(str(row.get("failures", 0)))),
        last_attempt_at=int(str(row.get("lastAttemptAt", 0))),
        locked_until=int(str(row.get("lockedUntil", 0))),
    )


class DynamoDBLimitRepository:
    """Failure rows and per-IP counters, each in partitions of their own (``keys.py``)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def failures(self, username: str, address: str) -> Failures | None:
        row = self._table.get_item(
            Key=login_failure_key(username, address), ConsistentRead=True
        ).get("Item")
        return None if row is None else _failures(row)

    def count_attempts(
        self, username: str, attempts: Sequence[Attempt], *, along: Sequence[SideWrite] = ()
    ) -> None:
        updates = [_attempt_update(username, attempt) for attempt in attempts]
        if len(updates) == 1 and not along:
            try:
                self._table.update_item(**updates[0])
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                raise AttemptRaced(username) from exc
            return
        if transact(self._table, [{"Update": update} for update in updates], along) is not None:
            raise AttemptRaced(username)

    def clear_failures(self, username: str, address: str) -> None:
        self._table.delete_item(Key=login_failure_key(username, address))

    def take_back(self, username: str, scope: str) -> None:
        self._table.update_item(**_take_back(username, scope))

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        response = self._table.update_item(
            Key=rate_key(address, window_start),
            UpdateExpression="SET #ttl = :expires ADD hits :one",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues={":expires": expires_at, ":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(str(response["Attributes"]["hits"]))

    def take(self, hit: RateHit) -> None:
        try:
            self._table.update_item(**_rate_update(hit))
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            raise hit.refusal() from exc


def _attempt_update(username: str, attempt: Attempt) -> dict[str, Any]:
    previous, new = attempt.previous, attempt.new
    condition = "attribute_not_exists(#pk)"
    names = {"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE}
    values: dict[str, Any] = {}
    if previous is not None:
        # Counted before the password is checked: of parallel attempts read at one count,
        # exactly one is counted (and checked); the others are refused.
        condition = "failures = :previous AND lastAttemptAt = :last"
        names = {"#ttl": TTL_ATTRIBUTE}
        values = {":previous": previous.count, ":last": previous.last_attempt_at}
    return {
        "Key": login_failure_key(username, attempt.scope),
        "UpdateExpression": (
            "SET failures = :attempt, lastAttemptAt = :now, lockedUntil = :until, #ttl = :expires"
        ),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {
            **values,
            ":attempt": new.count,
            ":now": new.last_attempt_at,
            ":until": new.locked_until,
            ":expires": attempt.expires_at,
        },
    }


def _take_back(username: str, scope: str) -> dict[str, Any]:
    # No condition, so it can never cancel the login it rides with; the row was written by this
    # very attempt moments ago, and a row it finds gone reads as no failures (``_failures``).
    return {
        "Key": login_failure_key(username, scope),
        "UpdateExpression": "ADD failures :minus_one",
        "ExpressionAttributeValues": {":minus_one": -1},
    }


def _rate_update(hit: RateHit) -> dict[str, Any]:
    return {
        "Key": rate_key(hit.address, hit.window_start),
        "UpdateExpression": "SET #ttl = :expires ADD hits :one",
        # A full window refuses the request, and does not count it.
        "ConditionExpression": "attribute_not_exists(hits) OR hits < :limit",
        "ExpressionAttributeNames": {"#ttl": TTL_ATTRIBUTE},
        "ExpressionAttributeValues": {":expires": hit.expires_at, ":one": 1, ":limit": hit.limit},
    }


class InMemoryLimitRepository:
    """The DynamoDB repository's twin; nothing expires (no TTL)."""

    def __init__(self) -> None:
        self._failures: dict[tuple[str, str], Failures] = {}
        self._hits: dict[tuple[str, int], int] = {}
        self._lock = threading.RLock()

    def failures(self, username: str, address: str) -> Failures | None:
        with self._lock:
            return self._failures.get((name_key(username), address))

    def count_attempts(
        self, username: str, attempts: Sequence[Attempt], *, along: Sequence[SideWrite] = ()
    ) -> None:
        with self._lock:
            for attempt in attempts:
                stored = self._failures.get((name_key(username), attempt.scope))
                previous = attempt.previous
                same = (
                    stored is None
                    if previous is None
                    else stored is not None
                    and (stored.count, stored.last_attempt_at)
                    == (previous.count, previous.last_attempt_at)
                )
                if not same:
                    raise AttemptRaced(username)
            for side in along:
                side.apply()
            for attempt in attempts:
                self._failures[(name_key(username), attempt.scope)] = attempt.new

    def clear_failures(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((name_key(username), address), None)

    def take_back(self, username: str, scope: str) -> None:
        with self._lock:
            key = (name_key(username), scope)
            stored = self._failures.get(key, Failures(count=0, last_attempt_at=0))
            self._failures[key] = Failures(
                count=max(0, stored.count - 1),
                last_attempt_at=stored.last_attempt_at,
                locked_until=stored.locked_until,
            )

    def hit(self, address: str, *, window_start: int, expires_at: int) -> int:
        with self._lock:
            count = self._hits.get((address, window_start), 0) + 1
            self._hits[(address, window_start)] = count
            return count

    def take(self, hit: RateHit) -> None:
        with self._lock:
            count = self._hits.get((hit.address, hit.window_start), 0)
            if count >= hit.limit:
                raise hit.refusal()
            self._hits[(hit.address, hit.window_start)] = count + 1


@dataclass(frozen=True, kw_only=True)
class RateHit:
    """One request counted against its address's window: inside another write (a ``SideWrite``,
    so the count costs no round trip of its own) or alone (``apply``)."""

    repository: LimitRepository
    address: str
    window_start: int
    expires_at: int
    limit: int
    retry_after: int

    def transact_item(self) -> dict[str, Any]:
        return {"Update": _rate_update(self)}

    def refusal(self) -> Exception:
        return TooManyAttempts(self.retry_after)

    def apply(self) -> None:
        self.repository.take(self)


@dataclass(frozen=True)
class FailuresRead:
    """A failure row to read along with another repository's read (``UserRepository.find``)."""

    repository: LimitRepository
    username: str
    scope: str

    def key(self) -> Key:
        return login_failure_key(self.username, self.scope)

    def parse(self, row: dict[str, Any] | None) -> Failures | None:
        return None if row is None else _failures(row)

    def read(self) -> Failures | None:
        return self.repository.failures(self.username, self.scope)


@dataclass(frozen=True)
class FailuresCleared:
    """A failure row deleted along with another write (a login's success)."""

    repository: LimitRepository
    username: str
    scope: str

    def transact_item(self) -> dict[str, Any]:
        return {"Delete": {"Key": login_failure_key(self.username, self.scope)}}

    def refusal(self) -> Exception:
        return ConcurrentChange("a delete without a condition was refused")

    def apply(self) -> None:
        self.repository.clear_failures(self.username, self.scope)


@dataclass(frozen=True)
class AttemptTakenBack:
    """A success's own attempt, uncounted from the unknown devices' row along with the login."""

    repository: LimitRepository
    username: str
    scope: str = UNKNOWN_DEVICES

    def transact_item(self) -> dict[str, Any]:
        return {"Update": _take_back(self.username, self.scope)}

    def refusal(self) -> Exception:
        return ConcurrentChange("an update without a condition was refused")

    def apply(self) -> None:
        self.repository.take_back(self.username, self.scope)


@dataclass(frozen=True)
class Reservation:
    """A counted attempt: the lock its failure starts (seconds, 0: none), and whether it was
    counted against the account's unknown devices too."""

    lock: int
    account_wide: bool = False


@dataclass(frozen=True)
class Plan:
    """An attempt that may be made, with the counts it writes (``LoginThrottle.count``)."""

    username: str
    attempts: list[Attempt]
    reservation: Reservation


class LoginThrottle:
    """Back-off on password attempts per account and client address, and per account for
    devices it does not know.

    After ``free_failures`` failed attempts from one address, each further attempt locks the
    account's password login for that address for 1 s, 2 s, 4 s ... up to ``max_backoff``; a
    success, or ``window`` without attempts, resets it. Keying by address means an attacker
    cannot lock the owner out from the owner's own network.

    Attempts from devices the account does not know (no valid device cookie, ``KnownDevices``)
    also count in one account-wide row (``UNKNOWN_DEVICES``) with the same mechanics and
    ``account_free_failures`` free: many addresses (a botnet, rotated IPv6 prefixes) share one
    budget, while the owner's known devices skip it. A success takes its own attempt back from
    that row instead of clearing it: one right password does not refill an attacker's budget.

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
        account_free_failures: int | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._repository = repository
        self._free = free_failures
        self._account_free = account_free_failures
        self._max_backoff = max_backoff
        self._window = window
        self._clock = clock

    def reads(self, username: str, address: str) -> list[FailuresRead]:
        """The rows an attempt is judged by (the address's, the unknown devices'), to read along
        with the account."""
        return [
            FailuresRead(self._repository, username, address),
            FailuresRead(self._repository, username, UNKNOWN_DEVICES),
        ]

    def reserve(
        self,
        username: str,
        address: str,
        *,
        known_device: bool = True,
        read: Sequence[Failures | None] | None = None,
        along: Sequence[SideWrite] = (),
    ) -> Reservation:
        """Count an attempt (and the rows ``along``, in the same write), before its password is
        checked (``plan``, then ``count``)."""
        plan = self.plan(username, address, known_device=known_device, read=read, along=along)
        return self.count(plan, along=along)

    def plan(
        self,
        username: str,
        address: str,
        *,
        known_device: bool = True,
        read: Sequence[Failures | None] | None = None,
        along: Sequence[SideWrite] = (),
    ) -> Plan:
        """The attempt's counts, if it may be made: ``TooManyAttempts`` while locked (then the
        rows ``along`` are written alone). ``read`` is what ``reads`` found, else the rows are
        read here."""
        account_wide = not known_device and self._account_free is not None
        scopes = [address, UNKNOWN_DEVICES] if account_wide else [address]
        if read is None:
            read = [self._repository.failures(username, scope) for scope in scopes]
        now = int(self._clock().timestamp())
        attempts: list[Attempt] = []
        waits: list[int] = []
        for scope, previous in zip(scopes, read, strict=False):
            free = self._free if scope == address else self._account_free or 0
            failures = 0
            if previous is not None:
                if previous.locked_until > now:
                    waits.append(previous.locked_until - now)
                if now - previous.last_attempt_at < self._window:
                    failures = previous.count
            attempt = failures + 1
            lock = 0
            if attempt > free:
                lock = min(1 << min(attempt - free - 1, 30), self._max_backoff)
            new = Failures(count=attempt, last_attempt_at=now, locked_until=now + lock)
            expires_at = now + max(self._window, lock)
            attempts.append(Attempt(scope=scope, previous=previous, new=new, expires_at=expires_at))
        if waits:
            apply_alone(along)
            raise TooManyAttempts(max(waits))
        lock = max(attempt.new.locked_until - now for attempt in attempts)
        return Plan(username, attempts, Reservation(lock, account_wide=account_wide))

    def count(self, plan: Plan, *, along: Sequence[SideWrite] = ()) -> Reservation:
        """Write the planned counts (and the rows ``along``); ``TooManyAttempts`` when a parallel
        attempt counted first (then the rows ``along`` are written alone)."""
        try:
            self._repository.count_attempts(plan.username, plan.attempts, along=along)
        except AttemptRaced as exc:
            apply_alone(along)
            raise TooManyAttempts(max(1, plan.reservation.lock)) from exc
        return plan.reservation

    def succeeded(self, username: str, address: str) -> None:
        self._repository.clear_failures(username, address)

    def cleared(self, username: str, address: str, reservation: Reservation) -> list[SideWrite]:
        """What a success writes along with the session: the address's row goes, and its own
        attempt is taken back from the unknown devices' row."""
        writes: list[SideWrite] = [FailuresCleared(self._repository, username, address)]
        if reservation.account_wide:
            writes.append(AttemptTakenBack(self._repository, username))
        return writes


class KnownDevices:
    """Recognises a browser that has logged in to an account before, by a cookie it was given.

    The cookie is ``{issued}.{kid}.{mac}``: an HMAC-SHA256 over the account id and the issue time,
    keyed by a key derived from the JWT signing key of version ``kid``. It needs no storage,
    proves nothing for another account (or a deleted one whose name was taken again: the id
    differs), lasts ``max_age`` and is checked in constant time. A signing key two rotations
    old no longer verifies it: the next login issues a fresh one.
    """

    def __init__(self, keys: CachedKeys, *, max_age: int, clock: Clock = utc_now) -> None:
        self._keys = keys
        self._max_age = max_age
        self._clock = clock

    def issue(self, user_id: str) -> str:
        key = self._keys.current()
        issued = int(self._clock().timestamp())
        return f"{issued}.{key.kid}.{_device_mac(key.secret, user_id, issued)}"

    def recognises(self, cookie: str | None, user_id: str | None) -> bool:
        match = _DEVICE_COOKIE.fullmatch(cookie or "")
        if match is None or user_id is None:
            return False
        issued, kid, mac = int(match["issued"]), match["kid"], match["mac"]
        now = int(self._clock().timestamp())
        if not now - self._max_age < issued <= now + _SKEW_SECONDS:
            return False
        key = self._keys.find(kid)
        if key is None:
            return False
        return hmac.compare_digest(mac, _device_mac(key.secret, user_id, issued))


_DEVICE_COOKIE = re.compile(
    r"(?P<issued>\d{1,12})\.(?P<kid>[A-Za-z0-9_-]{1,64})\.(?P<mac>[A-Za-z0-9_-]{43})"
)
_SKEW_SECONDS = 60


def _device_mac(signing_secret: bytes, user_id: str, issued: int) -> str:
    # A key of its own, derived from the signing key: a device cookie can never pass for a JWT
    # signature or the other way round.
    key = hmac.new(signing_secret, b"gatehouse device cookie v1", hashlib.sha256).digest()
    mac = hmac.new(key, f"{user_id}.{issued}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class IpRateLimiter:
    """At most ``limit`` requests per ``window`` seconds from one address (fixed windows)."""

    def __init__(
        self, repository: LimitRepository, *, limit: int, window: int, clock: Clock = utc_now
    ) -> None:
        self._repository = repository
        self._limit = limit
        self._window = window
        self._clock = clock

    def ticket(self, address: str) -> RateHit:
        """This request's hit, to count inside the route's own write (or alone: ``apply``)."""
        now = int(self._clock().timestamp())
        start = now - now % self._window
        return RateHit(
            repository=self._repository,
            address=address,
            window_start=start,
            expires_at=start + 2 * self._window,
            limit=self._limit,
            retry_after=start + self._window - now,
        )

    def hit(self, address: str) -> None:
        """Count a request now; ``TooManyAttempts`` (not counted) once the window is full."""
        self.ticket(address).apply()


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
