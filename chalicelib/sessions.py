"""Sessions and their rotating refresh tokens, under the user's partition.

Rows (pk ``USER#{username}``):
- ``SESSION#{id}``: one per login; created/last-used times, user-agent label, absolute and idle
  expiry, and the user's token version when it started.
- ``REFRESH#{sha256(secret)}``: one per refresh token issued, ``active`` until used once, then
  ``consumed``. Consumed rows are kept (until the session's absolute expiry) so a replayed token
  is recognised and its whole family, the session, revoked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, user_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

_SESSION = "SESSION#"
_REFRESH = "REFRESH#"
_USER_AGENT_CHARS = 200


class InvalidRefreshToken(Exception):
    """The refresh token is malformed, unknown, expired or its session has ended."""


class SessionLookupThrottled(Exception):
    """DynamoDB kept leaving the batch read unprocessed."""


class RefreshTokenReused(Exception):
    """A consumed refresh token came back after the grace window: its session was revoked."""

    def __init__(self, username: str, session_id: str) -> None:
        super().__init__(session_id)
        self.username = username
        self.session_id = session_id


@dataclass(frozen=True, kw_only=True)
class Session:
    username: str
    session_id: str
    user_agent: str
    created_at: int
    last_used_at: int
    expires_at: int
    idle_expires_at: int
    token_version: int


@dataclass(frozen=True)
class RefreshToken:
    """``base64url(username).secret``: the name locates the partition, the secret is 256 bits."""

    username: str
    secret: str = field(repr=False)

    def encode(self) -> str:
        name = base64.urlsafe_b64encode(self.username.encode()).rstrip(b"=").decode()
        return f"{name}.{self.secret}"

    @classmethod
    def parse(cls, raw: str) -> RefreshToken:
        name, _, secret = raw.partition(".")
        if not name or len(secret) != 43 or len(raw) > 300:
            raise InvalidRefreshToken("malformed refresh token")
        try:
            username = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidRefreshToken("malformed refresh token") from None
        return cls(username=username, secret=secret)

    @property
    def digest(self) -> str:
        # The secret has 256 random bits, so a fast hash is enough to make the stored value
        # useless to whoever reads the table.
        return hashlib.sha256(self.secret.encode()).hexdigest()


@dataclass(frozen=True)
class Rotation:
    """The outcome of a refresh; ``token`` is None when a parallel refresh already rotated."""

    session: Session
    token: RefreshToken | None


class DynamoDBSessionRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(self, session: Session, token: RefreshToken) -> None:
        self._transact(
            [
                {"Put": self._new(_session_item(session))},
                {"Put": self._new(_refresh_item(session, token))},
            ]
        )

    def get(self, username: str, session_id: str) -> Session | None:
        item = self._table.get_item(
            Key=_key(username, _SESSION + session_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else _session(item)

    def with_profile(self, username: str, session_id: str) -> tuple[Any, Session | None]:
        """The user's profile row and the session, in one round trip (for the authorizer)."""
        keys = [user_key(username), _key(username, _SESSION + session_id)]
        found: dict[str, Any] = {}
        request: Any = {self._table.name: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(3):
            response = self._table.meta.client.batch_get_item(RequestItems=request)
            for row in response.get("Responses", {}).get(self._table.name, []):
                found[str(row[SORT_KEY])] = row
            request = response.get("UnprocessedKeys")
            if not request:
                session = found.get(_SESSION + session_id)
                return found.get("PROFILE"), None if session is None else _session(session)
        raise SessionLookupThrottled(username)

    def refresh_state(self, token: RefreshToken) -> tuple[str, str, int | None] | None:
        """(session id, state, consumed at) of a refresh token, or None if unknown."""
        item = self._table.get_item(
            Key=_key(token.username, _REFRESH + token.digest), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        consumed = item.get("consumedAt")
        return (
            str(item["sessionId"]),
            str(item["state"]),
            None if consumed is None else int(str(consumed)),
        )

    def rotate(
        self,
        session: Session,
        *,
        used: RefreshToken,
        new: RefreshToken,
        now: int,
        idle_expires_at: int,
    ) -> bool:
        """Consume ``used`` and issue ``new``; False if ``used`` was already consumed.

        The conditional consume of ``used`` is the single point where parallel refreshes are
        decided. ``new`` is written first, so a crash in between leaves an unused row (whose
        secret nobody holds) rather than a consumed token without a successor.
        """
        self._table.put_item(
            Item=_refresh_item(session, new),
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY},
        )
        try:
            self._table.update_item(
                Key=_key(used.username, _REFRESH + used.digest),
                UpdateExpression="SET #state = :consumed, consumedAt = :now",
                ConditionExpression="#state = :active",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":consumed": "consumed",
                    ":active": "active",
                    ":now": now,
                },
            )
        except ClientError as exc:
            self._forget(new, exc)
            return False
        try:
            # The condition keeps a concurrent logout from being undone by this update.
            self._table.update_item(
                Key=_key(session.username, _SESSION + session.session_id),
                UpdateExpression="SET lastUsedAt = :now, idleExpiresAt = :idle",
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ExpressionAttributeValues={":now": now, ":idle": idle_expires_at},
            )
        except ClientError as exc:
            self._forget(new, exc)
            raise InvalidRefreshToken("the session has ended") from exc
        return True

    def _forget(self, token: RefreshToken, exc: ClientError) -> None:
        """Drop a successor row nobody will get, after a failed condition (else re-raise)."""
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise exc
        self._table.delete_item(Key=_key(token.username, _REFRESH + token.digest))

    def all(self, username: str) -> list[Session]:
        sessions: list[Session] = []
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(f"USER#{username}")
            & Key(SORT_KEY).begins_with(_SESSION),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**query)
            sessions += [_session(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sessions
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete(self, username: str, session_id: str) -> bool:
        """End a session (its refresh rows die with it); False if there was none."""
        response = self._table.delete_item(
            Key=_key(username, _SESSION + session_id), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    def _new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }

    def _transact(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            for operation in item.values():
                operation.setdefault("TableName", self._table.name)
        # The resource's client serialises plain Python values, as the Table methods do.
        self._table.meta.client.transact_write_items(TransactItems=cast("Any", items))


class Sessions:
    """Starts sessions, rotates their refresh tokens, and detects replayed ones."""

    def __init__(
        self,
        repository: DynamoDBSessionRepository,
        *,
        absolute: timedelta,
        idle: timedelta,
        grace: timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self._repository = repository
        self._absolute = int(absolute.total_seconds())
        self._idle = int(idle.total_seconds())
        self._grace = int(grace.total_seconds())
        self._clock = clock

    def start(
        self, username: str, *, token_version: int, user_agent: str
    ) -> tuple[Session, RefreshToken]:
        now = self._now()
        session = Session(
            username=username,
            session_id=secrets.token_urlsafe(16),
            user_agent=user_agent[:_USER_AGENT_CHARS],
            created_at=now,
            last_used_at=now,
            expires_at=now + self._absolute,
            idle_expires_at=now + min(self._idle, self._absolute),
            token_version=token_version,
        )
        token = _new_token(username)
        self._repository.create(session, token)
        return session, token

    def rotate(self, raw_token: str) -> Rotation:
        """Consume a refresh token and issue its successor in the same session."""
        token = RefreshToken.parse(raw_token)
        state = self._repository.refresh_state(token)
        if state is None:
            raise InvalidRefreshToken("unknown refresh token")
        session_id = state[0]
        session = self._repository.get(token.username, session_id)
        now = self._now()
        if session is None:
            raise InvalidRefreshToken("the session has ended")
        if now >= session.expires_at or now >= session.idle_expires_at:
            self._repository.delete(token.username, session_id)
            raise InvalidRefreshToken("the session has expired")
        if state[1] == "active":
            successor = _new_token(token.username)
            idle_expires_at = min(now + self._idle, session.expires_at)
            rotated = self._repository.rotate(
                session, used=token, new=successor, now=now, idle_expires_at=idle_expires_at
            )
            if rotated:
                return Rotation(session=session, token=successor)
            state = self._repository.refresh_state(token) or state
        consumed_at = state[2]
        if consumed_at is not None and now - consumed_at <= self._grace:
            # A parallel refresh (another tab) used this token a moment ago: let this one
            # through without a new refresh token; the browser already holds the winner's.
            return Rotation(session=session, token=None)
        self._repository.delete(token.username, session_id)
        raise RefreshTokenReused(token.username, session_id)

    def end(self, username: str, session_id: str) -> bool:
        return self._repository.delete(username, session_id)

    def live_with_profile(self, username: str, session_id: str) -> tuple[Any, bool]:
        """The profile row and whether the session is still live, in one read."""
        profile, session = self._repository.with_profile(username, session_id)
        now = self._now()
        live = session is not None and now < min(session.expires_at, session.idle_expires_at)
        return profile, live

    def active(self, username: str, *, token_version: int) -> list[Session]:
        """The user's live sessions, newest first."""
        now = self._now()
        live = [
            session
            for session in self._repository.all(username)
            if now < session.expires_at
            and now < session.idle_expires_at
            and session.token_version >= token_version
        ]
        return sorted(live, key=lambda session: session.created_at, reverse=True)

    def end_all(self, username: str) -> None:
        for session in self._repository.all(username):
            self._repository.delete(username, session.session_id)

    def _now(self) -> int:
        return int(self._clock().timestamp())


def _new_token(username: str) -> RefreshToken:
    return RefreshToken(username=username, secret=secrets.token_urlsafe(32))


def _key(username: str, sort_key: str) -> dict[str, str]:
    return {PARTITION_KEY: f"USER#{username}", SORT_KEY: sort_key}


def _session_item(session: Session) -> dict[str, Any]:
    return {
        **_key(session.username, _SESSION + session.session_id),
        "sessionId": session.session_id,
        "userAgent": session.user_agent,
        "createdAt": session.created_at,
        "lastUsedAt": session.last_used_at,
        "idleExpiresAt": session.idle_expires_at,
        "tokenVersion": session.token_version,
        # The absolute expiry doubles as the TTL: DynamoDB removes the row some time after it.
        TTL_ATTRIBUTE: session.expires_at,
    }


def _refresh_item(session: Session, token: RefreshToken) -> dict[str, Any]:
    return {
        **_key(token.username, _REFRESH + token.digest),
        "sessionId": session.session_id,
        "state": "active",
        TTL_ATTRIBUTE: session.expires_at,
    }


def _session(item: dict[str, Any]) -> Session:
    return Session(
        username=str(item[PARTITION_KEY]).removeprefix("USER#"),
        session_id=str(item["sessionId"]),
        user_agent=str(item.get("userAgent", "")),
        created_at=int(item["createdAt"]),
        last_used_at=int(item["lastUsedAt"]),
        expires_at=int(item[TTL_ATTRIBUTE]),
        idle_expires_at=int(item["idleExpiresAt"]),
        token_version=int(item.get("tokenVersion", 0)),
    )
