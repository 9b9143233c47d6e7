"""The HTTP contract through chalice's test client, against moto."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
from typing import Any

import boto3
import jwt
import pytest
from botocore.stub import Stubber
from chalice.app import CORSConfig
from chalice.test import Client

import app as app_module
from chalicelib.keys import user_key
from chalicelib.logs import JsonFormatter
from tests.conftest import ROOT, Api, FakeClock, node_scrypt_hashes
from tests.test_sessions import cookie_of
from tools.localaws import Resources

PASSWORD = "correct horse battery"


def test_health_needs_no_token(api: Api) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json_body == {"status": "ok"}


def test_signup_login_and_profile(api: Api) -> None:
    response = api.post("/auth/signup", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    assert response.json_body == {"message": "User created successfully", "username": "alice"}

    response = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json_body
    assert set(body) == {"message", "token", "username", "expiresIn", "sessionId"}
    assert (body["username"], body["expiresIn"]) == ("alice", 900)
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["username"], claims["role"]) == ("alice", "user")
    # The subject is the account's immutable id, which the profile shows too.
    assert re.fullmatch("[0-9a-f]{32}", claims["sub"])
    assert claims["iss"] == "gatehouse"
    assert claims["aud"] == "gatehouse-api"

    response = api.get("/auth/user", body["token"])
    assert response.status_code == 200
    profile = response.json_body
    assert set(profile) == {
        "username",
        "userId",
        "createdAt",
        "role",
        "updatedAt",
        "emailVerified",
        "mfaEnabled",
    }
    assert (profile["emailVerified"], profile["mfaEnabled"]) == (False, False)
    assert (profile["username"], profile["role"]) == ("alice", "user")
    assert profile["userId"] == claims["sub"]
    assert "$scrypt$" not in response.body.decode()
    assert response.headers["Cache-Control"] == "no-store"


def test_a_taken_username_gets_409(api: Api) -> None:
    api.signup("alice")
    response = api.post("/auth/signup", {"username": "alice", "password": "another password"})
    assert response.status_code == 409
    assert response.json_body == {"message": "Username is already taken"}
    # The first account keeps its password.
    assert api.get("/auth/user", api.login("alice")).json_body["username"] == "alice"


def test_unknown_user_and_wrong_password_get_the_same_401(api: Api) -> None:
    api.signup("alice")
    wrong = api.post("/auth/login", {"username": "alice", "password": "wrong password"})
    unknown = api.post("/auth/login", {"username": "nobody", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json_body == unknown.json_body == {"message": "Invalid username or password"}


def test_a_user_of_the_original_system_logs_in_with_the_old_password(api: Api, table: Any) -> None:
    (legacy_hash,) = node_scrypt_hashes(["my old password"])
    table.put_item(
        Item={
            **user_key("Legacy User"),
            "username": "Legacy User",
            "passwordHash": legacy_hash,
            "createdAt": "2024-05-01T10:00:00.000Z",
        }
    )
    token = api.login("Legacy User", "my old password")
    stored = table.get_item(Key=user_key("Legacy User"))["Item"]
    # Its first use gave the row an id, the token's subject.
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == stored["userId"]
    assert api.get("/auth/user", token).json_body == {
        "username": "Legacy User",
        "userId": stored["userId"],
        "emailVerified": False,
        "createdAt": "2024-05-01T10:00:00.000Z",
        "role": "user",
        "updatedAt": table.get_item(Key=user_key("Legacy User"))["Item"]["updatedAt"],
        "mfaEnabled": False,
    }
    stored = table.get_item(Key=user_key("Legacy User"))["Item"]
    assert stored["passwordHash"].startswith("$scrypt$")
    assert stored["createdAt"] == "2024-05-01T10:00:00.000Z"
    # The upgraded hash works, and still only with the right password.
    again = api.login("Legacy User", "my old password")
    assert api.get("/auth/user", again).json_body["username"] == "Legacy User"
    bad = api.post("/auth/login", {"username": "Legacy User", "password": "not it at all"})
    assert bad.status_code == 401


def _forge(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def assert_invalid_token(response: Any) -> None:
    """The original system's 401, which sends its browser client back to its login page."""
    assert response.status_code == 401
    assert response.json_body == {"message": "Invalid or expired token"}


