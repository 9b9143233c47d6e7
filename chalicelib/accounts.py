"""The account use cases: sign up, log in, read a profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.passwords import ScryptHasher
from chalicelib.tokens import IssuedToken, TokenService
from chalicelib.users import User, UserRepository

logger = logging.getLogger(__name__)


class InvalidCredentials(Exception):
    """The username does not exist or the password is wrong (deliberately not told apart)."""


class UserNotFound(Exception):
    """No user has this username."""


@dataclass(frozen=True)
class LoginResult:
    user: User
    token: IssuedToken


class Accounts:
    def __init__(
        self,
        users: UserRepository,
        *,
        hasher: ScryptHasher,
        tokens: TokenService,
        clock: Clock = utc_now,
    ) -> None:
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._clock = clock

    def register(self, username: str, password: str) -> User:
        now = iso(self._clock())
        user = User(
            username=username,
            password_hash=self._hasher.hash(password),
            created_at=now,
            updated_at=now,
        )
        self._users.add(user)
        return user

    def login(self, username: str, password: str) -> LoginResult:
        user = self._users.get(username)
        if user is None:
            # Same work as a wrong password, so response time does not reveal who has an account.
            self._hasher.verify_dummy(password)
            raise InvalidCredentials
        if not self._hasher.verify(password, user.password_hash):
            if self._hasher.needs_rehash(user.password_hash):
                # A cheaper legacy hash fails fast; pad to the current cost so timing does not
                # single out the accounts that still have one.
                self._hasher.verify_dummy(password)
            raise InvalidCredentials
        if self._hasher.needs_rehash(user.password_hash):
            self._upgrade_hash(user, password)
        return LoginResult(
            user=user, token=self._tokens.issue(username=user.username, role=user.role)
        )

    def profile(self, username: str) -> User:
        user = self._users.get(username)
        if user is None:
            raise UserNotFound(username)
        return user

    def _upgrade_hash(self, user: User, password: str) -> None:
        upgraded = self._users.replace_password_hash(
            user.username,
            old=user.password_hash,
            new=self._hasher.hash(password),
            updated_at=iso(self._clock()),
        )
        # False means the hash changed under us (a concurrent password change): keep theirs.
        logger.info("password hash upgrade %s", "done" if upgraded else "skipped")
