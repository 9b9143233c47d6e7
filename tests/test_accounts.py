"""The account service over its repositories, with a settable clock: every test runs over the
in-memory twins and again over the DynamoDB adapters (moto), races included."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from chalicelib.accounts import (
    Accounts,
    InvalidCredentials,
    MfaChallenge,
    SignedIn,
    TokenRevoked,
)
from chalicelib.deletion import AccountPurge
from chalicelib.events import Client, SecurityEvents
from chalicelib.identity import Owner
from chalicelib.keys import OwnerMissing
from chalicelib.limits import KnownDevices, LoginThrottle, TooManyAttempts
from chalicelib.mfa import ChallengeExpired, InvalidCode, Mfa
from chalicelib.passwords import DEFAULT_COST, ScryptHasher
from chalicelib.policy import WeakPassword
from chalicelib.sessions import InvalidRefreshToken, RefreshToken, Sessions
from chalicelib.stores import Stores
from chalicelib.tokens import CachedKeys, Claims, KeyRing, SigningKey, TokenService
from chalicelib.users import UsernameTaken, UserNotFound
from tests.conftest import (
    CHEAP_COST,
    LEGACY,
    FakeClock,
    add_legacy,
    node_scrypt_hashes,
    without_mfa,
)

CLIENT = Client(ip="203.0.113.7", user_agent="pytest")
PASSWORD = "correct horse battery"


class StaticKeys:
    def fetch(self) -> KeyRing:
        return KeyRing(current=SigningKey(kid="k1", secret=b"s" * 64))


def build(
    stores: Stores,
    clock: FakeClock,
    *,
    hasher: ScryptHasher | None = None,
    account_free_failures: int = 20,
) -> Accounts:
    keys = CachedKeys(StaticKeys(), max_age=timedelta(minutes=5), clock=clock)
    sessions = Sessions(
        stores.sessions,
        absolute=timedelta(days=30),
        idle=timedelta(days=7),
        grace=timedelta(seconds=10),
        clock=clock,
    )
    return Accounts(
        stores.users,
        hasher=hasher or ScryptHasher(CHEAP_COST),
        tokens=TokenService(keys, issuer="gatehouse", audience="api", ttl_seconds=900, clock=clock),
        sessions=sessions,
        throttle=LoginThrottle(
            stores.limits,
            free_failures=5,
            max_backoff=900,
            window=3600,
            account_free_failures=account_free_failures,
            clock=clock,
        ),
        events=SecurityEvents(stores.events, clock=clock),
        mfa=Mfa(stores.mfa, issuer="Gatehouse", clock=clock),
        devices=KnownDevices(keys, max_age=365 * 86400, clock=clock),
        clock=clock,
    )


@pytest.fixture
def accounts(stores: Stores, clock: FakeClock) -> Accounts:
    return build(stores, clock)


@pytest.fixture
def alice(accounts: Accounts) -> SignedIn:
    accounts.register("alice", PASSWORD, CLIENT)
    return without_mfa(accounts.login("alice", PASSWORD, CLIENT))


def assert_signed_in(signed_in: SignedIn, username: str) -> None:
    """A login that succeeded: the user's own, with an access token, a new session and its
    refresh token."""
    assert signed_in.user.username == username
    assert signed_in.session.username == username
    assert signed_in.access.token
    assert signed_in.refresh is not None
    assert signed_in.refresh.username == username
    assert signed_in.refresh_expires_in > 0


def purged(stores: Stores, owner: Owner) -> None:
    """The deletion's second half, as the purge worker runs it."""
    AccountPurge(stores.users, stores.partitions).purge(owner)


def kinds(accounts: Accounts, owner: Owner) -> list[str]:
    return [event.kind for event in accounts.events(owner, limit=100, cursor=None).events]


def test_register_then_login_starts_a_session(accounts: Accounts, alice: SignedIn) -> None:
    user = accounts.profile(alice.user.owner)
    # The original system's createdAt format: JavaScript's toISOString().
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", user.created_at)
    assert user.password_hash.startswith("$scrypt$")
    assert alice.access.expires_in == 900
    assert alice.refresh is not None
    assert [s.session_id for s in accounts.active_sessions(user)] == [alice.session.session_id]
    assert sorted(kinds(accounts, alice.user.owner)) == ["login", "signup"]


