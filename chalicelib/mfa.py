"""A second factor: TOTP (RFC 6238: SHA-1, 30 s steps, 6 digits), one-time recovery codes, and the
login challenge that sits between a correct password and the tokens.

Rows in the user's partition (keys in ``chalicelib/keys.py``), each stamped with the owner's
``userId`` (a row whose id is not the owner's is left by a deleted account of the same name, and
is ignored):

| entity          | pk              | sk                     | other attributes              |
|-----------------|-----------------|------------------------|-------------------------------|
| TOTP factor     | USER#{username} | MFA#TOTP               | state (pending / enabled),    |
|                 |                 |                        | secret, lastStep, createdAt,  |
|                 |                 |                        | enabledAt; expiresAt if       |
|                 |                 |                        | pending                       |
| recovery codes  | USER#{username} | MFA#RECOVERY           | codes (string set of SHA-256) |
| login challenge | USER#{username} | MFA#CHALLENGE#{sha256} | tries, createdAt, expiresAt   |

The profile row carries ``mfaEnabled = true`` while the factor is on; it is set and cleared in the
same transaction as the factor, on the condition that the profile still holds the owner's id.

Replay: ``lastStep`` is the last time step a code was accepted for, and a code is accepted only
for a later step, by a conditional update; a recovery code is removed from the set on the
condition that it is still in it. A challenge counts each try before the code is checked
(``tries < 5``, atomically), so parallel guesses cannot exceed the limit, and is deleted by the
try that succeeds. Redeeming costs three calls: the counting update, one ``BatchGetItem`` of the
factor rows, and one transaction.

``DynamoDBMfaRepository`` stores the rows; ``InMemoryMfaRepository`` is its twin with the same
contract (``tests/test_mfa_repository.py``); ``Mfa`` is the service.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import pyotp
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.errors import Conflict, Invalid, Unauthenticated
from chalicelib.identity import AccountToken, Owner
from chalicelib.keys import (
    MFA_RECOVERY,
    MFA_TOTP,
    PROFILE_HOLDS,
    ConcurrentChange,
    Key,
    OwnerMissing,
    challenge_key,
    error_code,
    is_condition_failure,
    put_owned,
    recovery_key,
    totp_key,
    user_key,
)
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

STEP_SECONDS = 30
DIGITS = 6
RECOVERY_CODES = 10
# Crockford's base32: no i, l, o or u; a reader's 0/o and 1/i/l are read as the same symbol.
_RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_LENGTH = 10  # 50 bits
_RECOVERY_READS = str.maketrans({"o": "0", "i": "1", "l": "1", "-": None, " ": None})
_TOTP_CODE = re.compile(f"[0-9]{{{DIGITS}}}")
_LONGEST_CODE = 64
# Conditions on the factor row: it is the owner's and on; the code's step is a later one.
_ON = "userId = :id AND #state = :enabled"
_LATER_STEP = " AND lastStep < :step"


class MfaAlreadyEnabled(Conflict):
    """The account already has a second factor."""

    message = "Two-factor authentication is already enabled"


class MfaNotEnabled(Conflict):
    """The account has no second factor to disable."""

    message = "Two-factor authentication is not enabled"


class NoPendingEnrolment(Conflict):
    """There is no unexpired enrolment to confirm."""

    message = "No two-factor set-up is in progress; please start again"


class CodeRejected(Invalid):
    """A signed-in caller's code is wrong or already used (enrolment, disabling)."""

    message = "Invalid code"


class InvalidCode(Unauthenticated):
    """The code given at sign-in is wrong or already used; ``owner`` is whose it was."""

    message = "Invalid code"

    def __init__(self, owner: Owner) -> None:
        super().__init__(owner.username)
        self.owner = owner


class ChallengeExpired(Unauthenticated):
    """The sign-in challenge is malformed, unknown, expired, used, or out of tries."""

    message = "Sign-in expired; please log in again"


