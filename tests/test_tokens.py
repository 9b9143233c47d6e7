from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import boto3
import jwt
import pytest

from chalicelib.tokens import (
    CachedKeys,
    InvalidToken,
    KeyRing,
    SecretsManagerKeySource,
    SigningKey,
    SigningKeyError,
    TokenService,
)
from tests.conftest import FakeClock

OLD = SigningKey(kid="v1", secret=b"o" * 64)
CURRENT = SigningKey(kid="v2", secret=b"c" * 64)
NEWER = SigningKey(kid="v3", secret=b"n" * 64)


class FakeSource:
    """A key source whose ring the test rotates; counts fetches to check the refetch bound."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.fetches = 0

    def fetch(self) -> KeyRing:
        self.fetches += 1
        return self.ring


ROTATED_ONCE = KeyRing(current=CURRENT, previous=OLD)


def make_service(clock: FakeClock, ring: KeyRing = ROTATED_ONCE) -> tuple[TokenService, FakeSource]:
    source = FakeSource(ring)
    keys = CachedKeys(source, max_age=timedelta(minutes=5), clock=clock)
    service = TokenService(keys, issuer="gatehouse", audience="api", ttl_seconds=900, clock=clock)
    return service, source


def sign(claims: dict[str, Any], key: SigningKey = CURRENT, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key.secret, algorithm=algorithm, headers={"kid": key.kid})


def valid_claims(clock: FakeClock) -> dict[str, Any]:
    now = int(clock().timestamp())
    return {
        "sub": "alice",
        "username": "alice",
        "role": "user",
        "ver": 0,
        "sid": "session-1",
        "iat": now,
        "exp": now + 900,
        "iss": "gatehouse",
        "aud": "api",
    }


def test_issued_token_verifies_with_all_claims(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    issued = service.issue(
        user_id="id-alice", username="alice", role="admin", token_version=3, session_id="s1"
    )
    claims = service.verify(issued.token)
    assert (claims.subject, claims.username, claims.role) == ("id-alice", "alice", "admin")
    assert (claims.token_version, claims.session_id) == (3, "s1")
    assert claims.expires_at - claims.issued_at == 900 == issued.expires_in
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "HS256"
    assert header["kid"] == CURRENT.kid


def test_token_expires_exactly_at_its_lifetime(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    token = service.issue(
        user_id="id-alice", username="alice", role="user", token_version=0, session_id="s"
    ).token
    clock.advance(seconds=899)
    assert service.verify(token).username == "alice"
    clock.advance(seconds=1)
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(token)


def test_token_signed_with_the_previous_key_still_verifies(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    assert service.verify(sign(valid_claims(clock), OLD)).username == "alice"


def test_token_from_two_versions_back_is_rejected(clock: FakeClock) -> None:
    service, _ = make_service(clock, KeyRing(current=NEWER, previous=CURRENT))
    with pytest.raises(InvalidToken, match="unknown signing key"):
        service.verify(sign(valid_claims(clock), OLD))


def test_wrong_key_under_a_known_kid_is_rejected(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    forged = SigningKey(kid=CURRENT.kid, secret=b"x" * 64)
    with pytest.raises(InvalidToken):
        service.verify(sign(valid_claims(clock), forged))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithms_are_rejected(clock: FakeClock, algorithm: str) -> None:
    service, _ = make_service(clock)
    with pytest.raises(InvalidToken):
        service.verify(sign(valid_claims(clock), CURRENT, algorithm))


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join(
        [part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)]
    )


@pytest.mark.parametrize("alg", ["none", "None", "RS256", "ES256"])
def test_alg_none_and_asymmetric_headers_are_rejected(clock: FakeClock, alg: str) -> None:
    service, _ = make_service(clock)
    token = _unsigned({"alg": alg, "typ": "JWT", "kid": CURRENT.kid}, valid_claims(clock))
    with pytest.raises(InvalidToken):
        service.verify(token)


def test_tampered_payload_is_rejected(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    header, _, signature = sign(valid_claims(clock)).split(".")
    tampered_claims = {**valid_claims(clock), "role": "admin"}
    payload = base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).rstrip(b"=")
    with pytest.raises(InvalidToken):
        service.verify(f"{header}.{payload.decode()}.{signature}")


@pytest.mark.parametrize(
    "claim", ["sub", "username", "role", "ver", "sid", "iat", "exp", "iss", "aud"]
)
def test_every_claim_is_required(clock: FakeClock, claim: str) -> None:
    service, _ = make_service(clock)
    claims = valid_claims(clock)
    del claims[claim]
    with pytest.raises(InvalidToken):
        service.verify(sign(claims))


@pytest.mark.parametrize(
    "override",
    [
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"exp": "tomorrow"},
        {"username": ""},
        {"role": 7},
        {"iat": 10**12},
        {"ver": "0"},
        {"ver": True},
        {"sid": ""},
    ],
)
def test_wrong_claim_values_are_rejected(clock: FakeClock, override: dict[str, Any]) -> None:
    service, _ = make_service(clock)
    with pytest.raises(InvalidToken):
        service.verify(sign({**valid_claims(clock), **override}))


def test_token_without_kid_is_rejected(clock: FakeClock) -> None:
    service, _ = make_service(clock)
    token = jwt.encode(valid_claims(clock), CURRENT.secret, algorithm="HS256")
    with pytest.raises(InvalidToken):
        service.verify(token)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "🙂.🙂.🙂"])
def test_garbage_is_rejected(clock: FakeClock, garbage: str) -> None:
    service, _ = make_service(clock)
    with pytest.raises(InvalidToken):
        service.verify(garbage)


def test_keys_are_cached_and_refreshed_after_max_age(clock: FakeClock) -> None:
    service, source = make_service(clock)
    service.issue(
        user_id="id-alice", username="alice", role="user", token_version=0, session_id="s"
    )
    service.issue(user_id="id-bob", username="bob", role="user", token_version=0, session_id="s")
    assert source.fetches == 1
    source.ring = KeyRing(current=NEWER, previous=CURRENT)
    clock.advance(minutes=5)
    token = service.issue(
        user_id="id-alice", username="alice", role="user", token_version=0, session_id="s"
    ).token
    assert jwt.get_unverified_header(token)["kid"] == NEWER.kid
    assert source.fetches == 2


def test_unknown_kid_refetches_at_a_bounded_rate(clock: FakeClock) -> None:
    service, source = make_service(clock)
    service.issue(
        user_id="id-alice", username="alice", role="user", token_version=0, session_id="s"
    )
    clock.advance(seconds=31)
    # Another container rotated the key: a token with the new kid is accepted at once.
    source.ring = KeyRing(current=NEWER, previous=CURRENT)
    assert service.verify(sign(valid_claims(clock), NEWER)).username == "alice"
    fetches = source.fetches
    for kid in ("x1", "x2", "x3"):
        with pytest.raises(InvalidToken):
            service.verify(sign(valid_claims(clock), SigningKey(kid=kid, secret=b"k" * 64)))
    assert source.fetches == fetches


def test_secrets_manager_source_reads_current_and_previous(aws: boto3.Session) -> None:
    client = aws.client("secretsmanager")
    first = client.create_secret(Name="jwt", SecretString="a" * 48)["VersionId"]
    source = SecretsManagerKeySource(client, "jwt")
    ring = source.fetch()
    assert ring.current == SigningKey(kid=first, secret=b"a" * 48)
    assert ring.previous is None

    second = client.put_secret_value(SecretId="jwt", SecretString="b" * 48)["VersionId"]
    ring = source.fetch()
    assert ring.current.kid == second
    assert ring.previous == SigningKey(kid=first, secret=b"a" * 48)


def test_secrets_manager_source_refuses_a_short_or_missing_key(aws: boto3.Session) -> None:
    client = aws.client("secretsmanager")
    client.create_secret(Name="short", SecretString="too-short")
    with pytest.raises(SigningKeyError):
        SecretsManagerKeySource(client, "short").fetch()
    with pytest.raises(SigningKeyError):
        SecretsManagerKeySource(client, "absent").fetch()
