"""Access tokens: HS256 JWTs signed with a key kept in Secrets Manager."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import jwt

from chalicelib.clock import Clock, utc_now

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

ALGORITHM = "HS256"
# sub: the account's id; ver: its token version at issue (revocation); sid: the session.
_REQUIRED_CLAIMS = ("sub", "username", "role", "ver", "sid", "iat", "exp", "iss", "aud")
_MIN_KEY_BYTES = 32
# Tolerated clock skew between containers for the issued-at time.
_SKEW_SECONDS = 60


class InvalidToken(Exception):
    """The token is malformed, forged, expired or signed with an unknown key."""


class SigningKeyError(Exception):
    """The signing secret is missing or unusable."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The current signing key and, after a rotation, the one before it."""

    current: SigningKey
    previous: SigningKey | None = None

    def find(self, kid: str) -> SigningKey | None:
        for key in (self.current, self.previous):
            if key is not None and key.kid == kid:
                return key
        return None


class KeySource(Protocol):
    def fetch(self) -> KeyRing: ...


class SecretsManagerKeySource:
    """Reads the AWSCURRENT and AWSPREVIOUS versions of the signing secret; kid = version id."""

    def __init__(self, client: SecretsManagerClient, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def fetch(self) -> KeyRing:
        current = self._version("AWSCURRENT")
        if current is None:
            raise SigningKeyError("the signing secret has no AWSCURRENT version")
        return KeyRing(current=current, previous=self._version("AWSPREVIOUS"))

    def _version(self, stage: str) -> SigningKey | None:
        try:
            response = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=stage)
        except self._client.exceptions.ResourceNotFoundException:
            return None
        secret = response.get("SecretString", "").encode("utf-8")
        if len(secret) < _MIN_KEY_BYTES:
            raise SigningKeyError(f"the {stage} signing key is shorter than {_MIN_KEY_BYTES} bytes")
        return SigningKey(kid=response["VersionId"], secret=secret)


class CachedKeys:
    """Caches the key ring for ``max_age``; refetches early, at a bounded rate, on unknown kids."""

    def __init__(
        self,
        source: KeySource,
        *,
        max_age: timedelta,
        min_refetch_interval: timedelta = timedelta(seconds=30),
        clock: Clock = utc_now,
    ) -> None:
        self._source = source
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._clock = clock
        self._ring: KeyRing | None = None
        self._fetched_at = datetime.min.replace(tzinfo=UTC)

    def current(self) -> SigningKey:
        return self._ring_within(self._max_age).current

    def find(self, kid: str) -> SigningKey | None:
        key = self._ring_within(self._max_age).find(kid)
        if key is None:
            # A kid we do not know may come from a rotation another container has seen first.
            key = self._ring_within(self._min_refetch_interval).find(kid)
        return key

    def _ring_within(self, age: timedelta) -> KeyRing:
        now = self._clock()
        if self._ring is None or now - self._fetched_at >= age:
            self._ring = self._source.fetch()
            self._fetched_at = now
        return self._ring


@dataclass(frozen=True, kw_only=True)
class Claims:
    subject: str
    username: str
    role: str
    token_version: int
    session_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class IssuedToken:
    token: str = field(repr=False)
    expires_in: int


class TokenService:
    """Issues and verifies access tokens; only HS256, every claim required."""

    def __init__(
        self,
        keys: CachedKeys,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        clock: Clock = utc_now,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(
        self, *, user_id: str, username: str, role: str, token_version: int, session_id: str
    ) -> IssuedToken:
        key = self._keys.current()
        now = int(self._clock().timestamp())
        claims = {
            # The account's immutable id: the name may belong to someone else tomorrow.
            "sub": user_id,
            "username": username,
            "role": role,
            "ver": token_version,
            "sid": session_id,
            "iat": now,
            "exp": now + self._ttl_seconds,
            "iss": self._issuer,
            "aud": self._audience,
        }
        token = jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(token=token, expires_in=self._ttl_seconds)

    def verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidToken("unexpected token header")
        key = self._keys.find(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Time claims are checked below against the injected clock, not PyJWT's.
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        return self._checked(payload)

    def _checked(self, payload: dict[str, Any]) -> Claims:
        issued_at, expires_at, version = payload["iat"], payload["exp"], payload["ver"]
        strings = (payload["sub"], payload["username"], payload["role"], payload["sid"])
        if not all(type(value) is int for value in (issued_at, expires_at, version)):
            raise InvalidToken("time and version claims must be integers")
        if not all(isinstance(value, str) and value for value in strings):
            raise InvalidToken("identity claims must be strings")
        now = self._clock().timestamp()
        if now >= expires_at:
            raise InvalidToken("token expired")
        if issued_at > now + _SKEW_SECONDS:
            raise InvalidToken("token issued in the future")
        return Claims(
            subject=payload["sub"],
            username=payload["username"],
            role=payload["role"],
            token_version=version,
            session_id=payload["sid"],
            issued_at=issued_at,
            expires_at=expires_at,
        )
