"""What administrators do to accounts: list, create, change access, delete.

An account marked deleted counts as gone here too: it is not listed, and reading or changing it
says 404 (``users.py``); its name stays taken until the purge has finished.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import Forbidden
from chalicelib.events import Client, Page, SecurityEvents
from chalicelib.identity import Owner, new_user_id
from chalicelib.users import User, UserNotFound, UserPage, UserRepository

if TYPE_CHECKING:
    from chalicelib.accounts import Accounts


class AdminRequired(Forbidden):
    """The caller is not, or no longer, an enabled administrator."""

    message = "Administrator role required"


class Administration:
    def __init__(
        self,
        users: UserRepository,
        *,
        accounts: Accounts,
        events: SecurityEvents,
        clock: Clock = utc_now,
    ) -> None:
        self._users = users
        self._accounts = accounts
        self._events = events
        self._clock = clock

    def require_admin(self, owner: Owner) -> None:
        """Refuse unless ``owner`` is, as stored now, an enabled administrator (and the name
        still its)."""
        user = self._users.get(owner.username)  # a consistent read
        if user is None or user.user_id != owner.user_id or user.disabled or user.role != "admin":
            raise AdminRequired(owner.username)

    def list_users(self, *, limit: int, cursor: str | None) -> UserPage:
        """Every profile, in no particular order; a scan, so meant for administrators only."""
        return self._users.list(limit=limit, cursor=cursor)

    def get(self, username: str) -> User:
        user = self._users.get(username)
        if user is None:
            raise UserNotFound(username)
        return user

    def events(self, username: str, *, limit: int, cursor: str | None) -> Page:
        """The security events of whoever holds ``username`` now (none before its first use)."""
        user = self.get(username)
        if user.user_id is None:
            return Page([], None)
        return self._events.list(user.owner, limit=limit, cursor=cursor)

    def create_user(
        self, username: str, password: str, *, role: str, admin: Owner, client: Client
    ) -> User:
        user = self._accounts.register(username, password, client, role=role)
        self._events.record(admin, "admin_create_user", client, target=username, role=role)
        return user

    def update_user(
        self,
        username: str,
        *,
        role: str | None,
        disabled: bool | None,
        admin: Owner,
        client: Client,
    ) -> User:
        user = self._users.set_access(
            username, role=role, disabled=disabled, updated_at=iso(self._clock())
        )
        changes = {k: v for k, v in {"role": role, "disabled": disabled}.items() if v is not None}
        self._events.record(admin, "admin_update_user", client, target=username, **changes)
        return user

    def delete_user(self, username: str, *, admin: Owner, client: Client) -> None:
        """Mark the account deleted, for the purge worker to finish (``chalicelib/deletion.py``);
        an account marked already, or gone, is the same success."""
        user = self._users.get(username, marked=True)
        if user is not None and user.deleted_at is None:
            # UserNotFound: purged meanwhile.
            with suppress(UserNotFound):
                if user.user_id is None:
                    # A row of the original system never used: the purge is bound to an id.
                    user = self._users.assign_id(username, new_user_id(), current=user)
                self._users.mark_deleted(user.owner, deleted_at=iso(self._clock()))
        self._events.record(admin, "admin_delete_user", client, target=username)
