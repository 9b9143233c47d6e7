from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest

from chalicelib.passwords import DEFAULT_COST, LEGACY_COST, ScryptCost, ScryptHasher
from tests.conftest import CHEAP_COST, node_scrypt_hashes


@pytest.fixture(scope="module")
def node_hashes() -> dict[str, str]:
    passwords = ["hunter22", "correct horse battery staple", "pässwörd ✓ 密码"]
    return dict(zip(passwords, node_scrypt_hashes(passwords), strict=True))


def test_hash_round_trip_and_wrong_password() -> None:
    hasher = ScryptHasher(CHEAP_COST)
    stored = hasher.hash("correct horse battery")
    assert hasher.verify("correct horse battery", stored)
    assert not hasher.verify("correct horse batterY", stored)


def test_hash_carries_its_parameters_and_a_fresh_salt() -> None:
    hasher = ScryptHasher(ScryptCost(n=2**11, r=4, p=2))
    first, second = hasher.hash("same"), hasher.hash("same")
    assert first.startswith("$scrypt$ln=11,r=4,p=2$")
    assert first != second


def test_a_hash_made_at_another_cost_still_verifies() -> None:
    stored = ScryptHasher(CHEAP_COST).hash("secret words")
    assert ScryptHasher(ScryptCost(n=2**11, r=8, p=2)).verify("secret words", stored)


def test_default_cost_meets_owasp_minimum() -> None:
    # OWASP: N=2^17,r=8,p=1 or equivalents such as N=2^14,r=8,p=5 (same memory*time product).
    assert DEFAULT_COST.n * DEFAULT_COST.r * DEFAULT_COST.p >= 2**14 * 8 * 5
    stored = ScryptHasher().hash("production cost")
    assert stored.startswith("$scrypt$ln=14,r=8,p=5$")
    assert ScryptHasher().verify("production cost", stored)


def test_node_made_hashes_verify(node_hashes: dict[str, str]) -> None:
    hasher = ScryptHasher(CHEAP_COST)
    for password, stored in node_hashes.items():
        assert hasher.verify(password, stored), password
        assert not hasher.verify(password + "!", stored)


def test_legacy_format_is_read_as_node_wrote_it(node_hashes: dict[str, str]) -> None:
    # Independent check of the format: salt and key as raw bytes, base64, N=16384 r=8 p=1.
    stored = node_hashes["hunter22"]
    salt, key = (base64.b64decode(part) for part in stored.split(":"))
    assert (len(salt), len(key)) == (32, 64)
    assert ScryptCost(n=16384, r=8, p=1) == LEGACY_COST
    assert hashlib.scrypt(b"hunter22", salt=salt, n=16384, r=8, p=1, dklen=64) == key


def test_legacy_and_weaker_hashes_need_rehash(node_hashes: dict[str, str]) -> None:
    current = ScryptHasher()
    assert current.needs_rehash(node_hashes["hunter22"])
    assert current.needs_rehash(ScryptHasher(CHEAP_COST).hash("x"))
    assert not current.needs_rehash(current.hash("x"))
    # A hash above the current cost is kept, not downgraded.
    assert not ScryptHasher(CHEAP_COST).needs_rehash(current.hash("x"))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$scrypt$ln=14,r=8,p=5$c2FsdA",
        "$scrypt$ln=14,r=8$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "$scrypt$ln=40,r=8,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "$scrypt$ln=14,r=8,p=99$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "$scrypt$ln=x,r=8,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "$scrypt$ln=14,r=8,p=1$!!!$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5",
        "c2FsdA==:a2V5",
        "c2FsdA==:a2V5:extra",
        "@@@:@@@",
    ],
)
def test_malformed_or_hostile_hashes_never_verify(stored: str) -> None:
    # Parameter bounds are checked before any work: an ln=40 hash would otherwise ask for
    # terabytes of memory.
    assert not ScryptHasher(CHEAP_COST).verify("anything", stored)


@pytest.fixture
def scrypt_work(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records N*r*p of every scrypt derivation: the work, and so the time, a call costs."""
    work: list[int] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kwargs: int) -> bytes:
        work.append(kwargs["n"] * kwargs["r"] * kwargs["p"])
        return real(password, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return work


def test_every_failed_verification_costs_the_current_work(
    scrypt_work: list[int], node_hashes: dict[str, str]
) -> None:
    hasher = ScryptHasher()
    current = hasher.hash("the right one")

    def spent(call: Callable[[], object]) -> int:
        scrypt_work.clear()
        call()
        return sum(scrypt_work)

    assert (
        spent(lambda: hasher.verify("wrong", current))
        == spent(lambda: hasher.verify("wrong", node_hashes["hunter22"]))
        == spent(lambda: hasher.verify("wrong", "not a hash at all"))
        == spent(lambda: hasher.verify_dummy("wrong"))
        == DEFAULT_COST.work
    )


@pytest.mark.parametrize(
    "params",
    ["ln=20,r=15,p=1", "ln=17,r=8,p=1", "ln=14,r=8,p=21", "ln=30,r=1,p=1"],
)
def test_hashes_beyond_the_memory_or_work_caps_are_never_computed(
    params: str, scrypt_work: list[int]
) -> None:
    # 128*N*r over 64 MiB, or N*r*p over four times the default: only the dummy work is done.
    stored = f"$scrypt${params}$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"
    assert not ScryptHasher(CHEAP_COST).verify("anything", stored)
    assert scrypt_work == [CHEAP_COST.work]
