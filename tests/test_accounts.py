from __future__ import annotations

import re
from datetime import timedelta

import pytest

from chalicelib.accounts import Accounts, InvalidCredentials, UserNotFound
from chalicelib.passwords import ScryptHasher
from chalicelib.tokens import CachedKeys, KeyRing, SigningKey, TokenService
from chalicelib.users import InMemoryUserRepository, User, UsernameTaken
from tests.conftest import CHEAP_COST, FakeClock, node_scrypt_hashes


class StaticKeys:
    def fetch(self) -> KeyRing:
        return KeyRing(current=SigningKey(kid="k1", secret=b"s" * 64))


@pytest.fixture
def users() -> InMemoryUserRepository:
    return InMemoryUserRepository()


@pytest.fixture
def accounts(users: InMemoryUserRepository, clock: FakeClock) -> Accounts:
    keys = CachedKeys(StaticKeys(), max_age=timedelta(minutes=5), clock=clock)
    tokens = TokenService(keys, issuer="gatehouse", audience="api", ttl_seconds=60, clock=clock)
    return Accounts(users, hasher=ScryptHasher(CHEAP_COST), tokens=tokens, clock=clock)


def test_register_then_login_issues_a_token_for_the_user(
    accounts: Accounts, users: InMemoryUserRepository
) -> None:
    user = accounts.register("alice", "correct horse battery")
    assert user.role == "user"
    # The original system's createdAt format: JavaScript's toISOString().
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user.created_at)
    assert user.updated_at == user.created_at
    stored = users.get("alice")
    assert stored is not None
    assert stored.password_hash.startswith("$scrypt$")
    assert "correct horse battery" not in stored.password_hash

    result = accounts.login("alice", "correct horse battery")
    assert result.user.username == "alice"
    assert result.token.expires_in == 60


def test_registering_a_taken_name_fails(accounts: Accounts) -> None:
    accounts.register("alice", "correct horse battery")
    with pytest.raises(UsernameTaken):
        accounts.register("alice", "another password")


def test_unknown_user_and_wrong_password_fail_alike(accounts: Accounts) -> None:
    accounts.register("alice", "correct horse battery")
    with pytest.raises(InvalidCredentials) as wrong_password:
        accounts.login("alice", "incorrect horse")
    with pytest.raises(InvalidCredentials) as unknown_user:
        accounts.login("nobody", "correct horse battery")
    assert str(wrong_password.value) == str(unknown_user.value)


def test_login_upgrades_a_legacy_hash_and_keeps_the_password(
    accounts: Accounts, users: InMemoryUserRepository
) -> None:
    (legacy_hash,) = node_scrypt_hashes(["old password 1"])
    users.add(User(username="old", password_hash=legacy_hash, created_at="2024-01-01T00:00:00Z"))

    accounts.login("old", "old password 1")

    upgraded = users.get("old")
    assert upgraded is not None
    assert upgraded.password_hash.startswith("$scrypt$ln=10,r=8,p=1$")
    assert upgraded.created_at == "2024-01-01T00:00:00Z"
    assert accounts.login("old", "old password 1").user.username == "old"
    with pytest.raises(InvalidCredentials):
        accounts.login("old", "wrong")


def test_a_current_hash_is_left_alone(accounts: Accounts, users: InMemoryUserRepository) -> None:
    accounts.register("alice", "correct horse battery")
    before = users.get("alice")
    accounts.login("alice", "correct horse battery")
    assert users.get("alice") == before


def test_profile_of_a_missing_user_is_an_error(accounts: Accounts) -> None:
    with pytest.raises(UserNotFound):
        accounts.profile("ghost")
