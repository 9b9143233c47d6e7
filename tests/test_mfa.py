"""The MFA service with an injected clock, over both repositories (DynamoDB under moto, memory)."""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from chalicelib.identity import Owner
from chalicelib.keys import OwnerMissing, user_key
from chalicelib.mfa import (
    ChallengeExpired,
    CodeRejected,
    DynamoDBMfaRepository,
    InMemoryMfaRepository,
    InvalidCode,
    Mfa,
    MfaAlreadyEnabled,
    MfaNotEnabled,
    NoPendingEnrolment,
)
from tests.conftest import FakeClock
from tests.test_mfa_repository import ALICE, NEW_ALICE, Backend, ProfileTable, backend_named

STEP = timedelta(seconds=30)
RECOVERY_FORMAT = re.compile("[0-9a-hjkmnp-tv-z]{5}-[0-9a-hjkmnp-tv-z]{5}")


@pytest.fixture(params=["dynamodb", "memory"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_named(request)


@pytest.fixture
def step_clock() -> FakeClock:
    # 2026-01-01T00:00:00Z is the start of a 30 s step.
    return FakeClock()


@pytest.fixture
def mfa(backend: Backend, step_clock: FakeClock) -> Mfa:
    backend.register(ALICE)
    return Mfa(backend.repository, issuer="Gatehouse", clock=step_clock)


def code(secret: str, clock: FakeClock, *, steps: int = 0) -> str:
    """The authenticator app's code, ``steps`` steps from now."""
    return pyotp.TOTP(secret).at(clock.now + steps * STEP)


def wrong_code(secret: str, clock: FakeClock) -> str:
    """A code that none of the steps in the window has."""
    window = {code(secret, clock, steps=steps) for steps in (-1, 0, 1)}
    return next(guess for guess in ("000000", "000001", "000002", "000003") if guess not in window)


def turned_on(mfa: Mfa, clock: FakeClock, owner: Owner = ALICE) -> tuple[str, list[str]]:
    """Enrol and confirm; the secret and the recovery codes. The next step has begun."""
    secret = mfa.begin(owner).secret
    codes = mfa.confirm(owner, code(secret, clock))
    clock.advance(seconds=30)
    return secret, codes


def test_begin_gives_a_secret_its_uri_and_a_scalable_qr_code(mfa: Mfa) -> None:
    enrolment = mfa.begin(ALICE)
    assert re.fullmatch("[A-Z2-7]{32}", enrolment.secret)  # 160 bits
    uri = urllib.parse.urlsplit(enrolment.uri)
    assert (uri.scheme, uri.netloc, urllib.parse.unquote(uri.path)) == (
        "otpauth",
        "totp",
        "/Gatehouse:alice",
    )
    assert urllib.parse.parse_qs(uri.query) == {
        "secret": [enrolment.secret],
        "issuer": ["Gatehouse"],
    }
    svg = enrolment.qr_svg
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert "viewBox=" in svg
    assert "width=" not in svg
    assert "<?xml" not in svg
    assert enrolment.secret not in repr(enrolment)
    assert mfa.begin(ALICE).secret != enrolment.secret


def test_confirm_accepts_a_code_one_step_either_side(mfa: Mfa, step_clock: FakeClock) -> None:
    for steps in (-1, 1):
        secret = mfa.begin(ALICE).secret
        assert len(mfa.confirm(ALICE, code(secret, step_clock, steps=steps))) == 10
        assert mfa.enabled(ALICE)
        step_clock.advance(seconds=60)
        mfa.disable(ALICE, code(secret, step_clock))


def test_confirm_refuses_a_code_two_steps_away(mfa: Mfa, step_clock: FakeClock) -> None:
    secret = mfa.begin(ALICE).secret
    for steps in (-2, 2):
        with pytest.raises(CodeRejected, match="alice") as refused:
            mfa.confirm(ALICE, code(secret, step_clock, steps=steps))
        assert refused.value.public_message == "Invalid code"
    for typo in ("", "12345", "1234567", "abcdef"):
        with pytest.raises(CodeRejected):
            mfa.confirm(ALICE, typo)
    assert not mfa.enabled(ALICE)


def test_confirm_turns_the_factor_on_and_hands_out_ten_recovery_codes(
    mfa: Mfa, backend: Backend, step_clock: FakeClock
) -> None:
    secret = mfa.begin(ALICE).secret
    spaced = code(secret, step_clock)
    codes = mfa.confirm(ALICE, f"{spaced[:3]} {spaced[3:]}")
    assert len(set(codes)) == 10
    assert all(RECOVERY_FORMAT.fullmatch(each) for each in codes)
    assert mfa.enabled(ALICE)
    assert backend.flag("alice")
    with pytest.raises(MfaAlreadyEnabled):
        mfa.begin(ALICE)
    with pytest.raises(MfaAlreadyEnabled):
        mfa.confirm(ALICE, code(secret, step_clock, steps=1))


def test_confirm_needs_an_unexpired_enrolment(mfa: Mfa, step_clock: FakeClock) -> None:
    with pytest.raises(NoPendingEnrolment, match="alice"):
        mfa.confirm(ALICE, "123456")
    secret = mfa.begin(ALICE).secret
    step_clock.advance(minutes=15)
    with pytest.raises(NoPendingEnrolment):
        mfa.confirm(ALICE, code(secret, step_clock))
    assert not mfa.enabled(ALICE)


def test_a_new_enrolment_replaces_an_unconfirmed_one(mfa: Mfa, step_clock: FakeClock) -> None:
    first = mfa.begin(ALICE).secret
    second = mfa.begin(ALICE).secret
    with pytest.raises(CodeRejected):
        mfa.confirm(ALICE, code(first, step_clock))
    mfa.confirm(ALICE, code(second, step_clock))
    assert mfa.enabled(ALICE)


def test_a_challenge_redeemed_with_a_current_code_names_the_owner_once(
    mfa: Mfa, step_clock: FakeClock
) -> None:
    secret, _ = turned_on(mfa, step_clock)
    challenge = mfa.challenge(ALICE)
    assert challenge.startswith("YWxpY2U.")  # base64url("alice")
    assert mfa.redeem(challenge, code(secret, step_clock)) == ALICE
    step_clock.advance(seconds=30)
    with pytest.raises(ChallengeExpired) as refused:
        mfa.redeem(challenge, code(secret, step_clock))
    assert refused.value.public_message == "Sign-in expired; please log in again"


def test_a_code_is_accepted_once_and_only_for_a_later_step(mfa: Mfa, step_clock: FakeClock) -> None:
    secret = mfa.begin(ALICE).secret
    used = code(secret, step_clock)
    mfa.confirm(ALICE, used)
    # The code that confirmed the enrolment does not also sign in.
    with pytest.raises(InvalidCode) as refused:
        mfa.redeem(mfa.challenge(ALICE), used)
    assert refused.value.owner == ALICE
    assert refused.value.public_message == "Invalid code"
    step_clock.advance(seconds=30)
    current = code(secret, step_clock)
    assert mfa.redeem(mfa.challenge(ALICE), current) == ALICE
    with pytest.raises(InvalidCode):
        mfa.redeem(mfa.challenge(ALICE), current)
    # Nor does the previous step's code, now that a later one was used.
    with pytest.raises(InvalidCode):
        mfa.redeem(mfa.challenge(ALICE), used)
    assert mfa.redeem(mfa.challenge(ALICE), code(secret, step_clock, steps=1)) == ALICE


def test_a_challenge_expires_after_five_minutes(mfa: Mfa, step_clock: FakeClock) -> None:
    secret, _ = turned_on(mfa, step_clock)
    kept = mfa.challenge(ALICE)
    lapsed = mfa.challenge(ALICE)
    step_clock.advance(minutes=4, seconds=59)
    assert mfa.redeem(kept, code(secret, step_clock)) == ALICE
    step_clock.advance(seconds=1)
    with pytest.raises(ChallengeExpired):
        mfa.redeem(lapsed, code(secret, step_clock, steps=1))


def test_a_challenge_dies_after_five_wrong_codes(mfa: Mfa, step_clock: FakeClock) -> None:
    secret, _ = turned_on(mfa, step_clock)
    challenge = mfa.challenge(ALICE)
    right = code(secret, step_clock)
    wrong = wrong_code(secret, step_clock)
    for _ in range(5):
        with pytest.raises(InvalidCode):
            mfa.redeem(challenge, wrong)
    with pytest.raises(ChallengeExpired):
        mfa.redeem(challenge, right)
    assert mfa.redeem(mfa.challenge(ALICE), right) == ALICE


@pytest.mark.parametrize("raw", ["", "no-dot", "YWxpY2U.short", "!!!." + "a" * 43, "x" * 400])
def test_a_malformed_or_unknown_challenge_is_expired(mfa: Mfa, raw: str) -> None:
    with pytest.raises(ChallengeExpired):
        mfa.redeem(raw, "123456")


def test_a_recovery_code_signs_in_once_however_it_is_typed(mfa: Mfa, step_clock: FakeClock) -> None:
    _, codes = turned_on(mfa, step_clock)
    first, second = codes[0], codes[1]
    assert mfa.redeem(mfa.challenge(ALICE), first.upper()) == ALICE
    with pytest.raises(InvalidCode):
        mfa.redeem(mfa.challenge(ALICE), first)
    typed = second.replace("-", "").replace("0", "o").replace("1", "l")
    assert mfa.redeem(mfa.challenge(ALICE), typed) == ALICE
    with pytest.raises(InvalidCode):
        mfa.redeem(mfa.challenge(ALICE), "aaaaa-aaaaa")


def test_disable_takes_a_current_code_or_a_recovery_code(
    mfa: Mfa, backend: Backend, step_clock: FakeClock
) -> None:
    with pytest.raises(MfaNotEnabled):
        mfa.disable(ALICE, "123456")
    secret, codes = turned_on(mfa, step_clock)
    pending = mfa.challenge(ALICE)
    with pytest.raises(CodeRejected):
        mfa.disable(ALICE, code(secret, step_clock, steps=-1))  # already used by confirm
    with pytest.raises(CodeRejected):
        mfa.disable(ALICE, "aaaaa-aaaaa")
    mfa.disable(ALICE, codes[3])
    assert not mfa.enabled(ALICE)
    assert not backend.flag("alice")
    with pytest.raises(ChallengeExpired):
        mfa.redeem(pending, code(secret, step_clock))
    with pytest.raises(MfaNotEnabled):
        mfa.disable(ALICE, code(secret, step_clock))
    secret, codes = turned_on(mfa, step_clock)
    mfa.disable(ALICE, code(secret, step_clock))
    assert not mfa.enabled(ALICE)


def test_a_re_registered_name_inherits_no_factor(
    mfa: Mfa, backend: Backend, step_clock: FakeClock
) -> None:
    secret, codes = turned_on(mfa, step_clock)
    old_challenge = mfa.challenge(ALICE)
    backend.register(NEW_ALICE)
    assert not mfa.enabled(NEW_ALICE)
    with pytest.raises(MfaNotEnabled):
        mfa.disable(NEW_ALICE, code(secret, step_clock))
    with pytest.raises(NoPendingEnrolment):
        mfa.confirm(NEW_ALICE, code(secret, step_clock))
    with pytest.raises(OwnerMissing):
        mfa.challenge(ALICE)
    with pytest.raises(ChallengeExpired):
        mfa.redeem(old_challenge, code(secret, step_clock))
    # Neither the old secret nor the old recovery codes answer the new account's challenge.
    for old in (code(secret, step_clock, steps=1), codes[0]):
        with pytest.raises(ChallengeExpired):
            mfa.redeem(mfa.challenge(NEW_ALICE), old)
    new_secret, _ = turned_on(mfa, step_clock, NEW_ALICE)
    challenge = mfa.challenge(NEW_ALICE)
    with pytest.raises(InvalidCode):
        mfa.redeem(challenge, codes[1])
    assert mfa.redeem(challenge, code(new_secret, step_clock)) == NEW_ALICE


def race(count: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt`` in ``count`` threads at once; what each returned, or the error's type."""
    barrier = threading.Barrier(count)
    outcomes: list[object] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes.append(attempt(index))
        except (InvalidCode, ChallengeExpired) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("kind", ["totp", "recovery"])
def test_parallel_sign_ins_with_one_code_let_exactly_one_in(
    mfa: Mfa, step_clock: FakeClock, kind: str
) -> None:
    secret, codes = turned_on(mfa, step_clock)
    given = code(secret, step_clock) if kind == "totp" else codes[0]
    challenges = [mfa.challenge(ALICE) for _ in range(6)]
    outcomes = race(6, lambda index: mfa.redeem(challenges[index], given))
    assert outcomes.count(ALICE) == 1
    assert outcomes.count("InvalidCode") == 5


def test_parallel_redeems_of_one_challenge_let_exactly_one_in(
    mfa: Mfa, step_clock: FakeClock
) -> None:
    secret, codes = turned_on(mfa, step_clock)
    challenge = mfa.challenge(ALICE)
    given = [code(secret, step_clock), *codes[:3]]
    outcomes = race(4, lambda index: mfa.redeem(challenge, given[index]))
    assert outcomes.count(ALICE) == 1
    assert len(outcomes) == 4


def test_parallel_guesses_get_no_more_than_five_tries(mfa: Mfa, step_clock: FakeClock) -> None:
    secret, _ = turned_on(mfa, step_clock)
    challenge = mfa.challenge(ALICE)
    right = code(secret, step_clock)
    wrong = wrong_code(secret, step_clock)
    outcomes = race(8, lambda _: mfa.redeem(challenge, wrong))
    assert sorted(outcomes, key=str) == ["ChallengeExpired"] * 3 + ["InvalidCode"] * 5
    with pytest.raises(ChallengeExpired):
        mfa.redeem(challenge, right)


def test_round_trips_per_operation(table: Any, step_clock: FakeClock) -> None:
    backend_calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        backend_calls.append(model.name)

    events = table.meta.client.meta.events
    repository = DynamoDBMfaRepository(table)
    table.put_item(Item={**user_key("alice"), "username": "alice", "userId": ALICE.user_id})
    mfa = Mfa(repository, issuer="Gatehouse", clock=step_clock)
    events.register("before-call.dynamodb", count)
    try:
        secret = mfa.begin(ALICE).secret
        codes = mfa.confirm(ALICE, code(secret, step_clock))
        step_clock.advance(seconds=30)
        challenge = mfa.challenge(ALICE)
        assert mfa.redeem(challenge, code(secret, step_clock)) == ALICE
        with pytest.raises(InvalidCode):
            mfa.redeem(mfa.challenge(ALICE), wrong_code(secret, step_clock))
        mfa.disable(ALICE, codes[0])
    finally:
        events.unregister("before-call.dynamodb", count)
    assert backend_calls == [
        "TransactWriteItems",  # begin
        "BatchGetItem",  # confirm
        "TransactWriteItems",
        "TransactWriteItems",  # challenge
        "UpdateItem",  # redeem: count the try
        "BatchGetItem",
        "TransactWriteItems",
        "TransactWriteItems",  # challenge
        "UpdateItem",  # a wrong code
        "BatchGetItem",
        "BatchGetItem",  # disable
        "TransactWriteItems",
    ]


@pytest.mark.parametrize("issuer", ["", "Gate:house"])
def test_an_issuer_the_uri_cannot_carry_is_refused_at_start(issuer: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        Mfa(InMemoryMfaRepository(ProfileTable()), issuer=issuer)
