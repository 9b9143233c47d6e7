"""The account use cases: sign up, log in (with a second factor if the account has one),
refresh, log out, change password, turn two-factor authentication on and off, read a profile,
list the live sessions, delete the account."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NoReturn

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import Forbidden, NotFound, Unauthenticated
from chalicelib.events import Client, Page, SecurityEvents
from chalicelib.identity import Owner, new_user_id
from chalicelib.keys import SideWrite, apply_alone
from chalicelib.limits import KnownDevices, LoginThrottle, RateHit
from chalicelib.mfa import ChallengeExpired, CodeRejected, InvalidCode, Mfa, parse_challenge
from chalicelib.passwords import ScryptHasher
from chalicelib.policy import check_new_password
from chalicelib.sessions import (
    InvalidRefreshToken,
    RefreshToken,
    RefreshTokenReused,
    Session,
    Sessions,
)
from chalicelib.tokens import Claims, IssuedToken, TokenService
from chalicelib.users import (
    DEFAULT_ROLE,
    HashChanged,
    HashUpgrade,
    User,
    UsernameTaken,
    UserNotFound,
    UserRepository,
)

logger = logging.getLogger(__name__)


class InvalidCredentials(Unauthenticated):
    """The username does not exist or the password is wrong (deliberately not told apart)."""

    message = "Invalid username or password"


class AccountDisabled(Forbidden):
    """The account has been disabled by an administrator."""

    message = "Account is disabled"


class TokenRevoked(Exception):
    """The access token was issued before a logout-everywhere, password change or disable."""


class SessionNotFound(NotFound):
    """The caller has no live session with this id."""

    message = "Session not found"


@dataclass(frozen=True)
class SignedIn:
    """What a login or refresh hands out; ``refresh`` is None inside the refresh grace window;
    ``device`` is the known-device cookie a login hands out (``KnownDevices``)."""

    user: User
    session: Session
    access: IssuedToken
    refresh: RefreshToken | None
    refresh_expires_in: int
    device: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MfaChallenge:
    """A login whose password was right, waiting for its second factor: no session yet."""

    user: User
    challenge: str = field(repr=False)


class Accounts:
    def __init__(
        self,
        users: UserRepository,
        *,
        hasher: ScryptHasher,
        tokens: TokenService,
        sessions: Sessions,
        throttle: LoginThrottle,
        events: SecurityEvents,
        mfa: Mfa,
        devices: KnownDevices | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._devices = devices
        self._mfa = mfa
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._sessions = sessions
        self._throttle = throttle
        self._events = events
        self._clock = clock

    def register(
        self,
        username: str,
        password: str,
        client: Client,
        *,
        role: str = DEFAULT_ROLE,
        email: str | None = None,
        rate: RateHit | None = None,
    ) -> User:
        """A new account (its ``email`` unverified until the mailed link is used). The profile,
        the name's claim, the ``signup`` event and the request's per-IP hit (``rate``) are one
        write."""
        check_new_password(username, password)
        now = iso(self._clock())
        user = User(
            username=username,
            user_id=new_user_id(),
            password_hash=self._hasher.hash(password),
            created_at=now,
            updated_at=now,
            role=role,
            email=email,
        )
        entry = self._events.entry(user.owner, "signup", client)
        try:
            self._users.add(user, along=[*_rated(rate), *self._events.along(entry)])
        except UsernameTaken:
            apply_alone(_rated(rate))
            raise
        self._events.written(entry)
        return user

    def login(
        self,
        login: str,
        password: str,
        client: Client,
        *,
        rate: RateHit | None = None,
        device: str | None = None,
    ) -> SignedIn | MfaChallenge:
        """``login`` is the name as stored, or differing only in case. An account with a second
        factor gets a challenge for ``login_mfa`` instead of a session. ``device`` is the
        client's known-device cookie, if any; ``rate`` the request's per-IP hit.

        Three round trips whatever the outcome: one read (profile, name claim, failure rows),
        one write counting the attempt and the hit, then the session's transaction, or the
        failure's event. A name in another case than stored reads once more, a row of the
        original system writes its id once, on its first use.
        """
        reads = self._throttle.reads(login, client.ip)
        user, failures = self._users.find_with(login, reads)
        if user is not None and user.user_id is None:
            # A row of the original system, used for the first time: it gets its id now.
            user = self._users.assign_id(user.username, new_user_id(), current=user)
        known = self._devices is not None and self._devices.recognises(
            device, None if user is None else user.user_id
        )
        plan = self._throttle.plan(
            login, client.ip, known_device=known, read=failures, along=_rated(rate)
        )
        stored = None if user is None else user.password_hash
        # scrypt runs while the attempt is being counted (it releases the GIL); its answer is
        # used only once the count is written, and an attempt refused meanwhile waits for it
        # and discards it, so counting still comes before checking.
        check = _Verification(self._hasher, password, stored)
        try:
            reservation = self._throttle.count(plan, along=_rated(rate))
        finally:
            verified = check.result()
        if user is None:
            # The same work as a wrong password (a dummy verification), so response time does
            # not reveal who has an account.
            self._failed(login, client, lock=reservation.lock)
        if not verified:
            self._failed(user.owner, client, lock=reservation.lock)
        cleared = self._throttle.cleared(login, client.ip, reservation)
        if user.disabled:
            refused = self._events.entry(user.owner, "login_refused_disabled", client)
            self._events.record_all([refused], along=cleared)
            raise AccountDisabled(user.username)
        upgrade = None
        if self._hasher.needs_rehash(user.password_hash):
            upgrade = HashUpgrade(
                self._users,
                user.owner,
                old=user.password_hash,
                new=self._hasher.hash(password),
                updated_at=iso(self._clock()),
            )
        if user.mfa_enabled:
            apply_alone(cleared)
            if upgrade is not None:
                self._upgrade(upgrade)
            return MfaChallenge(user, self._mfa.challenge(user.owner))
        return self._logged_in(user, client, upgrade=upgrade, along=cleared)

    def login_mfa(self, challenge: str, code: str, client: Client) -> SignedIn:
        """The second step of a login: a current TOTP code or an unused recovery code for the
        challenge the password gave. Wrong codes count toward the account's back-off."""
        username = parse_challenge(challenge).username
        reservation = self._throttle.reserve(username, client.ip)
        try:
            owner = self._mfa.redeem(challenge, code)
        except InvalidCode as exc:
            self._record_failure(exc.owner, client, lock=reservation.lock, kind="mfa_failure")
            raise
        user = self._users.get(owner.username)
        if user is None or user.user_id != owner.user_id:
            raise ChallengeExpired("the account is gone")
        cleared = self._throttle.cleared(username, client.ip, reservation)
        if user.disabled:
            refused = self._events.entry(owner, "login_refused_disabled", client)
            self._events.record_all([refused], along=cleared)
            raise AccountDisabled(user.username)
        return self._logged_in(user, client, along=cleared)

    def enable_mfa(self, owner: Owner, code: str, client: Client, *, keep: str) -> list[str]:
        """Turn the pending TOTP factor on with a first code; end every session but ``keep``.
        The recovery codes are returned now and never again."""
        self.profile(owner)
        codes = self._mfa.confirm(owner, code)
        self._sessions.end_others(owner.username, keep)
        # The mail worker sends the owner a notice of this event (chalicelib/notices.py).
        self._events.record(owner, "mfa_enabled", client)
        return codes

    def disable_mfa(
        self, owner: Owner, password: str, code: str, client: Client, *, keep: str
    ) -> None:
        """Turn the second factor off, given the password and a code (TOTP or recovery); end
        every session but ``keep``. A wrong password or code counts toward the back-off."""
        lock = self._throttle.reserve(owner.username, client.ip).lock
        user = self.profile(owner)
        if not self._hasher.verify(password, user.password_hash):
            self._failed(owner, client, lock=lock, kind="mfa_disable_failure")
        try:
            self._mfa.disable(owner, code)
        except CodeRejected:
            self._record_failure(owner, client, lock=lock, kind="mfa_failure")
            raise
        self._throttle.succeeded(owner.username, client.ip)
        self._sessions.end_others(owner.username, keep)
        self._events.record(owner, "mfa_disabled", client)

    def refresh(self, raw_token: str, client: Client, *, rate: RateHit | None = None) -> SignedIn:
        """Rotate the refresh token; ``rate`` (the request's per-IP hit) rides with the rotation.
        Three round trips (``Sessions.rotate``)."""
        try:
            rotation = self._sessions.rotate(raw_token, along=_rated(rate))
        except RefreshTokenReused as exc:
            owner = Owner(exc.username, exc.user_id)
            self._events.record(owner, "refresh_reuse", client, sessionId=exc.session_id)
            raise InvalidRefreshToken("refresh token reused; the session was revoked") from exc
        return self._signed_in(rotation.user, rotation.session, rotation.token)

    def authorize(self, claims: Claims) -> User:
        """The current profile behind a verified access token, unless revoked since issue:
        the account deleted (its name perhaps taken again) or disabled, every session ended
        since, or this session ended."""
        user, session = self._sessions.live_with_profile(claims.username, claims.session_id)
        if user is None or session is None or user.user_id != claims.subject:
            raise TokenRevoked(claims.username)
        if user.deleted_at is not None:
            raise TokenRevoked(claims.username)
        if session.user_id != claims.subject:
            raise TokenRevoked(claims.username)
        if user.disabled or claims.token_version < user.token_version:
            raise TokenRevoked(claims.username)
        return user

    def logout(self, owner: Owner, session_id: str) -> None:
        self.end_session(owner, session_id, missing_ok=True)

    def logout_all(self, owner: Owner, client: Client) -> None:
        self._users.bump_token_version(owner, updated_at=iso(self._clock()))
        self._sessions.end_all(owner.username)
        self._events.record(owner, "logout_all", client)

    def confirm_password(self, owner: Owner, password: str, client: Client, *, kind: str) -> User:
        """The profile, once ``password`` is its password; a wrong one counts like a failed
        login (``kind`` names it in the log) and raises ``InvalidCredentials``."""
        lock = self._throttle.reserve(owner.username, client.ip).lock
        user = self.profile(owner)
        if not self._hasher.verify(password, user.password_hash):
            self._failed(owner, client, lock=lock, kind=kind)
        self._throttle.succeeded(owner.username, client.ip)
        return user

    def change_password(self, owner: Owner, current: str, new: str, client: Client) -> SignedIn:
        """Replace the password, end every session and token, and start a fresh session."""
        user = self.confirm_password(owner, current, client, kind="password_change_failure")
        user = self.set_password(user, new, client, event="password_change")
        return self._start_session(user, client)

    def set_password(self, user: User, new: str, client: Client, *, event: str) -> User:
        """Replace the password (the policy applies) and end every session and access token."""
        owner = user.owner
        check_new_password(owner.username, new)
        new_hash = self._hasher.hash(new)
        version = self._users.change_password(
            owner, new_hash=new_hash, updated_at=iso(self._clock())
        )
        self._sessions.end_all(owner.username)
        self._events.record(owner, event, client)
        return replace(user, password_hash=new_hash, token_version=version)

    def delete_account(self, owner: Owner, password: str, client: Client) -> None:
        """Delete the caller's own account, given its password: mark it deleted (it is gone for
        every use at once) for the purge worker to finish (``chalicelib/deletion.py``). An
        account marked already, or gone, is the same success."""
        lock = self._throttle.reserve(owner.username, client.ip).lock
        user = self._users.get(owner.username, marked=True)
        if user is None or user.user_id != owner.user_id or user.deleted_at is not None:
            # Marked or purged already: only a token that the gateway's authorizer cache still
            # honours gets here. Nothing is written into the partition being purged.
            return
        if not self._hasher.verify(password, user.password_hash):
            self._failed(owner, client, lock=lock, kind="account_delete_failure")
        self._throttle.succeeded(owner.username, client.ip)
        try:
            self._users.mark_deleted(owner, deleted_at=iso(self._clock()))
        except UserNotFound:
            return  # purged meanwhile
        # The purge takes the partition, security log included: log the deletion only.
        logger.info("account deleted by its owner", extra={"fields": {"username": owner.username}})

    def active_sessions(self, user: User) -> list[Session]:
        return self._sessions.active(user.owner, token_version=user.token_version)

    def list_sessions(self, owner: Owner) -> list[Session]:
        """The account's live sessions, newest first; ``UserNotFound`` if it is gone."""
        return self.active_sessions(self.profile(owner))

    def end_session(self, owner: Owner, session_id: str, *, missing_ok: bool = False) -> None:
        if not self._sessions.end(owner, session_id) and not missing_ok:
            raise SessionNotFound(session_id)

    def events(self, owner: Owner, *, limit: int, cursor: str | None) -> Page:
        return self._events.list(owner, limit=limit, cursor=cursor)

    def profile(self, owner: Owner) -> User:
        """The account's profile; ``UserNotFound`` if it is gone, even if its name is taken."""
        user = self._users.get(owner.username)
        if user is None or user.user_id != owner.user_id:
            raise UserNotFound(owner.username)
        return user

    def _failed(
        self, account: Owner | str, client: Client, *, lock: int, kind: str = "login_failure"
    ) -> NoReturn:
        # Recorded whether or not the account exists: the same writes on both paths keep
        # response times from telling them apart.
        self._record_failure(account, client, lock=lock, kind=kind)
        raise InvalidCredentials

    def _record_failure(
        self, account: Owner | str, client: Client, *, lock: int, kind: str
    ) -> None:
        entries = [self._events.entry(account, kind, client)]
        if lock:
            entries.append(self._events.entry(account, "lockout", client, seconds=lock))
        self._events.record_all(entries)

    def _logged_in(
        self,
        user: User,
        client: Client,
        *,
        upgrade: HashUpgrade | None = None,
        along: Sequence[SideWrite] = (),
    ) -> SignedIn:
        """A new session, its refresh token, the ``login`` event, the rows ``along`` and the
        rehash (``upgrade``, else a check that the profile holds the id): one transaction. The
        device cookie comes with it."""
        owner = user.owner
        session, refresh = self._sessions.new(
            owner, token_version=user.token_version, user_agent=client.user_agent
        )
        entry = self._events.entry(owner, "login", client, sessionId=session.session_id)
        sides = [*self._events.along(entry), *along]
        try:
            self._sessions.create(session, refresh, profile=upgrade, along=sides)
        except HashChanged:
            # The password changed since it was read (or the account went): keep theirs.
            logger.info("password hash upgrade skipped")
            self._sessions.create(session, refresh, along=sides)
        self._events.written(entry)
        device = None if self._devices is None else self._devices.issue(owner.user_id)
        return replace(self._signed_in(user, session, refresh), device=device)

    def _start_session(self, user: User, client: Client) -> SignedIn:
        session, refresh = self._sessions.start(
            user.owner, token_version=user.token_version, user_agent=client.user_agent
        )
        return self._signed_in(user, session, refresh)

    def _signed_in(self, user: User, session: Session, refresh: RefreshToken | None) -> SignedIn:
        access = self._tokens.issue(
            user_id=session.user_id,
            username=user.username,
            role=user.role,
            token_version=user.token_version,
            session_id=session.session_id,
        )
        remaining = session.expires_at - int(self._clock().timestamp())
        return SignedIn(user, session, access, refresh, refresh_expires_in=remaining)

    def _upgrade(self, upgrade: HashUpgrade) -> None:
        try:
            upgrade.apply()
        except HashChanged:
            # The hash changed under us (a concurrent password change): keep theirs.
            logger.info("password hash upgrade skipped")


class _Verification:
    """A password verification (a dummy one without a ``stored`` hash) on a thread of its own."""

    def __init__(self, hasher: ScryptHasher, password: str, stored: str | None) -> None:
        self._verified = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(hasher, password, stored))
        self._thread.start()

    def _run(self, hasher: ScryptHasher, password: str, stored: str | None) -> None:
        try:
            if stored is None:
                hasher.verify_dummy(password)
            else:
                self._verified = hasher.verify(password, stored)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as it is
            self._failure = exc

    def result(self) -> bool:
        """Whether the password matched; what the verification raised is raised here."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        return self._verified


def _rated(rate: RateHit | None) -> list[SideWrite]:
    return [] if rate is None else [rate]