@dataclass(frozen=True)
class Enrolment:
    """What the user needs to add the account to an authenticator app; shown once."""

    secret: str = field(repr=False)
    uri: str = field(repr=False)
    qr_svg: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class TotpFactor:
    """The stored TOTP factor: pending until a first code confirms it."""

    secret: str = field(repr=False)
    enabled: bool
    last_step: int
    expires_at: int | None = None


@dataclass(frozen=True, kw_only=True)
class Factors:
    """The owner's factor rows (rows stamped with another id are left out)."""

    totp: TotpFactor | None
    recovery: frozenset[str] = field(default=frozenset(), repr=False)


@dataclass(frozen=True, kw_only=True)
class Challenge:
    """A stored login challenge, after counting a try."""

    owner: Owner
    tries: int
    expires_at: int


@dataclass(frozen=True)
class TotpStep:
    """Proof by a TOTP code, accepted for this time step."""

    step: int


@dataclass(frozen=True)
class RecoveryHash:
    """Proof by a recovery code, by its SHA-256."""

    digest: str = field(repr=False)


Proof = TotpStep | RecoveryHash


def parse_challenge(raw: str) -> AccountToken:
    """The challenge token (``ChallengeExpired`` for anything malformed)."""
    try:
        return AccountToken.parse(raw)
    except ValueError:
        raise ChallengeExpired("malformed challenge") from None


class ProfileFlags(Protocol):
    """What the in-memory twin needs of the profiles (the user repository's twin provides it)."""

    def holds(self, owner: Owner) -> bool:
        """Whether the profile of ``owner.username`` exists and holds ``owner.user_id``."""

    def set_mfa_enabled(self, owner: Owner, enabled: bool) -> bool:
        """Set the profile's flag if it holds the owner's id; False (nothing set) if not."""


class MfaRepository(Protocol):
    def begin(self, owner: Owner, *, secret: str, created_at: int, expires_at: int) -> None:
        """Store a pending factor, replacing an unconfirmed one.

        Raises ``MfaAlreadyEnabled`` if the owner's factor is on, ``OwnerMissing`` if the
        profile no longer holds the owner's id.
        """

    def factors(self, owner: Owner) -> Factors:
        """The owner's TOTP factor and unused recovery-code hashes, in one read."""

    def enable(
        self, owner: Owner, *, secret: str, step: int, recovery: frozenset[str], enabled_at: int
    ) -> None:
        """Turn the pending factor with ``secret`` on, store the recovery hashes (replacing any)
        and set the profile's flag, together.

        Raises ``NoPendingEnrolment`` if that pending factor is gone or replaced,
        ``OwnerMissing`` if the profile no longer holds the owner's id.
        """

    def disable(self, owner: Owner, proof: Proof) -> bool:
        """Remove the factor and the recovery codes and clear the profile's flag, together, if
        ``proof`` is still unused; False (nothing changed) if it is not or the factor is off.

        Raises ``OwnerMissing`` if the profile no longer holds the owner's id.
        """

    def add_challenge(self, owner: Owner, digest: str, *, created_at: int, expires_at: int) -> None:
        """Store a new challenge; ``OwnerMissing`` if the profile no longer holds the id."""

    def count_try(
        self, username: str, digest: str, *, now: int, max_tries: int
    ) -> Challenge | None:
        """Count one try on a live challenge with tries left; None if there is no such one."""

    def redeem(self, owner: Owner, digest: str, proof: Proof) -> bool:
        """Delete the challenge and use up ``proof``, together; False (nothing changed) if the
        proof is already used or the factor is off.

        Raises ``ChallengeExpired`` if the challenge is gone (a parallel redeem won) or the
        profile no longer holds the owner's id.
        """


class DynamoDBMfaRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def begin(self, owner: Owner, *, secret: str, created_at: int, expires_at: int) -> None:
        row = {
            **totp_key(owner.username),
            "userId": owner.user_id,
            "state": "pending",
            "secret": secret,
            "lastStep": 0,
            "createdAt": created_at,
            TTL_ATTRIBUTE: expires_at,
        }
        failed = self._transact(
            [
                self._profile_holds(owner),
                {
                    "Put": {
                        "Item": row,
                        # A row of another id was left by a deleted account: replace it too.
                        "ConditionExpression": (
                            "attribute_not_exists(#pk) OR #state = :pending OR userId <> :id"
                        ),
                        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#state": "state"},
                        "ExpressionAttributeValues": {":pending": "pending", ":id": owner.user_id},
                    }
                },
            ]
        )
        if failed == 0:
            raise OwnerMissing(owner.username)
        if failed == 1:
            raise MfaAlreadyEnabled(owner.username)

    def factors(self, owner: Owner) -> Factors:
        rows = self._batch_get([totp_key(owner.username), recovery_key(owner.username)])
        totp = rows.get(MFA_TOTP)
        recovery = rows.get(MFA_RECOVERY)
        if totp is None or totp.get("userId") != owner.user_id:
            return Factors(totp=None)
        expires = totp.get(TTL_ATTRIBUTE)
        factor = TotpFactor(
            secret=str(totp["secret"]),
            enabled=totp["state"] == "enabled",
            last_step=int(str(totp.get("lastStep", 0))),
            expires_at=None if expires is None else int(str(expires)),
        )
        codes: frozenset[str] = frozenset()
        if recovery is not None and recovery.get("userId") == owner.user_id:
            codes = frozenset(str(code) for code in recovery.get("codes", set()))
        return Factors(totp=factor, recovery=codes)

    def enable(
        self, owner: Owner, *, secret: str, step: int, recovery: frozenset[str], enabled_at: int
    ) -> None:
        totp: dict[str, Any] = {
            "Update": {
                "Key": totp_key(owner.username),
                "UpdateExpression": (
                    "SET #state = :enabled, lastStep = :step, enabledAt = :now REMOVE #ttl"
                ),
                # The secret in the condition: a parallel begin replaced the one the code fits.
                "ConditionExpression": "userId = :id AND #state = :pending AND #secret = :secret",
                "ExpressionAttributeNames": {
                    "#state": "state",
                    "#secret": "secret",
                    "#ttl": TTL_ATTRIBUTE,
                },
                "ExpressionAttributeValues": {
                    ":enabled": "enabled",
                    ":pending": "pending",
                    ":step": step,
                    ":now": enabled_at,
                    ":id": owner.user_id,
                    ":secret": secret,
                },
            }
        }
        codes = {
            "Put": {
                "Item": {
                    **recovery_key(owner.username),
                    "userId": owner.user_id,
                    "codes": set(recovery),
                }
            }
        }
        failed = self._transact([totp, codes, self._set_flag(owner, enabled=True)])
        if failed == 2:
            raise OwnerMissing(owner.username)
        if failed == 0:
            raise NoPendingEnrolment(owner.username)

    def disable(self, owner: Owner, proof: Proof) -> bool:
        totp_condition = _ON
        totp_values: dict[str, Any] = {":id": owner.user_id, ":enabled": "enabled"}
        recovery: dict[str, Any] = {"Key": recovery_key(owner.username)}
        if isinstance(proof, TotpStep):
            totp_condition += _LATER_STEP
            totp_values[":step"] = proof.step
        else:
            recovery["ConditionExpression"] = "userId = :id AND contains(codes, :code)"
            recovery["ExpressionAttributeValues"] = {":id": owner.user_id, ":code": proof.digest}
        failed = self._transact(
            [
                {
                    "Delete": {
                        "Key": totp_key(owner.username),
                        "ConditionExpression": totp_condition,
                        "ExpressionAttributeNames": {"#state": "state"},
                        "ExpressionAttributeValues": totp_values,
                    }
                },
                {"Delete": recovery},
                self._set_flag(owner, enabled=False),
            ]
        )
        if failed == 2:
            raise OwnerMissing(owner.username)
        return failed is None

    def add_challenge(self, owner: Owner, digest: str, *, created_at: int, expires_at: int) -> None:
        put_owned(
            self._table,
            {
                **challenge_key(owner.username, digest),
                "tries": 0,
                "createdAt": created_at,
                TTL_ATTRIBUTE: expires_at,
            },
            owner=owner,
        )

    def count_try(
        self, username: str, digest: str, *, now: int, max_tries: int
    ) -> Challenge | None:
        try:
            response = self._table.update_item(
                Key=challenge_key(username, digest),
                UpdateExpression="ADD tries :one",
                # The TTL only cleans up; expiry is enforced here.
                ConditionExpression="attribute_exists(#pk) AND tries < :max AND #ttl > :now",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":one": 1, ":max": max_tries, ":now": now},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return None
            raise
        row = response["Attributes"]
        return Challenge(
            owner=Owner(username, str(row["userId"])),
            tries=int(str(row["tries"])),
            expires_at=int(str(row[TTL_ATTRIBUTE])),
        )

    def redeem(self, owner: Owner, digest: str, proof: Proof) -> bool:
        used: dict[str, Any]
        if isinstance(proof, TotpStep):
            used = {
                "Update": {
                    "Key": totp_key(owner.username),
                    "UpdateExpression": "SET lastStep = :step",
                    "ConditionExpression": _ON + _LATER_STEP,
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": {
                        ":step": proof.step,
                        ":id": owner.user_id,
                        ":enabled": "enabled",
                    },
                }
            }
        else:
            used = {
                "Update": {
                    "Key": recovery_key(owner.username),
                    "UpdateExpression": "DELETE codes :codes",
                    "ConditionExpression": "userId = :id AND contains(codes, :code)",
                    "ExpressionAttributeValues": {
                        ":codes": {proof.digest},
                        ":code": proof.digest,
                        ":id": owner.user_id,
                    },
                }
            }
        failed = self._transact(
            [
                {
                    "Delete": {
                        "Key": challenge_key(owner.username, digest),
                        "ConditionExpression": "userId = :id",
                        "ExpressionAttributeValues": {":id": owner.user_id},
                    }
                },
                used,
                self._profile_holds(owner),
            ]
        )
        if failed == 0:
            raise ChallengeExpired("the challenge was used meanwhile")
        if failed == 2:
            raise ChallengeExpired("the account is gone")
        return failed is None

    def _profile_holds(self, owner: Owner) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "Key": user_key(owner.username),
                "ConditionExpression": PROFILE_HOLDS,
                "ExpressionAttributeValues": {":id": owner.user_id},
            }
        }

    def _set_flag(self, owner: Owner, *, enabled: bool) -> dict[str, Any]:
        return {
            "Update": {
                "Key": user_key(owner.username),
                "UpdateExpression": "SET mfaEnabled = :true" if enabled else "REMOVE mfaEnabled",
                "ConditionExpression": PROFILE_HOLDS,
                "ExpressionAttributeValues": {
                    ":id": owner.user_id,
                    **({":true": True} if enabled else {}),
                },
            }
        }

    def _transact(self, items: list[dict[str, Any]]) -> int | None:
        """Write ``items`` together; None if done, else the index of the first item whose
        condition failed. Any other cancellation is ``ConcurrentChange``."""
        for item in items:
            for operation in item.values():
                operation.setdefault("TableName", self._table.name)
        try:
            # The resource's client serialises plain Python values, as the Table methods do.
            self._table.meta.client.transact_write_items(TransactItems=cast("Any", items))
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons", [])
            for index, reason in enumerate(reasons):
                if reason.get("Code") == "ConditionalCheckFailed":
                    return index
            raise ConcurrentChange("a parallel transaction got in the way") from exc
        return None

    def _batch_get(self, keys: list[Key]) -> dict[str, dict[str, Any]]:
        """The rows at ``keys`` by sort key (one partition), retrying unprocessed keys."""
        found: dict[str, dict[str, Any]] = {}
        request: Any = {self._table.name: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(3):
            response = self._table.meta.client.batch_get_item(RequestItems=request)
            for row in response.get("Responses", {}).get(self._table.name, []):
                found[str(row[SORT_KEY])] = dict(row)
            request = response.get("UnprocessedKeys")
            if not request:
                return found
        raise ConcurrentChange("the factor rows could not be read")


@dataclass(frozen=True, kw_only=True)
class _TotpRow:
    user_id: str
    factor: TotpFactor


@dataclass(frozen=True, kw_only=True)
class _ChallengeRow:
    user_id: str
    tries: int
    expires_at: int


class InMemoryMfaRepository:
    """The DynamoDB repository's twin; the profiles' id and flag come from ``profiles``."""

    def __init__(self, profiles: ProfileFlags) -> None:
        self._profiles = profiles
        # Keyed by username (and digest), as the rows are; each keeps the id it was stamped with.
        self._totp: dict[str, _TotpRow] = {}
        self._recovery: dict[str, tuple[str, frozenset[str]]] = {}
        self._challenges: dict[tuple[str, str], _ChallengeRow] = {}
        self._lock = threading.RLock()

    def begin(self, owner: Owner, *, secret: str, created_at: int, expires_at: int) -> None:
        with self._lock:
            if not self._profiles.holds(owner):
                raise OwnerMissing(owner.username)
            current = self._own(owner)
            if current is not None and current.factor.enabled:
                raise MfaAlreadyEnabled(owner.username)
            factor = TotpFactor(secret=secret, enabled=False, last_step=0, expires_at=expires_at)
            self._totp[owner.username] = _TotpRow(user_id=owner.user_id, factor=factor)

    def factors(self, owner: Owner) -> Factors:
        with self._lock:
            row = self._own(owner)
            if row is None:
                return Factors(totp=None)
            return Factors(totp=row.factor, recovery=self._codes(owner))

    def enable(
        self, owner: Owner, *, secret: str, step: int, recovery: frozenset[str], enabled_at: int
    ) -> None:
        # The checks in the order of the DynamoDB transaction's items, so both report alike.
        with self._lock:
            row = self._own(owner)
            if row is None or row.factor.enabled or row.factor.secret != secret:
                raise NoPendingEnrolment(owner.username)
            if not self._profiles.holds(owner):
                raise OwnerMissing(owner.username)
            factor = replace(row.factor, enabled=True, last_step=step, expires_at=None)
            self._totp[owner.username] = replace(row, factor=factor)
            self._recovery[owner.username] = (owner.user_id, recovery)
            self._profiles.set_mfa_enabled(owner, True)

    def disable(self, owner: Owner, proof: Proof) -> bool:
        with self._lock:
            row = self._own(owner)
            if row is None or not row.factor.enabled:
                return False
            if isinstance(proof, TotpStep) and proof.step <= row.factor.last_step:
                return False
            if isinstance(proof, RecoveryHash) and proof.digest not in self._codes(owner):
                return False
            if not self._profiles.holds(owner):
                raise OwnerMissing(owner.username)
            del self._totp[owner.username]
            self._recovery.pop(owner.username, None)
            self._profiles.set_mfa_enabled(owner, False)
            return True

    def add_challenge(self, owner: Owner, digest: str, *, created_at: int, expires_at: int) -> None:
        with self._lock:
            if not self._profiles.holds(owner):
                raise OwnerMissing(owner.username)
            key = (owner.username, digest)
            if key in self._challenges:
                raise ConcurrentChange(owner.username)
            self._challenges[key] = _ChallengeRow(
                user_id=owner.user_id, tries=0, expires_at=expires_at
            )

    def count_try(
        self, username: str, digest: str, *, now: int, max_tries: int
    ) -> Challenge | None:
        with self._lock:
            row = self._challenges.get((username, digest))
            if row is None or row.tries >= max_tries or row.expires_at <= now:
                return None
            row = replace(row, tries=row.tries + 1)
            self._challenges[(username, digest)] = row
            return Challenge(
                owner=Owner(username, row.user_id), tries=row.tries, expires_at=row.expires_at
            )

    def redeem(self, owner: Owner, digest: str, proof: Proof) -> bool:
        with self._lock:
            challenge = self._challenges.get((owner.username, digest))
            if challenge is None or challenge.user_id != owner.user_id:
                raise ChallengeExpired("the challenge was used meanwhile")
            row = self._own(owner)
            if isinstance(proof, TotpStep):
                if row is None or not row.factor.enabled or proof.step <= row.factor.last_step:
                    return False
            elif proof.digest not in self._codes(owner):
                return False
            if not self._profiles.holds(owner):
                raise ChallengeExpired("the account is gone")
            del self._challenges[(owner.username, digest)]
            if isinstance(proof, TotpStep) and row is not None:
                factor = replace(row.factor, last_step=proof.step)
                self._totp[owner.username] = replace(row, factor=factor)
            elif isinstance(proof, RecoveryHash):
                codes = self._codes(owner) - {proof.digest}
                self._recovery[owner.username] = (owner.user_id, codes)
            return True

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's factor, recovery codes and challenges (only the rows stamped
        ``stamped``, if given); how many rows went."""
        with self._lock:
            challenges = [
                key
                for key, row in self._challenges.items()
                if key[0] == username and stamped in (None, row.user_id)
            ]
            for key in challenges:
                del self._challenges[key]
            deleted = len(challenges)
            totp = self._totp.get(username)
            if totp is not None and stamped in (None, totp.user_id):
                del self._totp[username]
                deleted += 1
            codes = self._recovery.get(username)
            if codes is not None and stamped in (None, codes[0]):
                del self._recovery[username]
                deleted += 1
            return deleted

    def _own(self, owner: Owner) -> _TotpRow | None:
        row = self._totp.get(owner.username)
        return row if row is not None and row.user_id == owner.user_id else None

    def _codes(self, owner: Owner) -> frozenset[str]:
        user_id, codes = self._recovery.get(owner.username, ("", frozenset()))
        return codes if user_id == owner.user_id else frozenset()


class Mfa:
    """Enrols a TOTP authenticator, issues recovery codes, and checks the second step of a login.

    The caller checks the password before ``disable`` and before ``challenge``, and counts the
    ``InvalidCode`` that ``redeem`` raises toward the account's back-off.
    """

    def __init__(
        self,
        repository: MfaRepository,
        *,
        issuer: str,
        clock: Clock = utc_now,
        enrolment_ttl: timedelta = timedelta(minutes=15),
        challenge_ttl: timedelta = timedelta(minutes=5),
        max_tries: int = 5,
    ) -> None:
        if not issuer or ":" in issuer:
            # The URI's label is issuer:name; authenticator apps split it at the colon.
            raise ValueError(f"the TOTP issuer must be non-empty and without a colon: {issuer!r}")
        self._repository = repository
        self._issuer = issuer
        self._clock = clock
        self._enrolment_ttl = int(enrolment_ttl.total_seconds())
        self._challenge_ttl = int(challenge_ttl.total_seconds())
        self._max_tries = max_tries

    def begin(self, owner: Owner) -> Enrolment:
        """A new secret for the authenticator app, pending until ``confirm``."""
        secret = pyotp.random_base32(32)  # 32 base32 digits: 160 bits, RFC 4226's advice
        now = self._now()
        self._repository.begin(
            owner, secret=secret, created_at=now, expires_at=now + self._enrolment_ttl
        )
        uri = _totp(secret).provisioning_uri(name=owner.username, issuer_name=self._issuer)
        return Enrolment(secret=secret, uri=uri, qr_svg=_qr_svg(uri))

    def confirm(self, owner: Owner, code: str) -> list[str]:
        """Turn the factor on with a first code; return the recovery codes (shown only now)."""
        now = self._now()
        totp = self._repository.factors(owner).totp
        if totp is not None and totp.enabled:
            raise MfaAlreadyEnabled(owner.username)
        if totp is None or totp.expires_at is None or totp.expires_at <= now:
            raise NoPendingEnrolment(owner.username)
        step = _matching_step(totp, code, now=now)
        if step is None:
            raise CodeRejected(owner.username)
        symbols = [_new_recovery_symbols() for _ in range(RECOVERY_CODES)]
        recovery = frozenset(_hash(each) for each in symbols)
        self._repository.enable(
            owner, secret=totp.secret, step=step, recovery=recovery, enabled_at=now
        )
        half = _RECOVERY_LENGTH // 2
        return [f"{each[:half]}-{each[half:]}" for each in symbols]

    def disable(self, owner: Owner, code: str) -> None:
        """Turn the factor off, given a current TOTP code or an unused recovery code."""
        factors = self._repository.factors(owner)
        if factors.totp is None or not factors.totp.enabled:
            raise MfaNotEnabled(owner.username)
        proof = _proof(factors, code, now=self._now())
        if proof is None or not self._repository.disable(owner, proof):
            raise CodeRejected(owner.username)

    def enabled(self, owner: Owner) -> bool:
        totp = self._repository.factors(owner).totp
        return totp is not None and totp.enabled

    def challenge(self, owner: Owner) -> str:
        """A single-use token for the second step of a login whose password was right."""
        token = AccountToken.new(owner.username)
        now = self._now()
        self._repository.add_challenge(
            owner, token.digest, created_at=now, expires_at=now + self._challenge_ttl
        )
        return token.encode()

    def redeem(self, raw_challenge: str, code: str) -> Owner:
        """The owner whose challenge this is, if ``code`` is a current TOTP code or an unused
        recovery code; each try counts, before the code is checked."""
        token = parse_challenge(raw_challenge)
        now = self._now()
        challenge = self._repository.count_try(
            token.username, token.digest, now=now, max_tries=self._max_tries
        )
        if challenge is None:
            raise ChallengeExpired("unknown, expired or out of tries")
        owner = challenge.owner
        factors = self._repository.factors(owner)
        if factors.totp is None or not factors.totp.enabled:
            raise ChallengeExpired("two-factor authentication was turned off")
        proof = _proof(factors, code, now=now)
        if proof is None or not self._repository.redeem(owner, token.digest, proof):
            raise InvalidCode(owner)
        return owner

    def _now(self) -> int:
        return int(self._clock().timestamp())


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, digest=hashlib.sha1, interval=STEP_SECONDS)


def _matching_step(totp: TotpFactor, code: str, *, now: int) -> int | None:
    """The step, within one of now and after the last accepted, that ``code`` is the code of."""
    code = "".join(code[:_LONGEST_CODE].split())
    if not _TOTP_CODE.fullmatch(code):
        return None
    generator = _totp(totp.secret)
    current = now // STEP_SECONDS
    found = None
    for step in (current - 1, current, current + 1):
        # Every candidate is compared, in constant time, whichever matches.
        matches = hmac.compare_digest(generator.generate_otp(step), code)
        if matches and step > totp.last_step and found is None:
            found = step
    return found


def _proof(factors: Factors, code: str, *, now: int) -> Proof | None:
    if len(code) > _LONGEST_CODE or factors.totp is None:
        return None
    step = _matching_step(factors.totp, code, now=now)
    if step is not None:
        return TotpStep(step)
    digest = _recovery_digest(code)
    if digest is not None and digest in factors.recovery:
        return RecoveryHash(digest)
    return None


def _new_recovery_symbols() -> str:
    return "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))


def _recovery_digest(code: str) -> str | None:
    """The stored form of a recovery code as a person may type it (any case, with or without
    the dash, o for 0, i or l for 1); None if it cannot be one."""
    symbols = code.lower().translate(_RECOVERY_READS)
    if len(symbols) != _RECOVERY_LENGTH or not set(symbols) <= set(_RECOVERY_ALPHABET):
        return None
    return _hash(symbols)


def _hash(symbols: str) -> str:
    # Each code is 50 random bits, not something a person chose: no dictionary applies, and
    # finding one from its hash takes ~2^49 tries. Whoever can read the table also reads the
    # TOTP secret beside it, so a salted slow hash would add little, while making every check
    # ten slow hashes instead of one set lookup.
    return hashlib.sha256(symbols.encode()).hexdigest()


def _qr_svg(uri: str) -> str:
    """The URI as a QR code: an SVG element with a viewBox and no size, so it scales."""
    # Imported here: only an enrolment draws a code, and segno (with xml.etree) would add
    # ~12 ms to every cold start.
    import segno

    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, omitsize=True, nl=False)
    return out.getvalue().decode()
