"""The administration service over the in-memory twins: access changes, listing, deletion."""

from __future__ import annotations

import pytest

from chalicelib.administration import Administration, AdminRequired
from chalicelib.deletion import AccountPurge
from chalicelib.events import Client, SecurityEvents
from chalicelib.identity import Owner
from chalicelib.stores import Stores
from chalicelib.users import UsernameTaken, UserNotFound
from tests.conftest import FakeClock, add_legacy, owner_of, without_mfa
from tests.test_accounts import PASSWORD, build

CLIENT = Client(ip="203.0.113.9", user_agent="pytest")
ROOT = owner_of("root")


@pytest.fixture
def memory() -> Stores:
    return Stores.in_memory()


@pytest.fixture
def administration(memory: Stores, clock: FakeClock) -> Administration:
    return Administration(
        memory.users,
        accounts=build(memory, clock),
        events=SecurityEvents(memory.events, clock=clock),
        clock=clock,
    )


def kinds(memory: Stores, owner: Owner) -> list[str]:
    return [event.kind for event in memory.events.list(owner, limit=50, cursor=None).events]


def test_created_users_are_listed_and_read(administration: Administration, memory: Stores) -> None:
    for name in ("carol", "dave", "erin"):
        administration.create_user(name, PASSWORD, role="user", admin=ROOT, client=CLIENT)
    page = administration.list_users(limit=2, cursor=None)
    assert page.cursor is not None
    rest = administration.list_users(limit=2, cursor=page.cursor)
    assert rest.cursor is None
    assert sorted(user.username for user in page.users + rest.users) == ["carol", "dave", "erin"]
    assert administration.get("dave").role == "user"
    with pytest.raises(UserNotFound):
        administration.get("nobody")
    assert kinds(memory, ROOT) == ["admin_create_user"] * 3


def test_access_changes_are_applied_and_logged(
    administration: Administration, memory: Stores
) -> None:
    administration.create_user("carol", PASSWORD, role="user", admin=ROOT, client=CLIENT)
    changed = administration.update_user(
        "carol", role="admin", disabled=True, admin=ROOT, client=CLIENT
    )
    assert (changed.role, changed.disabled) == ("admin", True)
    assert administration.get("carol") == changed
    with pytest.raises(UserNotFound):
        administration.update_user("ghost", role="admin", disabled=None, admin=ROOT, client=CLIENT)
    assert kinds(memory, ROOT).count("admin_update_user") == 1


def test_deleting_a_user_takes_their_data_and_is_logged(
    administration: Administration, memory: Stores, clock: FakeClock
) -> None:
    administration.create_user("carol", PASSWORD, role="user", admin=ROOT, client=CLIENT)
    signed_in = without_mfa(build(memory, clock).login("carol", PASSWORD, CLIENT))
    administration.delete_user("carol", admin=ROOT, client=CLIENT)
    # Marked: gone for administration at once (not listed, 404), its name still taken.
    with pytest.raises(UserNotFound):
        administration.get("carol")
    assert administration.list_users(limit=10, cursor=None).users == []
    with pytest.raises(UserNotFound):
        administration.update_user("carol", role="admin", disabled=None, admin=ROOT, client=CLIENT)
    with pytest.raises(UsernameTaken):
        administration.create_user("Carol", PASSWORD, role="user", admin=ROOT, client=CLIENT)
    assert "admin_delete_user" in kinds(memory, ROOT)
    administration.delete_user("carol", admin=ROOT, client=CLIENT)  # idempotent
    assert kinds(memory, ROOT).count("admin_delete_user") == 2
    # The purge worker's part.
    AccountPurge(memory.users, memory.partitions).purge(signed_in.user.owner)
    assert memory.sessions.get("carol", signed_in.session.session_id) is None
    assert kinds(memory, signed_in.user.owner) == []
    assert memory.users.get("carol", marked=True) is None
    administration.delete_user("carol", admin=ROOT, client=CLIENT)  # still the same success
    administration.create_user("Carol", PASSWORD, role="user", admin=ROOT, client=CLIENT)


def test_deleting_a_row_of_the_original_system_never_used_gives_it_an_id_first(
    administration: Administration, memory: Stores
) -> None:
    add_legacy(memory.users, "legacy")
    administration.delete_user("legacy", admin=ROOT, client=CLIENT)
    stored = memory.users.get("legacy", marked=True)
    assert stored is not None
    assert stored.user_id is not None
    assert stored.deleted_at is not None
    AccountPurge(memory.users, memory.partitions).purge(stored.owner)
    assert memory.users.get("legacy", marked=True) is None


def test_only_an_enabled_admin_as_stored_now_passes(administration: Administration) -> None:
    carol = administration.create_user(
        "carol", PASSWORD, role="admin", admin=ROOT, client=CLIENT
    ).owner
    administration.require_admin(carol)
    # The name with another id: a new account that took it, not the admin the token was for.
    with pytest.raises(AdminRequired):
        administration.require_admin(Owner("carol", "0" * 32))
    for role, disabled in (("user", False), ("admin", True)):
        administration.update_user("carol", role=role, disabled=disabled, admin=ROOT, client=CLIENT)
        with pytest.raises(AdminRequired):
            administration.require_admin(carol)
    with pytest.raises(AdminRequired):
        administration.require_admin(owner_of("nobody"))
