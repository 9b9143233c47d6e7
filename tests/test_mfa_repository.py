"""One contract for the MFA repository, run against DynamoDB (moto) and the in-memory twin."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.identity import Owner
from chalicelib.keys import OwnerMissing, user_key
from chalicelib.mfa import (
    ChallengeExpired,
    DynamoDBMfaRepository,
    Factors,
    InMemoryMfaRepository,
    MfaAlreadyEnabled,
    MfaRepository,
    NoPendingEnrolment,
    RecoveryHash,
    TotpFactor,
    TotpStep,
)

ALICE = Owner("alice", "a" * 32)
# The same name registered again after ALICE's account was deleted.
NEW_ALICE = Owner("alice", "b" * 32)
SECRET = "A" * 32
OTHER_SECRET = "B" * 32
CODES = frozenset({"1" * 64, "2" * 64})
DIGEST = "d" * 64


class ProfileTable:
    """Profiles as the in-memory twin sees them: each name's id and its MFA flag."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.flags: dict[str, bool] = {}

    def holds(self, owner: Owner) -> bool:
        return self.ids.get(owner.username) == owner.user_id

    def set_mfa_enabled(self, owner: Owner, enabled: bool) -> bool:
        if not self.holds(owner):
            return False
        self.flags[owner.username] = enabled
        return True


@dataclass
class Backend:
    """A repository and a way to register profiles and read their flag, per backend."""

    repository: MfaRepository
    register: Callable[[Owner], None]
    flag: Callable[[str], bool]