class TestAuthorizer:
    @pytest.fixture
    def token(self, api: Api) -> str:
        api.signup("alice")
        return api.login("alice")

    def test_no_header_is_401(self, api: Api, token: str) -> None:
        assert_invalid_token(api.client.http.get("/auth/user"))

    @pytest.mark.parametrize(
        "header", ["garbage", "Bearer", "Bearer ", "Bearer not.a.jwt", "Basic YWxpY2U6cHc="]
    )
    def test_garbage_is_401(self, api: Api, token: str, header: str) -> None:
        assert_invalid_token(api.client.http.get("/auth/user", headers={"Authorization": header}))

    def test_scheme_is_case_insensitive(self, api: Api, token: str) -> None:
        response = api.client.http.get("/auth/user", headers={"Authorization": f"bearer {token}"})
        assert response.status_code == 200

    def test_expired_token_is_401(self, api: Api, token: str, clock: FakeClock) -> None:
        clock.advance(seconds=899)
        assert api.get("/auth/user", token).status_code == 200
        clock.advance(seconds=1)
        assert_invalid_token(api.get("/auth/user", token))

    def test_alg_none_is_401(self, api: Api, token: str) -> None:
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token)["kid"]
        forged = _forge({**claims, "role": "admin"}, {"alg": "none", "typ": "JWT", "kid": kid})
        assert_invalid_token(api.get("/auth/user", forged))

    def test_wrong_key_is_401(self, api: Api, token: str) -> None:
        claims = jwt.decode(token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(token)["kid"]
        forged = jwt.encode(claims, "k" * 64, algorithm="HS256", headers={"kid": kid})
        assert_invalid_token(api.get("/auth/user", forged))

    def test_tampered_payload_is_401(self, api: Api, token: str) -> None:
        header, _, signature = token.split(".")
        claims = jwt.decode(token, options={"verify_signature": False})
        payload = _forge({**claims, "username": "bob", "sub": "bob"}, {}).split(".")[1]
        assert_invalid_token(api.get("/auth/user", f"{header}.{payload}.{signature}"))

    def test_a_revoked_token_is_a_403_with_its_reason(self, api: Api, token: str) -> None:
        assert api.client.http.post("/auth/logout-all", headers=_bearer(token)).status_code == 200
        response = api.get("/auth/user", token)
        assert response.status_code == 403
        assert response.json_body == {"message": "Access token revoked; please log in again"}
        assert response.headers["Cache-Control"] == "no-store"

    def test_key_rotation_keeps_previous_tokens_and_drops_older_ones(
        self, api: Api, token: str, clock: FakeClock, aws: boto3.Session, resources: Resources
    ) -> None:
        secrets = aws.client("secretsmanager")
        secrets.put_secret_value(SecretId=resources.jwt_secret_id, SecretString="n" * 64)
        clock.advance(seconds=301)  # past the key cache
        second = api.login("alice")
        assert jwt.get_unverified_header(second)["kid"] != jwt.get_unverified_header(token)["kid"]
        assert api.get("/auth/user", token).status_code == 200
        assert api.get("/auth/user", second).status_code == 200

        secrets.put_secret_value(SecretId=resources.jwt_secret_id, SecretString="m" * 64)
        clock.advance(seconds=301)
        assert_invalid_token(api.get("/auth/user", token))
        assert api.get("/auth/user", second).status_code == 200

    def test_a_transient_aws_error_is_a_503_and_the_next_call_is_authorized_afresh(
        self, api: Api, token: str, dependencies: app_module.Dependencies
    ) -> None:
        table = dependencies.table
        with Stubber(table.meta.client) as stubbed:
            stubbed.add_client_error("transact_get_items", "ThrottlingException")
            stubbed.add_client_error("get_item", "ThrottlingException")
            stubbed.add_client_error("query", "ThrottlingException")
            response = api.get("/auth/user", token)
        assert response.status_code == 503
        assert response.json_body == {"message": "Service temporarily unavailable, please retry"}
        assert api.get("/auth/user", token).status_code == 200


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cors_on(monkeypatch: pytest.MonkeyPatch) -> str:
    """The app as packaged with ``CORS_ALLOW_ORIGIN`` (the API's own domain)."""
    origin = "https://site.example"
    config = CORSConfig(allow_origin=origin)
    monkeypatch.setattr(app_module.app.api, "cors", config)
    for methods in app_module.app.routes.values():
        for entry in methods.values():
            monkeypatch.setattr(entry, "cors", config)
    return origin


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/auth/user", {}, 401),
        ("GET", "/auth/user", {"Authorization": "Bearer not.a.jwt"}, 401),
        ("GET", "/no/such/route", {}, 403),
        ("POST", "/auth/signup", {"Content-Type": "text/plain"}, 415),
        ("GET", "/items?limit=0", "alice", 400),
    ],
)
def test_every_error_carries_the_cors_headers_when_cors_is_on(
    api: Api, cors_on: str, method: str, path: str, headers: Any, status: int
) -> None:
    if headers == "alice":
        api.signup("alice")
        headers = _bearer(api.login("alice"))
    response = api.client.http.request(method, path, headers=headers, body=b"")
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == cors_on
    assert isinstance(response.json_body["message"], str)


