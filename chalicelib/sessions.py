"""Sessions and their rotating refresh tokens, under the user's partition.

Two kinds of rows in the user's partition (keys in ``chalicelib/keys.py``):
- a session: one per login; created/last-used times, user-agent label, absolute and idle
  expiry, and the user's token version when it started.
- a refresh token, stored by the SHA-256 of its secret: one per refresh token issued, ``active``
  until used once, then ``consumed``. Consumed rows are kept (until the session's absolute
  expiry) so a replayed token is recognised and its whole family, the session, revoked.

``DynamoDBSessionRepository`` stores them; ``InMemorySessionRepository`` is its twin with the
same contract (``tests/test_session_repository.py``).

Round trips: a login's session, its first refresh token, the profile's check (or rehash), the
login event and the failure rows' reset are one transaction (``create`` with rows ``along``). A
refresh reads its token's row (``GetItem``), then the session and the profile (``BatchGetItem``),
then writes one transaction: the used token consumed (``state = active``), its successor, the
session touched (it must exist), the profile checked (same id, not disabled, no newer token
version) and the request's per-IP hit.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol

from boto3.dynamodb.conditions import Key

from chalicelib.clock import Clock, utc_now
from chalicelib.errors import Unauthenticated
from chalicelib.identity import AccountToken, Owner
from chalicelib.keys import (
    PROFILE_HOLDS,
    SESSION,
    ConcurrentChange,
    OwnerMissing,
    SideWrite,
    apply_alone,
    batch_get,
    refresh_key,
    row_key,
    session_key,
    transact,
    user_key,
    user_pk,
    username_of,
)
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from chalicelib.users import User, UserRepository, user_from_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

_USER_AGENT_CHARS = 200


class InvalidRefreshToken(Unauthenticated):
    """The refresh token is malformed, unknown, expired or its session has ended."""

    message = "Session expired or revoked; please log in again"


class SessionRevoked(Exception):
    """The session's account is gone, disabled, or has ended every session since it started."""


class RefreshTokenReused(Exception):
    """A consumed refresh token came back after the grace window: its session was revoked."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.session_id)
        self.username = session.username
        self.user_id = session.user_id
        self.session_id = session.session_id


@dataclass(frozen=True, kw_only=True)
class Session:
    username: str
    # The account it was opened for; "" on rows of versions that did not record it (never live).
    user_id: str
    session_id: str
    user_agent: str
    created_at: int
    last_used_at: int
    expires_at: int
    idle_expires_at: int
    token_version: int


# ``base64url(username).secret``: the name locates the partition, the secret is 256 bits.
RefreshToken = AccountToken


@dataclass(frozen=True)
class Rotation:
    """The outcome of a refresh; ``token`` is None when a parallel refresh already rotated."""

    session: Session
    token: RefreshToken | None
    user: User


@dataclass(frozen=True, kw_only=True)
class RefreshRecord:
    """What is stored about a refresh token: its session, and whether it has been used."""

    session_id: str
    state: Literal["active", "consumed"]
    consumed_at: int | None = None


class SessionRepository(Protocol):
    def create(
        self,
        session: Session,
        token: RefreshToken,
        *,
        profile: SideWrite | None = None,
        along: Sequence[SideWrite] = (),
    ) -> None:
        """Store a new session and its first refresh token, with the rows ``along``, together or
        not at all, while the profile holds the session's account id (``OwnerMissing``
        otherwise). ``profile`` is a write to the profile that replaces that check (and must
        check the id itself); its refusal is raised when its condition fails."""

    def get(self, username: str, session_id: str) -> Session | None: ...

    def with_profile(self, username: str, session_id: str) -> tuple[User | None, Session | None]:
        """The user's profile and the session, in one round trip (for the authorizer)."""

    def refresh_record(self, token: RefreshToken) -> RefreshRecord | None: ...

    def refresh_state(
        self, token: RefreshToken
    ) -> tuple[RefreshRecord | None, Session | None, User | None]:
        """The token's row, then its session and the profile (two round trips; one when the
        token is unknown)."""

    def rotate(
        self,
        session: Session,
        *,
        used: RefreshToken,
        new: RefreshToken,
        now: int,
        idle_expires_at: int,
        along: Sequence[SideWrite] = (),
    ) -> bool:
        """Consume ``used``, issue ``new`` and touch the session, with the rows ``along``, all or
        nothing; False if ``used`` was already consumed (or is unknown).

        Raises ``InvalidRefreshToken`` if the session ended meanwhile, ``SessionRevoked`` if the
        profile no longer holds the session's account id, is disabled or has a newer token
        version than the session.
        """

    def all(self, username: str) -> list[Session]: ...

    def delete(self, username: str, session_id: str) -> bool:
        """End a session (its refresh rows die with it); False if there was none."""


class DynamoDBSessionRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def create(
        self,
        session: Session,
        token: RefreshToken,
        *,
        profile: SideWrite | None = None,
        along: Sequence[SideWrite] = (),
    ) -> None:
        check = {
            "ConditionCheck": {
                "Key": user_key(session.username),
                "ConditionExpression": PROFILE_HOLDS,
                "ExpressionAttributeValues": {":id": session.user_id},
            }
        }
        failed = transact(
            self._table,
            [
                # A login racing with the account's deletion opens nothing: the session is
                # written only while the profile (with this id) exists.
                check if profile is None else profile.transact_item(),
                {"Put": self._new(_session_item(session))},
                {"Put": self._new(_refresh_item(session, token))},
            ],
            along,
        )
        if failed == 0:
            raise OwnerMissing(session.username) if profile is None else profile.refusal()
        if failed is not None:
            raise ConcurrentChange("a session id or refresh token was taken")

    def get(self, username: str, session_id: str) -> Session | None:
        item = self._table.get_item(Key=session_key(username, session_id), ConsistentRead=True).get(
            "Item"
        )
        return None if item is None else _session(item)

    def with_profile(self, username: str, session_id: str) -> tuple[User | None, Session | None]:
        profile_key, key = user_key(username), session_key(username, session_id)
        rows = batch_get(self._table, [profile_key, key])
        profile, session = rows.get(row_key(profile_key)), rows.get(row_key(key))
        return (
            None if profile is None else user_from_item(profile),
            None if session is None else _session(session),
        )

    def refresh_record(self, token: RefreshToken) -> RefreshRecord | None:
        item = self._table.get_item(
            Key=refresh_key(token.username, token.digest), ConsistentRead=True
        ).get("Item")
        return None if item is None else _refresh_record(item)

    def refresh_state(
        self, token: RefreshToken
    ) -> tuple[RefreshRecord | None, Session | None, User | None]:
        record = self.refresh_record(token)
        if record is None:
            return None, None, None
        profile, session = self.with_profile(token.username, record.session_id)
        return record, session, profile

    def rotate(
        self,
        session: Session,
        *,
        used: RefreshToken,
        new: RefreshToken,
        now: int,
        idle_expires_at: int,
        along: Sequence[SideWrite] = (),
    ) -> bool:
        """The conditional consume of ``used`` is the single point where parallel refreshes are
        decided; the successor, the session's touch and the profile's check go with it."""
        failed = transact(
            self._table,
            [
                {
                    "Update": {
                        "Key": refresh_key(used.username, used.digest),
                        "UpdateExpression": "SET #state = :consumed, consumedAt = :now",
                        "ConditionExpression": "#state = :active",
                        "ExpressionAttributeNames": {"#state": "state"},
                        "ExpressionAttributeValues": {
                            ":consumed": "consumed",
                            ":active": "active",
                            ":now": now,
                        },
                    }
                },
                {"Put": self._new(_refresh_item(session, new))},
                {
                    # The condition keeps a concurrent logout from being undone by this update.
                    "Update": {
                        "Key": session_key(session.username, session.session_id),
                        "UpdateExpression": "SET lastUsedAt = :now, idleExpiresAt = :idle",
                        "ConditionExpression": "attribute_exists(#pk)",
                        "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
                        "ExpressionAttributeValues": {":now": now, ":idle": idle_expires_at},
                    }
                },
                {
                    # A disable, a logout-everywhere or a deletion racing with this refresh.
                    "ConditionCheck": {
                        "Key": user_key(session.username),
                        "ConditionExpression": (
                            "userId = :id AND (attribute_not_exists(disabled) OR disabled = :no)"
                            " AND (attribute_not_exists(tokenVersion) OR tokenVersion <= :ver)"
                        ),
                        "ExpressionAttributeValues": {
                            ":id": session.user_id,
                            ":no": False,
                            ":ver": session.token_version,
                        },
                    }
                },
            ],
            along,
        )
        if failed == 0:
            return False
        if failed == 2:
            raise InvalidRefreshToken("the session has ended")
        if failed == 3:
            raise SessionRevoked(session.session_id)
        if failed is not None:
            raise ConcurrentChange("the successor's refresh token was taken")
        return True

    def all(self, username: str) -> list[Session]:
        sessions: list[Session] = []
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username))
            & Key(SORT_KEY).begins_with(SESSION),
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**query)
            sessions += [_session(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sessions
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete(self, username: str, session_id: str) -> bool:
        response = self._table.delete_item(
            Key=session_key(username, session_id), ReturnValues="ALL_OLD"
        )
        return "Attributes" in response

    def _new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
        }


class InMemorySessionRepository:
    """The DynamoDB repository's twin; profiles come from the user repository it is given."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users
        # Keyed by (username, session id) and (username, digest), as the rows are.
        self._sessions: dict[tuple[str, str], Session] = {}
        self._refresh: dict[tuple[str, str], RefreshRecord] = {}
        self._lock = threading.RLock()

    def create(
        self,
        session: Session,
        token: RefreshToken,
        *,
        profile: SideWrite | None = None,
        along: Sequence[SideWrite] = (),
    ) -> None:
        with self._lock:
            holder = self._users.get(session.username)
            if holder is None or holder.user_id != session.user_id:
                raise OwnerMissing(session.username) if profile is None else profile.refusal()
            for side in [*([] if profile is None else [profile]), *along]:
                side.apply()
            self._sessions[(session.username, session.session_id)] = session
            self._refresh[(token.username, token.digest)] = RefreshRecord(
                session_id=session.session_id, state="active"
            )

    def get(self, username: str, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get((username, session_id))

    def with_profile(self, username: str, session_id: str) -> tuple[User | None, Session | None]:
        with self._lock:
            return self._users.get(username), self._sessions.get((username, session_id))

    def refresh_record(self, token: RefreshToken) -> RefreshRecord | None:
        with self._lock:
            return self._refresh.get((token.username, token.digest))

    def refresh_state(
        self, token: RefreshToken
    ) -> tuple[RefreshRecord | None, Session | None, User | None]:
        with self._lock:
            record = self.refresh_record(token)
            if record is None:
                return None, None, None
            profile, session = self.with_profile(token.username, record.session_id)
            return record, session, profile

    def rotate(
        self,
        session: Session,
        *,
        used: RefreshToken,
        new: RefreshToken,
        now: int,
        idle_expires_at: int,
        along: Sequence[SideWrite] = (),
    ) -> bool:
        with self._lock:
            record = self._refresh.get((used.username, used.digest))
            if record is None or record.state != "active":
                return False
            key = (session.username, session.session_id)
            current = self._sessions.get(key)
            if current is None:
                raise InvalidRefreshToken("the session has ended")
            profile = self._users.get(session.username)
            if (
                profile is None
                or profile.user_id != session.user_id
                or profile.disabled
                or profile.token_version > session.token_version
            ):
                raise SessionRevoked(session.session_id)
            for side in along:
                side.apply()
            self._refresh[(used.username, used.digest)] = replace(
                record, state="consumed", consumed_at=now
            )
            self._refresh[(new.username, new.digest)] = RefreshRecord(
                session_id=session.session_id, state="active"
            )
            self._sessions[key] = replace(
                current, last_used_at=now, idle_expires_at=idle_expires_at
            )
            return True

    def all(self, username: str) -> list[Session]:
        with self._lock:
            return [
                session
                for (owner, _), session in sorted(self._sessions.items())
                if owner == username
            ]

    def delete(self, username: str, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop((username, session_id), None) is not None

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's sessions and refresh tokens (only those stamped ``stamped``, if
        given: a refresh token is its session's); how many rows went."""
        with self._lock:
            keys = [
                key
                for key, session in self._sessions.items()
                if key[0] == username and stamped in (None, session.user_id)
            ]
            tokens = [
                key
                for key, record in self._refresh.items()
                if key[0] == username
                and stamped in (None, self._stamp(username, record.session_id))
            ]
            for key in keys:
                del self._sessions[key]
            for key in tokens:
                del self._refresh[key]
            return len(keys) + len(tokens)

    def _stamp(self, username: str, session_id: str) -> str | None:
        # Stamped in the table; here its session's id (None once the session has ended).
        session = self._sessions.get((username, session_id))
        return None if session is None else session.user_id


class Sessions:
    """Starts sessions, rotates their refresh tokens, and detects replayed ones."""

    def __init__(
        self,
        repository: SessionRepository,
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

    def new(
        self, owner: Owner, *, token_version: int, user_agent: str
    ) -> tuple[Session, RefreshToken]:
        """A session and its first refresh token, not stored yet (``create``)."""
        now = self._now()
        username = owner.username
        session = Session(
            username=username,
            user_id=owner.user_id,
            session_id=secrets.token_urlsafe(16),
            user_agent=user_agent[:_USER_AGENT_CHARS],
            created_at=now,
            last_used_at=now,
            expires_at=now + self._absolute,
            idle_expires_at=now + min(self._idle, self._absolute),
            token_version=token_version,
        )
        return session, RefreshToken.new(username)

    def create(
        self,
        session: Session,
        token: RefreshToken,
        *,
        profile: SideWrite | None = None,
        along: Sequence[SideWrite] = (),
    ) -> None:
        """Store a new session (see ``SessionRepository.create``)."""
        self._repository.create(session, token, profile=profile, along=along)

    def start(
        self, owner: Owner, *, token_version: int, user_agent: str
    ) -> tuple[Session, RefreshToken]:
        session, token = self.new(owner, token_version=token_version, user_agent=user_agent)
        self._repository.create(session, token)
        return session, token

    def rotate(self, raw_token: str, *, along: Sequence[SideWrite] = ()) -> Rotation:
        """Consume a refresh token and issue its successor in the same session, if the session is
        live and its account still holds it (not disabled, not logged out everywhere since).

        The rows ``along`` (the request's per-IP hit) are written with the rotation, or alone
        when the request ends otherwise, so that every request writes them once.
        """
        try:
            token = RefreshToken.parse(raw_token)
        except ValueError:
            apply_alone(along)
            raise InvalidRefreshToken("malformed refresh token") from None
        record, session, user = self._repository.refresh_state(token)
        if record is None or session is None:
            apply_alone(along)
            raise InvalidRefreshToken("unknown refresh token, or its session has ended")
        now = self._now()
        if now >= session.expires_at or now >= session.idle_expires_at:
            self._repository.delete(token.username, session.session_id)
            apply_alone(along)
            raise InvalidRefreshToken("the session has expired")
        if (
            user is None
            or user.user_id != session.user_id
            or user.disabled
            or session.token_version < user.token_version
        ):
            self._revoke(session, along)
        if record.state == "active":
            successor = RefreshToken.new(token.username)
            idle_expires_at = min(now + self._idle, session.expires_at)
            try:
                rotated = self._repository.rotate(
                    session,
                    used=token,
                    new=successor,
                    now=now,
                    idle_expires_at=idle_expires_at,
                    along=along,
                )
            except SessionRevoked:
                self._revoke(session, along)
            except InvalidRefreshToken:
                apply_alone(along)
                raise
            if rotated:
                return Rotation(session=session, token=successor, user=user)
            record = self._repository.refresh_record(token) or record
        apply_alone(along)
        consumed_at = record.consumed_at
        if consumed_at is not None and now - consumed_at <= self._grace:
            # A parallel refresh (another tab) used this token a moment ago: let this one
            # through without a new refresh token; the browser already holds the winner's.
            return Rotation(session=session, token=None, user=user)
        self._repository.delete(token.username, session.session_id)
        raise RefreshTokenReused(session)

    def _revoke(self, session: Session, along: Sequence[SideWrite]) -> NoReturn:
        self._repository.delete(session.username, session.session_id)
        apply_alone(along)
        raise InvalidRefreshToken("the session was revoked")

    def end(self, owner: Owner, session_id: str) -> bool:
        """End a session of this account; False if it has none with this id."""
        session = self._repository.get(owner.username, session_id)
        if session is None or session.user_id != owner.user_id:
            return False
        return self._repository.delete(owner.username, session_id)

    def live_with_profile(
        self, username: str, session_id: str
    ) -> tuple[User | None, Session | None]:
        """The profile and the session unless it has expired, in one read."""
        profile, session = self._repository.with_profile(username, session_id)
        now = self._now()
        if session is not None and now >= min(session.expires_at, session.idle_expires_at):
            session = None
        return profile, session

    def active(self, owner: Owner, *, token_version: int) -> list[Session]:
        """The account's live sessions, newest first."""
        now = self._now()
        live = [
            session
            for session in self._repository.all(owner.username)
            if session.user_id == owner.user_id
            and now < session.expires_at
            and now < session.idle_expires_at
            and session.token_version >= token_version
        ]
        return sorted(live, key=lambda session: session.created_at, reverse=True)

    def end_all(self, username: str) -> None:
        for session in self._repository.all(username):
            self._repository.delete(username, session.session_id)

    def end_others(self, username: str, keep: str) -> None:
        """End every session under the name but ``keep`` (the caller's own)."""
        for session in self._repository.all(username):
            if session.session_id != keep:
                self._repository.delete(username, session.session_id)

    def _now(self) -> int:
        return int(self._clock().timestamp())


def _refresh_record(item: dict[str, Any]) -> RefreshRecord:
    consumed = item.get("consumedAt")
    return RefreshRecord(
        session_id=str(item["sessionId"]),
        state="consumed" if item["state"] == "consumed" else "active",
        consumed_at=None if consumed is None else int(str(consumed)),
    )


def _session_item(session: Session) -> dict[str, Any]:
    return {
        **session_key(session.username, session.session_id),
        "sessionId": session.session_id,
        "userId": session.user_id,
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
        **refresh_key(token.username, token.digest),
        "sessionId": session.session_id,
        "userId": session.user_id,
        "state": "active",
        TTL_ATTRIBUTE: session.expires_at,
    }


def _session(item: dict[str, Any]) -> Session:
    return Session(
        username=username_of(str(item[PARTITION_KEY])),
        user_id=str(item.get("userId", "")),
        session_id=str(item["sessionId"]),
        user_agent=str(item.get("userAgent", "")),
        created_at=int(item["createdAt"]),
        last_used_at=int(item["lastUsedAt"]),
        expires_at=int(item[TTL_ATTRIBUTE]),
        idle_expires_at=int(item["idleExpiresAt"]),
        token_version=int(item.get("tokenVersion", 0)),
    )


# The row parser, for the table's stream (chalicelib/changes.py).
session_from_row = _session
