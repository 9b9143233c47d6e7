"""Two-factor authentication through chalice's test client, against moto: enrolment, the login
challenge, replay, recovery codes, tries, expiry, sessions, disabling and the event log."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import timedelta
from typing import Any

import pyotp
import pytest

import app as app_module
from chalicelib.logs import JsonFormatter
from tests.conftest import Api, FakeClock
from tests.test_sessions import set_cookies

PASSWORD = "correct horse battery"
STEP = timedelta(seconds=30)
CHALLENGE_REQUIRED = "Two-factor code required"
INVALID_CODE = {"message": "Invalid code"}
EXPIRED = {"message": "Sign-in expired; please log in again"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def code(secret: str, clock: FakeClock, *, steps: int = 0) -> str:
    """What the authenticator app shows, ``steps`` steps from the injected clock's now."""
    return pyotp.TOTP(secret).at(clock.now + steps * STEP)


def wrong_code(secret: str, clock: FakeClock) -> str:
    window = {code(secret, clock, steps=steps) for steps in (-1, 0, 1)}
    return next(guess for guess in ("000000", "000001", "000002", "000003") if guess not in window)


def delete(api: Api, path: str, body: object, token: str) -> Any:
    headers = {"Content-Type": "application/json", **bearer(token)}
    return api.client.http.request("DELETE", path, headers=headers, body=json.dumps(body).encode())


def enrol(api: Api, token: str, clock: FakeClock) -> tuple[str, list[str]]:
    """Turn the factor on; the secret and the recovery codes. The next step has begun."""
    begun = api.post("/auth/mfa/totp", {}, bearer(token))
    assert begun.status_code == 200, begun.body
    secret = str(begun.json_body["secret"])
    confirmed = api.post("/auth/mfa/totp/confirm", {"code": code(secret, clock)}, bearer(token))
    assert confirmed.status_code == 200, confirmed.body
    clock.advance(seconds=30)
    return secret, list(confirmed.json_body["recoveryCodes"])


