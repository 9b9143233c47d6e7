"""One contract, run against DynamoDB (under moto) and against the in-memory fake."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import boto3
import pytest

from chalicelib.identity import Owner
from chalicelib.keys import name_claim_key, user_key
from chalicelib.limits import (
    Attempt,
    DynamoDBLimitRepository,
    Failures,
    FailuresRead,
    InMemoryLimitRepository,
    LimitRepository,
    RateHit,
    TooManyAttempts,
)
from chalicelib.paging import InvalidCursor
from chalicelib.users import (
    DynamoDBUserRepository,
    EmailTaken,
    InMemoryUserRepository,
    User,
    UsernameTaken,
    UserNotFound,
    UserRepository,
)
from tests.conftest import add_legacy, follow
from tools.localaws import Resources


@pytest.fixture(params=["dynamodb", "memory"])
def repository(request: pytest.FixtureRequest) -> UserRepository:
    if request.param == "memory":
        return InMemoryUserRepository()
    resources: Resources = request.getfixturevalue("resources")
    session: boto3.Session = request.getfixturevalue("aws")
    return DynamoDBUserRepository(session.resource("dynamodb").Table(resources.table_name))


ALICE = User(
    username="alice",
    user_id="a" * 32,
    password_hash="$scrypt$hash",
    created_at="2026-01-01T00:00:00.000Z",
    role="user",
    updated_at="2026-01-01T00:00:00.000Z",
)


def alice(**changes: Any) -> User:
    return replace(ALICE, **changes)


def test_added_user_reads_back(repository: UserRepository) -> None:
    repository.add(alice())
    assert repository.get("alice") == alice()
    assert repository.get("bob") is None


def test_a_taken_username_is_refused_and_the_first_user_kept(repository: UserRepository) -> None:
    repository.add(alice())
    with pytest.raises(UsernameTaken):
        repository.add(alice(password_hash="other"))
    assert repository.get("alice") == alice()


def test_names_are_unique_regardless_of_case_and_keep_their_case(
    repository: UserRepository,
) -> None:
    repository.add(alice(username="Alice"))
    for other in ("alice", "ALICE", "aLiCe"):
        with pytest.raises(UsernameTaken):
            repository.add(alice(username=other, user_id="b" * 32))
        assert repository.get(other) is None
    assert repository.get("Alice") == alice(username="Alice")


def test_find_reads_the_exact_name_else_the_one_differing_in_case(
    repository: UserRepository,
) -> None:
    repository.add(alice(username="Alice"))
    assert repository.find("Alice") == alice(username="Alice")
    assert repository.find("aLICE") == alice(username="Alice")
    assert repository.find("bob") is None


def test_a_legacy_row_blocks_its_name_in_another_case(repository: UserRepository) -> None:
    add_legacy(repository, "carol")
    with pytest.raises(UsernameTaken):
        repository.add(alice(username="Carol"))
    assert repository.get("Carol") is None


def test_legacy_rows_differing_only_in_case_both_stay_reachable(
    repository: UserRepository,
) -> None:
    add_legacy(repository, "Dave")
    add_legacy(repository, "dave")
    first = repository.assign_id("Dave", "1" * 32)
    second = repository.assign_id("dave", "2" * 32)
    assert (first.user_id, second.user_id) == ("1" * 32, "2" * 32)
    assert repository.find("Dave") == first
    assert repository.find("dave") == second
    # The first one used holds the claim for every other case.
    assert repository.find("DAVE") == first


def test_an_id_is_assigned_once_and_then_kept(repository: UserRepository) -> None:
    add_legacy(repository, "erin")
    legacy = repository.get("erin")
    assert legacy is not None
    assert legacy.user_id is None
    assigned = repository.assign_id("erin", "1" * 32)
    assert assigned.user_id == "1" * 32
    assert repository.assign_id("erin", "2" * 32) == assigned
    assert repository.get("erin") == assigned
    assert repository.find("ERIN") == assigned
    with pytest.raises(UserNotFound):
        repository.assign_id("ghost", "3" * 32)
    assert repository.get("ghost") is None


def test_concurrent_first_uses_agree_on_one_id(repository: UserRepository) -> None:
    add_legacy(repository, "frank")
    barrier = threading.Barrier(8)
    ids: list[str | None] = []

    def first_use(index: int) -> None:
        barrier.wait()
        ids.append(repository.assign_id("frank", f"{index}" * 32).user_id)

    threads = [threading.Thread(target=first_use, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = repository.get("frank")
    assert stored is not None
    assert set(ids) == {stored.user_id}


def test_concurrent_adds_of_one_name_let_exactly_one_win(repository: UserRepository) -> None:
    barrier = threading.Barrier(16)
    outcomes: list[str] = []

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            repository.add(alice(username=("alice", "Alice")[index % 2], user_id=f"{index:032x}"))
            outcomes.append("created")
        except UsernameTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["taken"] * 15


def test_password_hash_is_replaced_only_if_unchanged(repository: UserRepository) -> None:
    repository.add(alice())
    assert repository.replace_password_hash(
        "alice", old="$scrypt$hash", new="$scrypt$new", updated_at="2026-02-02T00:00:00.000Z"
    )
    assert not repository.replace_password_hash(
        "alice", old="$scrypt$hash", new="$scrypt$lost", updated_at="2026-03-03T00:00:00.000Z"
    )
    assert repository.get("alice") == alice(
        password_hash="$scrypt$new", updated_at="2026-02-02T00:00:00.000Z"
    )


def test_replacing_the_hash_of_a_missing_user_creates_nothing(
    repository: UserRepository,
) -> None:
    assert not repository.replace_password_hash("ghost", old="a", new="b", updated_at="now")
    assert repository.get("ghost") is None


def test_password_change_and_revocation_bump_the_token_version(
    repository: UserRepository,
) -> None:
    repository.add(alice())
    owner = alice().owner
    assert repository.change_password(owner, new_hash="$scrypt$new", updated_at="t1") == 1
    assert repository.bump_token_version(owner, updated_at="t2") == 2
    assert repository.get("alice") == alice(
        password_hash="$scrypt$new", updated_at="t2", token_version=2
    )
    with pytest.raises(UserNotFound):
        repository.bump_token_version(Owner("ghost", "g" * 32), updated_at="t3")
    assert repository.get("ghost") is None
    # An account that took the name is not the one the change was meant for.
    with pytest.raises(UserNotFound):
        repository.change_password(Owner("alice", "b" * 32), new_hash="x", updated_at="t4")
    assert repository.get("alice") == alice(
        password_hash="$scrypt$new", updated_at="t2", token_version=2
    )


def test_role_version_and_disabled_flag_read_back(repository: UserRepository) -> None:
    repository.add(alice(role="admin", token_version=4, disabled=True))
    assert repository.get("alice") == alice(role="admin", token_version=4, disabled=True)


def test_dynamodb_rows_use_the_original_systems_layout(
    aws: boto3.Session, resources: Resources
) -> None:
    table = aws.resource("dynamodb").Table(resources.table_name)
    DynamoDBUserRepository(table).add(alice())
    item = table.get_item(Key=user_key("alice"))["Item"]
    assert item == {
        "pk": "USER#alice",
        "sk": "PROFILE",
        "userId": "a" * 32,
        "username": "alice",
        "passwordHash": "$scrypt$hash",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "role": "user",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }
    claim = table.get_item(Key=name_claim_key("alice"))["Item"]
    assert claim == {"pk": "NAME#alice", "sk": "NAME", "username": "alice", "userId": "a" * 32}


def test_dynamodb_reads_a_row_the_original_system_wrote(
    aws: boto3.Session, resources: Resources
) -> None:
    table = aws.resource("dynamodb").Table(resources.table_name)
    table.put_item(
        Item={
            **user_key("legacy"),
            "username": "legacy",
            "passwordHash": "c2FsdA==:a2V5",
            "createdAt": "2024-05-01T10:00:00.000Z",
        }
    )
    assert DynamoDBUserRepository(table).get("legacy") == User(
        username="legacy",
        user_id=None,
        password_hash="c2FsdA==:a2V5",
        created_at="2024-05-01T10:00:00.000Z",
        role="user",
        updated_at=None,
    )


def test_access_changes_apply_to_existing_users_only(repository: UserRepository) -> None:
    repository.add(alice())
    changed = repository.set_access("alice", role="admin", disabled=None, updated_at="t1")
    assert changed == alice(role="admin", updated_at="t1")
    changed = repository.set_access("alice", role=None, disabled=True, updated_at="t2")
    assert changed == alice(role="admin", disabled=True, updated_at="t2")
    assert repository.get("alice") == changed
    with pytest.raises(UserNotFound):
        repository.set_access("ghost", role="admin", disabled=None, updated_at="t3")
    assert repository.get("ghost") is None


def test_listing_pages_through_every_user_once(repository: UserRepository) -> None:
    names = [f"user{n:02d}" for n in range(7)]
    for name in names:
        repository.add(alice(username=name, user_id=name.ljust(32, "0")))
    listed = follow(
        lambda cursor: repository.list(limit=3, cursor=cursor), lambda page: page.cursor
    )
    assert all(len(page.users) <= 3 for page in listed)
    seen = [user.username for page in listed for user in page.users]
    assert sorted(seen) == names
    everyone = repository.list(limit=10, cursor=None)
    assert (len(everyone.users), everyone.cursor) == (7, None)
    with pytest.raises(InvalidCursor):
        repository.list(limit=3, cursor="garbage")


def test_a_verified_address_is_claimed_and_a_stale_claim_taken_over(
    repository: UserRepository,
) -> None:
    repository.add(alice())
    owner = alice().owner
    repository.set_email(owner, "a@example.com", updated_at="t1")
    assert repository.find_by_email("a@example.com") is None  # not verified yet
    assert repository.verify_email(owner, "a@example.com", updated_at="t2")
    assert repository.find_by_email("A@EXAMPLE.COM") == alice(
        email="a@example.com", email_verified=True, updated_at="t2"
    )
    bob = alice(username="bob", user_id="b" * 32)
    repository.add(bob)
    repository.set_email(bob.owner, "a@example.com", updated_at="t3")
    with pytest.raises(EmailTaken):
        repository.verify_email(bob.owner, "a@example.com", updated_at="t4")
    # A link for an address the profile no longer has confirms nothing.
    assert not repository.verify_email(bob.owner, "other@example.com", updated_at="t4")
    # alice's profile goes but her claim stays (a purge interrupted between its deletes).
    if isinstance(repository, InMemoryUserRepository):
        repository._users.pop("alice")
    else:
        repository._table.delete_item(Key=user_key("alice"))  # type: ignore[attr-defined]
    assert repository.find_by_email("a@example.com") is None
    assert repository.verify_email(bob.owner, "a@example.com", updated_at="t5")
    found = repository.find_by_email("a@example.com")
    assert found is not None
    assert found.username == "bob"


def test_an_id_assigned_from_the_row_just_read_claims_the_name_once(
    repository: UserRepository,
) -> None:
    add_legacy(repository, "Gus")
    add_legacy(repository, "gus")
    rows = [repository.get("Gus"), repository.get("gus")]
    assert None not in rows
    first = repository.assign_id("Gus", "1" * 32, current=rows[0])
    # The claim is taken: the id is still written, alone.
    second = repository.assign_id("gus", "2" * 32, current=rows[1])
    assert (first, second) == (repository.get("Gus"), repository.get("gus"))
    assert (first.user_id, second.user_id) == ("1" * 32, "2" * 32)
    assert repository.find("GUS") == first
    # Assigned meanwhile: the stored id stands.
    assert repository.assign_id("Gus", "3" * 32, current=rows[0]) == first


def test_rows_are_read_along_with_the_profile(repository: UserRepository) -> None:
    repository.add(alice(username="Alice"))
    limits: LimitRepository = InMemoryLimitRepository()
    if isinstance(repository, DynamoDBUserRepository):
        limits = DynamoDBLimitRepository(repository._table)
    limits.count_attempts(
        "alice",
        [
            Attempt(
                scope="203.0.113.7",
                previous=None,
                new=Failures(count=2, last_attempt_at=9),
                expires_at=99,
            )
        ],
    )
    reads = [FailuresRead(limits, "aLICE", "203.0.113.7"), FailuresRead(limits, "alice", "*")]
    user, found = repository.find_with("aLICE", reads)
    assert user == alice(username="Alice")
    assert found == [Failures(count=2, last_attempt_at=9), None]
    assert repository.find_with("nobody", reads) == (None, found)


def test_a_signup_refused_by_a_row_along_writes_nothing(repository: UserRepository) -> None:
    limits: LimitRepository = InMemoryLimitRepository()
    full = RateHit(
        repository=limits, address="a", window_start=0, expires_at=9, limit=1, retry_after=3
    )
    full.apply()
    if isinstance(repository, DynamoDBUserRepository):
        # The table's twin of the same full window.
        limits = DynamoDBLimitRepository(repository._table)
        full = replace(full, repository=limits)
        full.apply()
    with pytest.raises(TooManyAttempts):
        repository.add(alice(), along=[full])
    assert repository.find("alice") is None