def backend_named(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        profiles = ProfileTable()

        def register_in_memory(owner: Owner) -> None:
            profiles.ids[owner.username] = owner.user_id
            profiles.flags.pop(owner.username, None)

        return Backend(
            InMemoryMfaRepository(profiles),
            register_in_memory,
            lambda username: profiles.flags.get(username, False),
        )
    table: Any = request.getfixturevalue("table")

    def register_in_table(owner: Owner) -> None:
        # A new profile replaces the old one but, as a deletion that missed rows would, keeps
        # every other row of the partition.
        table.put_item(
            Item={
                **user_key(owner.username),
                "username": owner.username,
                "passwordHash": "h",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "userId": owner.user_id,
            }
        )

    def flag(username: str) -> bool:
        profile = table.get_item(Key=user_key(username), ConsistentRead=True).get("Item", {})
        return profile.get("mfaEnabled") is True

    return Backend(DynamoDBMfaRepository(table), register_in_table, flag)


@pytest.fixture(params=["dynamodb", "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_named(request)


def enabled(backend: Backend, owner: Owner = ALICE) -> MfaRepository:
    backend.register(owner)
    repository = backend.repository
    repository.begin(owner, secret=SECRET, created_at=100, expires_at=1000)
    repository.enable(owner, secret=SECRET, step=10, recovery=CODES, enabled_at=200)
    return repository


def test_begin_stores_a_pending_factor_that_a_later_begin_replaces(backend: Backend) -> None:
    backend.register(ALICE)
    repository = backend.repository
    assert repository.factors(ALICE) == Factors(totp=None)
    repository.begin(ALICE, secret=SECRET, created_at=100, expires_at=1000)
    pending = TotpFactor(secret=SECRET, enabled=False, last_step=0, expires_at=1000)
    assert repository.factors(ALICE) == Factors(totp=pending)
    repository.begin(ALICE, secret=OTHER_SECRET, created_at=200, expires_at=1100)
    totp = repository.factors(ALICE).totp
    assert totp is not None
    assert (totp.secret, totp.expires_at) == (OTHER_SECRET, 1100)
    assert not backend.flag("alice")


def test_enable_turns_the_factor_on_with_its_codes_and_sets_the_profile_flag(
    backend: Backend,
) -> None:
    repository = enabled(backend)
    assert repository.factors(ALICE) == Factors(
        totp=TotpFactor(secret=SECRET, enabled=True, last_step=10, expires_at=None),
        recovery=CODES,
    )
    assert backend.flag("alice")
    with pytest.raises(MfaAlreadyEnabled):
        repository.begin(ALICE, secret=OTHER_SECRET, created_at=300, expires_at=1200)
    with pytest.raises(NoPendingEnrolment):
        repository.enable(ALICE, secret=SECRET, step=11, recovery=CODES, enabled_at=300)


def test_enable_refuses_a_replaced_or_missing_enrolment(backend: Backend) -> None:
    backend.register(ALICE)
    repository = backend.repository
    with pytest.raises(NoPendingEnrolment):
        repository.enable(ALICE, secret=SECRET, step=10, recovery=CODES, enabled_at=200)
    repository.begin(ALICE, secret=SECRET, created_at=100, expires_at=1000)
    repository.begin(ALICE, secret=OTHER_SECRET, created_at=110, expires_at=1010)
    with pytest.raises(NoPendingEnrolment):
        repository.enable(ALICE, secret=SECRET, step=10, recovery=CODES, enabled_at=200)
    assert not backend.flag("alice")


def test_writes_need_the_profile_to_hold_the_owners_id(backend: Backend) -> None:
    repository = backend.repository
    with pytest.raises(OwnerMissing):
        repository.begin(ALICE, secret=SECRET, created_at=100, expires_at=1000)
    backend.register(ALICE)
    repository.begin(ALICE, secret=SECRET, created_at=100, expires_at=1000)
    backend.register(NEW_ALICE)
    with pytest.raises(OwnerMissing):
        repository.enable(ALICE, secret=SECRET, step=10, recovery=CODES, enabled_at=200)
    with pytest.raises(OwnerMissing):
        repository.add_challenge(ALICE, DIGEST, created_at=100, expires_at=400)
    assert not backend.flag("alice")


def test_rows_of_a_deleted_account_of_the_same_name_count_for_nothing(backend: Backend) -> None:
    repository = enabled(backend)
    repository.add_challenge(ALICE, DIGEST, created_at=100, expires_at=400)
    backend.register(NEW_ALICE)
    assert repository.factors(NEW_ALICE) == Factors(totp=None)
    assert not repository.disable(NEW_ALICE, TotpStep(50))
    assert not repository.disable(NEW_ALICE, RecoveryHash("1" * 64))
    # The old challenge names the old id: the new account's factors do not answer it.
    challenge = repository.count_try("alice", DIGEST, now=150, max_tries=5)
    assert challenge is not None
    assert challenge.owner == ALICE
    with pytest.raises(ChallengeExpired):
        repository.redeem(ALICE, DIGEST, TotpStep(50))
    # A new enrolment replaces the stale factor; the stale recovery codes stay out of sight.
    repository.begin(NEW_ALICE, secret=OTHER_SECRET, created_at=300, expires_at=1200)
    assert repository.factors(NEW_ALICE) == Factors(
        totp=TotpFactor(secret=OTHER_SECRET, enabled=False, last_step=0, expires_at=1200)
    )


def test_count_try_counts_live_challenges_up_to_the_limit(backend: Backend) -> None:
    backend.register(ALICE)
    repository = backend.repository
    assert repository.count_try("alice", DIGEST, now=150, max_tries=5) is None
    repository.add_challenge(ALICE, DIGEST, created_at=100, expires_at=400)
    tries = [repository.count_try("alice", DIGEST, now=150, max_tries=3) for _ in range(4)]
    assert [None if each is None else each.tries for each in tries] == [1, 2, 3, None]
    other = "e" * 64
    repository.add_challenge(ALICE, other, created_at=100, expires_at=400)
    assert repository.count_try("alice", other, now=400, max_tries=5) is None
    assert repository.count_try("bob", other, now=150, max_tries=5) is None


def test_redeem_with_a_step_deletes_the_challenge_and_moves_the_step_on(
    backend: Backend,
) -> None:
    repository = enabled(backend)
    repository.add_challenge(ALICE, DIGEST, created_at=100, expires_at=400)
    assert not repository.redeem(ALICE, DIGEST, TotpStep(10))
    assert repository.redeem(ALICE, DIGEST, TotpStep(11))
    totp = repository.factors(ALICE).totp
    assert totp is not None
    assert totp.last_step == 11
    with pytest.raises(ChallengeExpired):
        repository.redeem(ALICE, DIGEST, TotpStep(12))
    assert repository.count_try("alice", DIGEST, now=150, max_tries=5) is None


def test_redeem_with_a_recovery_code_uses_it_up(backend: Backend) -> None:
    repository = enabled(backend)
    first, second = "f" * 64, "g" * 64
    repository.add_challenge(ALICE, first, created_at=100, expires_at=400)
    repository.add_challenge(ALICE, second, created_at=100, expires_at=400)
    assert not repository.redeem(ALICE, first, RecoveryHash("9" * 64))
    assert repository.redeem(ALICE, first, RecoveryHash("1" * 64))
    assert repository.factors(ALICE).recovery == {"2" * 64}
    assert not repository.redeem(ALICE, second, RecoveryHash("1" * 64))
    assert repository.redeem(ALICE, second, RecoveryHash("2" * 64))
    assert repository.factors(ALICE).recovery == frozenset()


def test_disable_removes_everything_once_given_an_unused_proof(backend: Backend) -> None:
    repository = enabled(backend)
    assert not repository.disable(ALICE, TotpStep(10))
    assert not repository.disable(ALICE, RecoveryHash("9" * 64))
    assert backend.flag("alice")
    assert repository.disable(ALICE, RecoveryHash("2" * 64))
    assert repository.factors(ALICE) == Factors(totp=None)
    assert not backend.flag("alice")
    assert not repository.disable(ALICE, TotpStep(11))
    repository.begin(ALICE, secret=SECRET, created_at=300, expires_at=1200)
    repository.enable(ALICE, secret=SECRET, step=20, recovery=CODES, enabled_at=400)
    assert repository.disable(ALICE, TotpStep(21))
    assert repository.factors(ALICE) == Factors(totp=None)


def race(count: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt`` in ``count`` threads at once; what each returned or raised."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes.append(attempt(index))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes.append(type(exc))

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("proof", [TotpStep(11), RecoveryHash("1" * 64)])
def test_one_proof_redeems_one_of_many_parallel_challenges(
    backend: Backend, proof: TotpStep | RecoveryHash
) -> None:
    repository = enabled(backend)
    digests = [f"{index:064x}" for index in range(6)]
    for digest in digests:
        repository.add_challenge(ALICE, digest, created_at=100, expires_at=400)
    outcomes = race(6, lambda index: repository.redeem(ALICE, digests[index], proof))
    assert sorted(outcomes, key=str) == [False] * 5 + [True]