BAD_INPUTS = [
    # (path, content type, raw body, status, words in the message)
    ("/auth/signup", "application/json", b"{not json", 400, "not valid JSON"),
    ("/auth/signup", "application/json", b"", 400, "not valid JSON"),
    ("/auth/signup", "application/json", b"\xff\xfe", 400, "not valid JSON"),
    ("/auth/signup", "application/json", b"[1, 2]", 400, "JSON object"),
    ("/auth/signup", "application/json", b'"alice"', 400, "JSON object"),
    ("/auth/signup", "application/json", b"null", 400, "JSON object"),
    ("/auth/signup", "application/json", b"[" * 15000, 400, "not valid JSON"),
    ("/auth/signup", "application/json", b"{}", 400, "username"),
    ("/auth/signup", "application/json", b'{"username": "alice"}', 400, "password"),
    ("/auth/signup", "application/json", b'{"password": "long enough"}', 400, "username"),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": "long enough", "role": "admin"}',
        400,
        "role",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": 7, "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": 12345678}',
        400,
        "password",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": null}',
        400,
        "password",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": ["a"], "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "al", "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "' + b"a" * 33 + b'", "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "al ice", "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "al/ice", "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice\\n", "password": "long enough"}',
        400,
        "username",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": "short"}',
        400,
        "password",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": "' + b"p" * 257 + b'"}',
        400,
        "password",
    ),
    (
        "/auth/signup",
        "application/json",
        b'{"username": "alice", "password": "' + b"p" * 70000 + b'"}',
        413,
        "larger",
    ),
    (
        "/auth/signup",
        "text/plain",
        b'{"username": "alice", "password": "long enough"}',
        415,
        "application/json",
    ),
    (
        "/auth/signup",
        "application/x-www-form-urlencoded",
        b"username=alice",
        415,
        "application/json",
    ),
    ("/auth/login", "application/json", b"{oops", 400, "not valid JSON"),
    ("/auth/login", "application/json", b"42", 400, "JSON object"),
    ("/auth/login", "application/json", b'{"username": "alice"}', 400, "password"),
    ("/auth/login", "application/json", b'{"username": "", "password": "x"}', 400, "username"),
    ("/auth/login", "application/json", b'{"username": "alice", "password": ""}', 400, "password"),
    (
        "/auth/login",
        "application/json",
        b'{"username": "alice", "password": true}',
        400,
        "password",
    ),
    (
        "/auth/login",
        "application/json",
        b'{"username": "alice", "password": "x", "extra": 1}',
        400,
        "extra",
    ),
    (
        "/auth/login",
        "application/json",
        b'{"username": "' + b"u" * 129 + b'", "password": "x"}',
        400,
        "username",
    ),
    (
        "/auth/login",
        "application/json",
        b'{"username": "alice", "password": "' + b"p" * 1025 + b'"}',
        400,
        "password",
    ),
    ("/auth/login", "text/html", b"<p>hi</p>", 415, "application/json"),
]


@pytest.mark.parametrize(("path", "content_type", "body", "status", "words"), BAD_INPUTS)
def test_bad_input_gets_a_clear_4xx_json_error(
    api: Api, path: str, content_type: str, body: bytes, status: int, words: str
) -> None:
    response = api.client.http.post(path, headers={"Content-Type": content_type}, body=body)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert words.lower() in response.json_body["message"].lower()


def test_a_body_without_content_type_is_refused(api: Api) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    response = api.client.http.post("/auth/signup", body=body)
    assert response.status_code == 415
    assert "application/json" in response.json_body["message"]


def test_validation_errors_name_fields_and_never_echo_the_input(api: Api) -> None:
    secret = "s3cr3t-but-short"
    response = api.post("/auth/signup", {"username": "a!", "password": secret[:5]})
    assert response.status_code == 400
    fields = {error["field"] for error in response.json_body["errors"]}
    assert fields == {"username", "password"}
    assert secret[:5] not in response.body.decode()