def challenge(api: Api, username: str = "alice") -> str:
    """The first step of a login to an account with a second factor: a challenge, no tokens."""
    response = api.post("/auth/login", {"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.body
    body = response.json_body
    assert set(body) == {"message", "mfaRequired", "challenge"}
    assert (body["message"], body["mfaRequired"]) == (CHALLENGE_REQUIRED, True)
    assert "Set-Cookie" not in response.headers
    return str(body["challenge"])


def second_step(api: Api, raw_challenge: str, given: str, **extra: str) -> Any:
    return api.post("/auth/login/mfa", {"challenge": raw_challenge, "code": given, **extra})


def kinds(api: Api, token: str) -> list[str]:
    """The kinds of the account's security events, sorted (events of one instant have no order)."""
    response = api.get("/auth/events?limit=100", token)
    assert response.status_code == 200
    return sorted(event["type"] for event in response.json_body["events"])


@pytest.fixture
def token(api: Api) -> str:
    api.signup("alice")
    return api.login("alice")


@pytest.fixture
def log_lines() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("gatehouse"), logging.getLogger("chalicelib")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: stream.getvalue()
    for logger in loggers:
        logger.removeHandler(handler)


def test_enrol_confirm_then_log_in_with_a_code(
    api: Api, token: str, clock: FakeClock, log_lines: Any
) -> None:
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is False
    begun = api.post("/auth/mfa/totp", {}, bearer(token))
    assert begun.status_code == 200
    enrolment = begun.json_body
    assert set(enrolment) == {"secret", "uri", "qrSvg"}
    secret = enrolment["secret"]
    assert re.fullmatch("[A-Z2-7]{32}", secret)
    assert enrolment["uri"].startswith("otpauth://totp/Gatehouse:alice?")
    assert f"secret={secret}" in enrolment["uri"]
    assert enrolment["qrSvg"].startswith("<svg")
    # Not on yet: a login still gives tokens at once.
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is False

    confirmed = api.post("/auth/mfa/totp/confirm", {"code": code(secret, clock)}, bearer(token))
    assert confirmed.status_code == 200
    assert confirmed.json_body["message"] == "Two-factor authentication enabled"
    recovery = confirmed.json_body["recoveryCodes"]
    assert len(recovery) == len(set(recovery)) == 10
    assert all(re.fullmatch("[0-9a-z]{5}-[0-9a-z]{5}", each) for each in recovery)
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is True

    clock.advance(seconds=30)
    raw = challenge(api)
    response = second_step(api, raw, code(secret, clock))
    assert response.status_code == 200, response.body
    body = response.json_body
    assert set(body) == {"message", "token", "username", "expiresIn", "sessionId"}
    assert (body["message"], body["username"]) == ("Login successful", "alice")
    # The refresh token, and the cookie that makes this browser known to the account.
    assert [each.split("=")[0] for each in set_cookies(response)] == [
        "gatehouse_refresh",
        "gatehouse_device",
    ]
    profile = api.get("/auth/user", body["token"])
    assert profile.status_code == 200
    assert profile.json_body["mfaEnabled"] is True
    assert kinds(api, body["token"]) == ["login", "login", "mfa_enabled", "signup"]
    # The newest: the second step's login, with its session.
    events = api.get("/auth/events?limit=1", body["token"]).json_body["events"]
    assert (events[0]["type"], events[0]["details"]) == ("login", {"sessionId": body["sessionId"]})
    # The secret and the challenge never reach the logs.
    logged = log_lines()
    assert "mfa_enabled" in logged
    for secret_text in (secret, raw, raw.split(".")[1], recovery[0]):
        assert secret_text not in logged


def test_a_code_is_accepted_once(api: Api, token: str, clock: FakeClock) -> None:
    secret, _ = enrol(api, token, clock)
    used = code(secret, clock)
    assert second_step(api, challenge(api), used).status_code == 200

    replayed = second_step(api, challenge(api), used)
    assert (replayed.status_code, replayed.json_body) == (401, INVALID_CODE)
    clock.advance(seconds=30)
    assert second_step(api, challenge(api), code(secret, clock)).status_code == 200


def test_a_recovery_code_works_once(api: Api, token: str, clock: FakeClock) -> None:
    _, recovery = enrol(api, token, clock)
    # As a person may type it: upper case, without the dash.
    typed = recovery[0].replace("-", "").upper()
    response = second_step(api, challenge(api), typed, refreshTokenDelivery="body")
    assert response.status_code == 200
    assert response.json_body["refreshToken"]
    assert "Set-Cookie" not in response.headers

    again = second_step(api, challenge(api), recovery[0])
    assert (again.status_code, again.json_body) == (401, INVALID_CODE)
    assert second_step(api, challenge(api), recovery[1]).status_code == 200


def test_five_wrong_codes_end_the_challenge_and_count_toward_the_back_off(
    api: Api, token: str, clock: FakeClock
) -> None:
    secret, _ = enrol(api, token, clock)
    raw = challenge(api)
    for _ in range(5):
        wrong = second_step(api, raw, wrong_code(secret, clock))
        assert (wrong.status_code, wrong.json_body) == (401, INVALID_CODE)
    dead = second_step(api, raw, code(secret, clock))
    assert (dead.status_code, dead.json_body) == (401, EXPIRED)

    # Six attempts on the account from this address: the password login backs off too.
    locked = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    clock.advance(seconds=2)
    signed_in = second_step(api, challenge(api), code(secret, clock))
    assert signed_in.status_code == 200
    log = kinds(api, signed_in.json_body["token"])
    assert (log.count("mfa_failure"), log.count("login")) == (5, 2)


def test_a_challenge_lives_five_minutes(api: Api, token: str, clock: FakeClock) -> None:
    secret, _ = enrol(api, token, clock)
    raw = challenge(api)
    clock.advance(minutes=4, seconds=50)
    assert second_step(api, raw, code(secret, clock)).status_code == 200

    raw = challenge(api)
    clock.advance(minutes=5)
    expired = second_step(api, raw, code(secret, clock))
    assert (expired.status_code, expired.json_body) == (401, EXPIRED)


@pytest.mark.parametrize("raw", ["garbage", "YWxpY2U." + "x" * 43])
def test_a_malformed_or_unknown_challenge_is_refused(api: Api, token: str, raw: str) -> None:
    response = second_step(api, raw, "123456")
    assert (response.status_code, response.json_body) == (401, EXPIRED)


def test_enabling_ends_the_other_sessions_but_not_the_callers(
    api: Api, token: str, clock: FakeClock
) -> None:
    other = api.login("alice")
    enrol(api, token, clock)
    assert api.get("/auth/user", other).status_code == 403
    assert api.get("/auth/user", token).status_code == 200
    sessions = api.get("/auth/sessions", token).json_body["sessions"]
    assert [session["current"] for session in sessions] == [True]


def test_disabling_needs_the_password_then_a_code(api: Api, token: str, clock: FakeClock) -> None:
    secret, _ = enrol(api, token, clock)
    other = second_step(api, challenge(api), code(secret, clock)).json_body["token"]
    clock.advance(seconds=30)

    wrong_password = delete(
        api, "/auth/mfa/totp", {"password": "not it at all", "code": code(secret, clock)}, token
    )
    assert wrong_password.status_code == 401
    assert wrong_password.json_body == {"message": "Invalid username or password"}
    wrong = delete(
        api, "/auth/mfa/totp", {"password": PASSWORD, "code": wrong_code(secret, clock)}, token
    )
    assert (wrong.status_code, wrong.json_body) == (400, INVALID_CODE)
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is True

    done = delete(api, "/auth/mfa/totp", {"password": PASSWORD, "code": code(secret, clock)}, token)
    assert done.status_code == 200
    assert done.json_body == {"message": "Two-factor authentication disabled"}
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is False
    # The other session ended; a login gives tokens at once again.
    assert api.get("/auth/user", other).status_code == 403
    assert api.get("/auth/user", api.login("alice")).status_code == 200
    again = delete(api, "/auth/mfa/totp", {"password": PASSWORD, "code": "123456"}, token)
    assert again.status_code == 409
    assert kinds(api, token) == [
        "login",
        "login",
        "login",
        "mfa_disable_failure",
        "mfa_disabled",
        "mfa_enabled",
        "mfa_failure",
        "signup",
    ]


def test_disabling_with_a_recovery_code(api: Api, token: str, clock: FakeClock) -> None:
    _, recovery = enrol(api, token, clock)
    done = delete(api, "/auth/mfa/totp", {"password": PASSWORD, "code": recovery[3]}, token)
    assert done.status_code == 200
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is False


def test_enrolment_conflicts_and_wrong_first_codes(api: Api, token: str, clock: FakeClock) -> None:
    nothing = api.post("/auth/mfa/totp/confirm", {"code": "123456"}, bearer(token))
    assert nothing.status_code == 409
    secret = api.post("/auth/mfa/totp", {}, bearer(token)).json_body["secret"]
    wrong = api.post("/auth/mfa/totp/confirm", {"code": wrong_code(secret, clock)}, bearer(token))
    assert (wrong.status_code, wrong.json_body) == (400, INVALID_CODE)
    assert api.get("/auth/user", token).json_body["mfaEnabled"] is False

    enrol(api, token, clock)
    assert api.post("/auth/mfa/totp", {}, bearer(token)).status_code == 409
    assert api.post("/auth/mfa/totp/confirm", {"code": "123456"}, bearer(token)).status_code == 409


def test_an_account_disabled_between_the_steps_gets_no_tokens(
    api: Api, token: str, clock: FakeClock, dependencies: app_module.Dependencies
) -> None:
    secret, _ = enrol(api, token, clock)
    raw = challenge(api)
    dependencies.stores.users.set_access(
        "alice", role=None, disabled=True, updated_at="2026-01-01T00:00:00.000Z"
    )
    refused = second_step(api, raw, code(secret, clock))
    assert (refused.status_code, refused.json_body) == (403, {"message": "Account is disabled"})


def test_the_mfa_routes_need_a_token(api: Api) -> None:
    assert api.post("/auth/mfa/totp", {}).status_code == 401
    assert api.post("/auth/mfa/totp/confirm", {"code": "123456"}).status_code == 401