def test_registering_a_taken_name_fails(accounts: Accounts, alice: SignedIn) -> None:
    with pytest.raises(UsernameTaken):
        accounts.register("alice", "another password", CLIENT)


@pytest.mark.parametrize(
    ("username", "password"),
    [("bob", "password"), ("bob", "Sunshine1"), ("bob", "iloveyou"), ("longname1", "LongName1")],
)
def test_weak_new_passwords_are_refused(
    accounts: Accounts, stores: Stores, username: str, password: str
) -> None:
    with pytest.raises(WeakPassword):
        accounts.register(username, password, CLIENT)
    assert stores.users.find(username) is None


def test_unknown_user_wrong_password_and_legacy_hash_cost_the_same_work(
    stores: Stores, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = build(stores, clock, hasher=ScryptHasher())
    accounts.register("alice", PASSWORD, CLIENT)
    (legacy_hash,) = node_scrypt_hashes(["old password 1"])
    add_legacy(stores.users, "old", legacy_hash)
    work: list[int] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kwargs: int) -> bytes:
        work.append(kwargs["n"] * kwargs["r"] * kwargs["p"])
        return real(password, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    spent = []
    for username in ("nobody", "alice", "old"):
        work.clear()
        with pytest.raises(InvalidCredentials):
            accounts.login(username, "wrong password", CLIENT)
        spent.append(sum(work))
    assert spent == [DEFAULT_COST.work] * 3


def test_login_upgrades_a_legacy_hash(accounts: Accounts, stores: Stores) -> None:
    (legacy_hash,) = node_scrypt_hashes(["old password 1"])
    add_legacy(stores.users, "old", legacy_hash)
    owner = without_mfa(accounts.login("old", "old password 1", CLIENT)).user.owner
    upgraded = accounts.profile(owner)
    assert upgraded.password_hash.startswith("$scrypt$ln=10,r=8,p=1$")
    assert upgraded.created_at == LEGACY
    assert accounts.login("old", "old password 1", CLIENT).user.username == "old"


class TestRefresh:
    def test_rotation_issues_a_new_token_and_consumes_the_old(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        assert alice.refresh is not None
        first = alice.refresh.encode()
        rotated = accounts.refresh(first, CLIENT)
        assert rotated.refresh is not None
        assert rotated.refresh.encode() != first
        assert rotated.session.session_id == alice.session.session_id
        assert accounts.refresh(rotated.refresh.encode(), CLIENT).refresh is not None

    def test_a_replay_within_the_grace_window_gets_an_access_token_only(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        assert alice.refresh is not None
        winner = accounts.refresh(alice.refresh.encode(), CLIENT)
        clock.advance(seconds=10)
        late = accounts.refresh(alice.refresh.encode(), CLIENT)
        assert late.refresh is None
        assert late.access.token
        assert winner.refresh is not None
        assert accounts.refresh(winner.refresh.encode(), CLIENT).refresh is not None

    def test_a_replay_after_the_grace_window_revokes_the_family(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        assert alice.refresh is not None
        winner = accounts.refresh(alice.refresh.encode(), CLIENT)
        assert winner.refresh is not None
        clock.advance(seconds=11)
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(alice.refresh.encode(), CLIENT)
        # The thief's (or the victim's) newer token dies with the family.
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(winner.refresh.encode(), CLIENT)
        assert "refresh_reuse" in kinds(accounts, alice.user.owner)
        assert accounts.active_sessions(accounts.profile(alice.user.owner)) == []

    def test_simultaneous_refreshes_with_one_token_let_one_rotate(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        assert alice.refresh is not None
        raw = alice.refresh.encode()
        barrier = threading.Barrier(8)
        results: list[SignedIn] = []

        def attempt() -> None:
            barrier.wait()
            results.append(accounts.refresh(raw, CLIENT))

        threads = [threading.Thread(target=attempt) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 8
        assert sum(result.refresh is not None for result in results) == 1

    def test_idle_expiry(self, accounts: Accounts, alice: SignedIn, clock: FakeClock) -> None:
        assert alice.refresh is not None
        clock.advance(days=7)
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(alice.refresh.encode(), CLIENT)

    def test_use_postpones_idle_expiry_but_not_absolute_expiry(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        assert alice.refresh is not None
        token = alice.refresh
        for _ in range(4):  # days 6, 12, 18, 24: each within 7 days of the last use
            clock.advance(days=6)
            rotated = accounts.refresh(token.encode(), CLIENT).refresh
            assert rotated is not None
            token = rotated
        clock.advance(days=6)  # day 30: the absolute lifetime is over
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(token.encode(), CLIENT)

    @pytest.mark.parametrize(
        "raw", ["", "nodot", "YWxpY2U.short", "!!!." + "a" * 43, "YWxpY2U." + "a" * 43]
    )
    def test_malformed_or_unknown_tokens_are_refused(
        self, accounts: Accounts, alice: SignedIn, raw: str
    ) -> None:
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(raw, CLIENT)

    def test_refresh_rows_store_only_a_hash(self, table: Any, clock: FakeClock) -> None:
        accounts = build(Stores.dynamodb(table), clock)
        accounts.register("alice", PASSWORD, CLIENT)
        alice = without_mfa(accounts.login("alice", PASSWORD, CLIENT))
        assert alice.refresh is not None
        rows = table.scan()["Items"]
        assert alice.refresh.secret not in repr(rows)
        assert any(row["sk"] == f"REFRESH#{alice.refresh.digest}" for row in rows)


class TestRevocation:
    def test_logout_all_bumps_the_version_and_ends_every_session(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        other = without_mfa(accounts.login("alice", PASSWORD, CLIENT))
        accounts.logout_all(alice.user.owner, CLIENT)
        user = accounts.profile(alice.user.owner)
        assert user.token_version == 1
        assert accounts.active_sessions(user) == []
        for signed_in in (alice, other):
            assert signed_in.refresh is not None
            with pytest.raises(InvalidRefreshToken):
                accounts.refresh(signed_in.refresh.encode(), CLIENT)

    def test_password_change_revokes_old_sessions_and_starts_a_new_one(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        fresh = accounts.change_password(
            alice.user.owner, PASSWORD, "a brand new passphrase", CLIENT
        )
        assert fresh.user.token_version == 1
        assert alice.refresh is not None
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(alice.refresh.encode(), CLIENT)
        assert fresh.refresh is not None
        assert accounts.refresh(fresh.refresh.encode(), CLIENT).user.username == "alice"
        with pytest.raises(InvalidCredentials):
            accounts.login("alice", PASSWORD, CLIENT)
        assert_signed_in(
            without_mfa(accounts.login("alice", "a brand new passphrase", CLIENT)), "alice"
        )
        assert "password_change" in kinds(accounts, alice.user.owner)

    def test_password_change_needs_the_current_password(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        with pytest.raises(InvalidCredentials):
            accounts.change_password(
                alice.user.owner, "not my password", "a brand new passphrase", CLIENT
            )
        with pytest.raises(WeakPassword):
            accounts.change_password(alice.user.owner, PASSWORD, "password1", CLIENT)
        assert accounts.profile(alice.user.owner).token_version == 0


class TestSessions:
    def test_list_sessions_gives_the_live_ones_newest_first(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        clock.advance(seconds=1)
        other = without_mfa(accounts.login("alice", PASSWORD, CLIENT))
        listed = accounts.list_sessions(alice.user.owner)
        assert [s.session_id for s in listed] == [
            other.session.session_id,
            alice.session.session_id,
        ]
        assert listed[0] == other.session
        accounts.logout(alice.user.owner, other.session.session_id)
        assert [s.session_id for s in accounts.list_sessions(alice.user.owner)] == [
            alice.session.session_id
        ]
        clock.advance(days=7)  # idle for a week: the session is no longer live
        assert accounts.list_sessions(alice.user.owner) == []

    def test_list_sessions_of_a_missing_account_is_refused(self, accounts: Accounts) -> None:
        with pytest.raises(UserNotFound):
            accounts.list_sessions(Owner("nobody", "0" * 32))

    def test_deleting_the_account_takes_everything_along(
        self, accounts: Accounts, alice: SignedIn, stores: Stores
    ) -> None:
        with pytest.raises(InvalidCredentials):
            accounts.delete_account(alice.user.owner, "not my password", CLIENT)
        assert stores.users.get("alice") is not None
        owner = alice.user.owner
        accounts.delete_account(owner, PASSWORD, CLIENT)
        # Gone at once for every use; the name stays taken until the purge.
        assert stores.users.get("alice") is None
        with pytest.raises(TokenRevoked):
            accounts.authorize(accounts_claims(accounts, alice))
        assert alice.refresh is not None
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(alice.refresh.encode(), CLIENT)
        with pytest.raises(InvalidCredentials):
            accounts.login("alice", PASSWORD, CLIENT)
        with pytest.raises(UserNotFound):
            accounts.profile(owner)
        with pytest.raises(UsernameTaken):
            accounts.register("Alice", PASSWORD, CLIENT)
        # Again (a token the gateway still honoured): the same success, a wrong password too.
        accounts.delete_account(owner, PASSWORD, CLIENT)
        accounts.delete_account(owner, "not my password", CLIENT)
        purged(stores, owner)
        assert stores.users.get("alice", marked=True) is None
        assert stores.sessions.all("alice") == []
        assert accounts.events(owner, limit=10, cursor=None).events == []
        accounts.delete_account(owner, PASSWORD, CLIENT)
        accounts.register("Alice", PASSWORD, CLIENT)


class TestSecondFactor:
    """The login flow around ``Mfa``, over both backends (the HTTP side: test_mfa_api.py)."""

    @staticmethod
    def turn_on(accounts: Accounts, alice: SignedIn, clock: FakeClock) -> tuple[str, list[str]]:
        owner = alice.user.owner
        secret = accounts._mfa.begin(owner).secret
        codes = accounts.enable_mfa(
            owner, pyotp.TOTP(secret).at(clock.now), CLIENT, keep=alice.session.session_id
        )
        clock.advance(seconds=30)
        return secret, codes

    def test_a_password_then_a_code(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock, stores: Stores
    ) -> None:
        secret, _ = self.turn_on(accounts, alice, clock)
        assert accounts.profile(alice.user.owner).mfa_enabled
        before = len(stores.sessions.all("alice"))
        first = accounts.login("alice", PASSWORD, CLIENT)
        assert isinstance(first, MfaChallenge)
        assert len(stores.sessions.all("alice")) == before
        with pytest.raises(InvalidCode):
            accounts.login_mfa(first.challenge, "not a code", CLIENT)
        signed_in = accounts.login_mfa(first.challenge, pyotp.TOTP(secret).at(clock.now), CLIENT)
        assert_signed_in(signed_in, "alice")
        with pytest.raises(ChallengeExpired):
            accounts.login_mfa(first.challenge, pyotp.TOTP(secret).at(clock.now), CLIENT)
        assert kinds(accounts, alice.user.owner).count("mfa_failure") == 1

    def test_the_other_sessions_end_on_and_off(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        other = without_mfa(accounts.login("alice", PASSWORD, CLIENT))
        assert isinstance(other, SignedIn)
        _, codes = self.turn_on(accounts, alice, clock)
        live = accounts.list_sessions(alice.user.owner)
        assert [session.session_id for session in live] == [alice.session.session_id]
        third = accounts.login("alice", PASSWORD, CLIENT)
        assert isinstance(third, MfaChallenge)
        accounts.login_mfa(third.challenge, codes[0], CLIENT)
        with pytest.raises(InvalidCredentials):
            accounts.disable_mfa(
                alice.user.owner, "wrong password", codes[1], CLIENT, keep=alice.session.session_id
            )
        accounts.disable_mfa(
            alice.user.owner, PASSWORD, codes[1], CLIENT, keep=alice.session.session_id
        )
        live = accounts.list_sessions(alice.user.owner)
        assert [session.session_id for session in live] == [alice.session.session_id]
        assert not accounts.profile(alice.user.owner).mfa_enabled
        assert isinstance(accounts.login("alice", PASSWORD, CLIENT), SignedIn)

    def test_deleting_the_account_takes_the_factor_along(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock, stores: Stores
    ) -> None:
        secret, codes = self.turn_on(accounts, alice, clock)
        challenge = accounts.login("alice", PASSWORD, CLIENT)
        assert isinstance(challenge, MfaChallenge)
        accounts.delete_account(alice.user.owner, PASSWORD, CLIENT)
        # Marked: a challenge issued before opens nothing, with a code or a recovery code.
        for code in (pyotp.TOTP(secret).at(clock.now), codes[0]):
            with pytest.raises(ChallengeExpired):
                accounts.login_mfa(challenge.challenge, code, CLIENT)
        assert stores.sessions.all("alice") == [alice.session]
        purged(stores, alice.user.owner)
        assert stores.mfa.factors(alice.user.owner).totp is None


class TestLockout:
    def fail(self, accounts: Accounts, times: int, username: str = "alice") -> None:
        for _ in range(times):
            with pytest.raises(InvalidCredentials):
                accounts.login(username, "wrong password", CLIENT)

    def test_back_off_doubles_after_the_free_failures(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        self.fail(accounts, 5)
        # The fifth failure is still free.
        assert_signed_in(without_mfa(accounts.login("alice", PASSWORD, CLIENT)), "alice")
        self.fail(accounts, 6)  # the counter was reset by the success: 6th failure locks 1 s
        for expected in (1, 2, 4, 8):
            with pytest.raises(TooManyAttempts) as locked:
                accounts.login("alice", PASSWORD, CLIENT)  # even the right password waits
            assert locked.value.retry_after == expected
            clock.advance(seconds=expected)
            self.fail(accounts, 1)
        assert "lockout" in kinds(accounts, alice.user.owner)

    def test_back_off_is_capped(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        self.fail(accounts, 5)
        waits: list[int] = []
        for _ in range(12):
            self.fail(accounts, 1)
            with pytest.raises(TooManyAttempts) as locked:
                accounts.login("alice", PASSWORD, CLIENT)
            waits.append(locked.value.retry_after)
            clock.advance(seconds=locked.value.retry_after)
        assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]

    def test_failures_are_forgotten_after_the_window(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        self.fail(accounts, 5)
        clock.advance(hours=1, seconds=1)
        self.fail(accounts, 5)
        assert_signed_in(without_mfa(accounts.login("alice", PASSWORD, CLIENT)), "alice")

    def test_unknown_names_lock_the_same_way(self, accounts: Accounts) -> None:
        self.fail(accounts, 6, username="nobody")
        with pytest.raises(TooManyAttempts):
            accounts.login("nobody", "anything at all", CLIENT)


def test_refresh_token_round_trips_any_username() -> None:
    token = RefreshToken(username="Name With Spaces/ü", secret="s" * 43)
    assert RefreshToken.parse(token.encode()) == token


class TestLockoutHardening:
    def test_an_attacker_elsewhere_cannot_lock_the_owner_out(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        attacker = Client(ip="198.51.100.66", user_agent="curl")
        for _ in range(12):
            with contextlib.suppress(InvalidCredentials, TooManyAttempts):
                accounts.login("alice", "guess", attacker)
        with pytest.raises(TooManyAttempts):
            accounts.login("alice", PASSWORD, attacker)
        assert accounts.login("alice", PASSWORD, CLIENT).user.username == "alice"

    def test_parallel_guesses_cannot_slip_past_the_back_off(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        for _ in range(5):
            with pytest.raises(InvalidCredentials):
                accounts.login("alice", "wrong password", CLIENT)
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def guess() -> None:
            barrier.wait()
            try:
                accounts.login("alice", "another guess", CLIENT)
            except InvalidCredentials:
                outcomes.append("checked")
            except TooManyAttempts:
                outcomes.append("refused")

        threads = [threading.Thread(target=guess) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Only one of the burst has its password checked; the rest wait out the lock.
        assert sorted(outcomes) == ["checked"] + ["refused"] * 7


class TestIdentity:
    def test_nothing_of_a_deleted_account_works_for_a_new_one_of_its_name(
        self, accounts: Accounts, alice: SignedIn, stores: Stores, clock: FakeClock
    ) -> None:
        old = alice.user.owner
        old_claims = accounts_claims(accounts, alice)
        accounts.delete_account(old, PASSWORD, CLIENT)
        # The attacker's login raced the deletion: its session write comes after the mark (or
        # the purge). It is conditional on the live profile with the old id: it opens nothing.
        with pytest.raises(OwnerMissing):
            accounts_sessions(accounts).start(old, token_version=0, user_agent="late")
        purged(stores, old)
        with pytest.raises(OwnerMissing):
            accounts_sessions(accounts).start(old, token_version=0, user_agent="late")
        accounts.register("Alice", "a different passphrase", CLIENT)
        new = without_mfa(accounts.login("alice", "a different passphrase", CLIENT))
        assert new.user.username == "Alice"
        assert new.user.user_id != old.user_id
        assert alice.refresh is not None
        with pytest.raises(InvalidRefreshToken):
            accounts.refresh(alice.refresh.encode(), CLIENT)
        with pytest.raises(TokenRevoked):
            accounts.authorize(old_claims)
        with pytest.raises(UserNotFound):
            accounts.profile(old)
        assert sorted(kinds(accounts, new.user.owner)) == ["login", "signup"]

    def test_a_stale_session_row_under_the_name_is_not_the_new_accounts(
        self, accounts: Accounts, stores: Stores, clock: FakeClock
    ) -> None:
        accounts.register("bob", PASSWORD, CLIENT)
        first = without_mfa(accounts.login("bob", PASSWORD, CLIENT))
        # A purge that took the profile but missed a session row (as a version without the
        # conditional session write could): the row stays the old account's.
        stores.partitions.release_claims(first.user.owner, email=None)
        assert stores.partitions.delete_profile(first.user.owner) == 1
        accounts.register("bob", PASSWORD, CLIENT)
        new = without_mfa(accounts.login("bob", PASSWORD, CLIENT))
        assert stores.sessions.get("bob", first.session.session_id) is not None
        listed = accounts.list_sessions(new.user.owner)
        assert [session.session_id for session in listed] == [new.session.session_id]
        with pytest.raises(TokenRevoked):
            accounts.authorize(accounts_claims(accounts, first))

    def test_names_differing_only_in_case_are_one_name(self, accounts: Accounts) -> None:
        accounts.register("Carol", PASSWORD, CLIENT)
        for other in ("carol", "CAROL"):
            with pytest.raises(UsernameTaken):
                accounts.register(other, PASSWORD, CLIENT)
        # Any case logs in to the one account, which keeps the case it was typed in.
        assert accounts.login("cAROL", PASSWORD, CLIENT).user.username == "Carol"
        with pytest.raises(InvalidCredentials):
            accounts.login("CAROL", "wrong password", CLIENT)

    def test_legacy_rows_get_an_id_on_first_use_and_keep_their_exact_names(
        self, accounts: Accounts, stores: Stores
    ) -> None:
        upper, lower = node_scrypt_hashes(["upper password 1", "lower password 1"])
        add_legacy(stores.users, "Dan", upper)
        add_legacy(stores.users, "dan", lower)
        with pytest.raises(InvalidCredentials):
            accounts.login("Dan", "wrong password", CLIENT)
        first = stores.users.get("Dan")
        assert first is not None
        assert first.user_id is not None
        assert accounts.login("Dan", "upper password 1", CLIENT).user.user_id == first.user_id
        second = without_mfa(accounts.login("dan", "lower password 1", CLIENT)).user
        assert second.user_id not in {None, first.user_id}
        with pytest.raises(UsernameTaken):
            accounts.register("DAN", PASSWORD, CLIENT)


def accounts_claims(accounts: Accounts, signed_in: SignedIn) -> Claims:
    return accounts._tokens.verify(signed_in.access.token)


def accounts_sessions(accounts: Accounts) -> Sessions:
    return accounts._sessions


def address(index: int) -> Client:
    """One of a botnet's many addresses (an IPv6 /64 each, as the rate key would be)."""
    return Client(ip=f"2001:db8:{index:x}::/64", user_agent="bot")


class TestUnknownDevices:
    """The account-wide budget: guesses from every address the account does not know share
    ``account_free_failures`` (20 here), while the owner's known device is exempt."""

    @staticmethod
    def guess(accounts: Accounts, name: str, client: Client) -> str:
        try:
            accounts.login(name, "a wrong guess", client)
        except InvalidCredentials:
            return "checked"
        except TooManyAttempts as slowed:
            return f"slowed {slowed.retry_after}"
        return "logged in"

    def test_a_botnet_is_slowed_while_the_owners_known_device_logs_in(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        device = alice.device
        assert device is not None
        outcomes = [self.guess(accounts, "alice", address(index)) for index in range(22)]
        # 20 free, the 21st checked (and starts a 1 s lock), the 22nd refused unchecked.
        assert outcomes == ["checked"] * 21 + ["slowed 1"]
        owner = without_mfa(accounts.login("alice", PASSWORD, CLIENT, device=device))
        assert isinstance(owner, SignedIn)
        # Without the cookie (a new browser), the owner waits like everyone unknown.
        with pytest.raises(TooManyAttempts):
            accounts.login("alice", PASSWORD, address(99))
        # The back-off keeps doubling for unknown devices: 2 s, 4 s ...
        waits: list[int] = []
        for index in range(100, 103):
            clock.advance(seconds=waits[-1] if waits else 1)
            assert self.guess(accounts, "alice", address(index)) == "checked"
            waits.append(int(self.guess(accounts, "alice", address(index + 50)).split()[1]))
        assert waits == [2, 4, 8]
        assert "lockout" in kinds(accounts, alice.user.owner)

    def test_the_owners_address_back_off_still_applies_to_the_known_device(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        device = alice.device
        for _ in range(6):
            with pytest.raises(InvalidCredentials):
                accounts.login("alice", "wrong password", CLIENT, device=device)
        with pytest.raises(TooManyAttempts):
            accounts.login("alice", PASSWORD, CLIENT, device=device)

    def test_unknown_names_get_the_same_treatment(self, accounts: Accounts) -> None:
        outcomes = [self.guess(accounts, "nobody", address(index)) for index in range(22)]
        assert outcomes == ["checked"] * 21 + ["slowed 1"]

    def test_a_device_known_to_another_account_or_a_deleted_one_is_not_known(
        self, accounts: Accounts, alice: SignedIn, stores: Stores
    ) -> None:
        accounts.register("bob", PASSWORD, CLIENT)
        bob = without_mfa(accounts.login("bob", PASSWORD, CLIENT))
        assert isinstance(bob, SignedIn)
        old = alice.device
        accounts.delete_account(alice.user.owner, PASSWORD, CLIENT)
        purged(stores, alice.user.owner)
        accounts.register("alice", "a new owner's passphrase", CLIENT)
        for index in range(21):
            self.guess(accounts, "alice", address(index))
        for device in (old, bob.device, "garbage", f"{old}x", None):
            with pytest.raises(TooManyAttempts):
                accounts.login("alice", "a new owner's passphrase", address(50), device=device)

    def test_successes_from_unknown_devices_do_not_use_up_the_budget(
        self, accounts: Accounts, alice: SignedIn
    ) -> None:
        for index in range(30):
            assert isinstance(accounts.login("alice", PASSWORD, address(index)), SignedIn)
        outcomes = [self.guess(accounts, "alice", address(index)) for index in range(21)]
        assert outcomes == ["checked"] * 21

    def test_an_old_cookie_expires(
        self, accounts: Accounts, alice: SignedIn, clock: FakeClock
    ) -> None:
        clock.advance(days=366)
        for index in range(21):
            self.guess(accounts, "alice", address(index))
        with pytest.raises(TooManyAttempts):
            accounts.login("alice", PASSWORD, CLIENT, device=alice.device)