def test_unsupported_method_is_a_json_405(api: Api) -> None:
    response = api.client.http.delete("/auth/login")
    assert response.status_code == 405
    assert response.json_body == {"message": "Unsupported method: DELETE"}
    assert response.headers["Allow"] == "POST"


def test_a_profile_row_that_cannot_be_read_is_a_json_500_without_details(
    api: Api, table: Any
) -> None:
    table.put_item(Item={**user_key("broken"), "username": "broken"})
    response = api.post("/auth/login", {"username": "broken", "password": PASSWORD})
    assert response.status_code == 500
    assert response.json_body == {"message": "Internal server error"}


def test_dynamodb_throttling_is_an_honest_503(
    api: Api,
    dependencies: app_module.Dependencies,
    resources: Resources,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outside a request the stage's variables are not overlaid: provide them to reach the table.
    monkeypatch.setenv("TABLE_NAME", resources.table_name)
    monkeypatch.setenv("JWT_SECRET_ID", resources.jwt_secret_id)
    with Stubber(dependencies.table.meta.client) as stubber:
        # A signup is one transaction: the profile, the name's claim, the event, the per-IP hit.
        stubber.add_client_error(
            "transact_write_items",
            "ProvisionedThroughputExceededException",
            http_status_code=400,
        )
        response = api.post("/auth/signup", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "retry" in response.json_body["message"]


def test_an_unreachable_aws_is_an_honest_503(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens on port 9: every AWS call fails to connect.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setattr(app_module, "dependencies", app_module.Dependencies())
    with Client(app_module.app, stage_name="dev", project_dir=str(ROOT)) as client:
        response = Api(client).post("/auth/login", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 503
    assert response.json_body == {"message": "Service temporarily unavailable, please retry"}


@pytest.fixture
def log_lines() -> Any:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("gatehouse"), logging.getLogger("chalicelib")]
    for logger in loggers:
        logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    for logger in loggers:
        logger.removeHandler(handler)


def test_one_structured_log_line_per_request_and_no_secrets(api: Api, log_lines: Any) -> None:
    api.signup("alice", PASSWORD)
    login = api.post("/auth/login", {"username": "alice", "password": PASSWORD})
    token = login.json_body["token"]
    refresh_token = cookie_of(login)["gatehouse_refresh"].value
    api.get("/auth/user", token)

    requests = [line for line in log_lines() if line["message"] == "request"]
    assert [(r["method"], r["route"], r["status"]) for r in requests] == [
        ("POST", "/auth/signup", 201),
        ("POST", "/auth/login", 200),
        ("GET", "/auth/user", 200),
    ]
    events = [line for line in log_lines() if line["message"] == "security event"]
    assert [(e["event"], e["username"]) for e in events] == [
        ("signup", "alice"),
        ("login", "alice"),
    ]
    assert requests[2]["username"] == "alice"
    assert all(r["requestId"] and r["latencyMs"] >= 0 for r in requests)
    everything = json.dumps(log_lines())
    for secret in (PASSWORD, token, token.split(".")[2], refresh_token, "$scrypt$"):
        assert secret not in everything


def test_in_lambda_a_missing_variable_fails_the_cold_start_naming_it() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"TABLE_NAME", "JWT_SECRET_ID"}
    }
    env["AWS_LAMBDA_FUNCTION_NAME"] = "gatehouse-api"
    result = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "environment variable TABLE_NAME is required" in result.stderr


def test_an_unreadable_signing_key_is_a_503_not_a_denial(
    api: Api, clock: FakeClock, dependencies: app_module.Dependencies
) -> None:
    api.signup("alice")
    token = api.login("alice")
    clock.advance(seconds=301)  # the cached key ring expires and must be read again
    with Stubber(dependencies.secrets) as stubbed:
        stubbed.add_client_error("get_secret_value", "InternalServiceError", http_status_code=500)
        response = api.get("/auth/user", token)
    assert response.status_code == 503
    assert response.json_body == {"message": "Service temporarily unavailable, please retry"}
    # Nothing was cached: once the key can be read again, the same token works.
    assert api.get("/auth/user", token).status_code == 200


def test_a_missing_signing_key_is_a_503_too(
    api: Api, clock: FakeClock, aws: boto3.Session, resources: Resources
) -> None:
    api.signup("alice")
    token = api.login("alice")
    aws.client("secretsmanager").delete_secret(
        SecretId=resources.jwt_secret_id, ForceDeleteWithoutRecovery=True
    )
    clock.advance(seconds=301)
    assert api.get("/auth/user", token).status_code == 503
