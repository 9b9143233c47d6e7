"""EDGE_REQUIRED (set by the CDK app with enableWaf): requests that skipped CloudFront, and so
its web ACL, are refused with a 403 JSON message before any route runs; those on the API's own
domain (EDGE_EXEMPT_DOMAIN, behind a web ACL of its own) pass. Without the setting nothing
changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from chalice.local import LambdaContext
from chalice.test import Client

import app as app_module
from chalicelib.settings import Settings, SettingsError
from chalicelib.web.http import EDGE_REQUIRED_MESSAGE
from tests.conftest import ROOT
from tests.test_realtime_api import WEBSOCKET_URL, ws_event
from tests.test_settings import REQUIRED

EDGE_SECRET = "k" * 48
THROUGH_EDGE = {"X-Gatehouse-Edge": EDGE_SECRET}
PASSWORD = "correct horse battery"
API_DOMAIN = "api.example.com"
EXECUTE_API = "abc123.execute-api.eu-west-2.amazonaws.com"


@pytest.fixture
def edge_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_SECRET", EDGE_SECRET)


@pytest.fixture
def edge_required(monkeypatch: pytest.MonkeyPatch, edge_secret: None) -> None:
    """As the CDK app deploys with enableWaf and customApiDomain."""
    monkeypatch.setenv("EDGE_REQUIRED", "true")
    monkeypatch.setenv("EDGE_EXEMPT_DOMAIN", API_DOMAIN)
    monkeypatch.setenv("WEBSOCKET_URL", WEBSOCKET_URL)


@pytest.fixture
def client(dependencies: app_module.Dependencies) -> Iterator[Client]:
    """Chalice's test client, unchecked: the refusal is an answer of the deployment, not of a
    route, so the OpenAPI document does not list it for public routes."""
    with Client(app_module.app, stage_name="dev", project_dir=str(ROOT)) as test_client:
        yield test_client


def post(client: Client, path: str, body: object, headers: dict[str, str]) -> Any:
    return client.http.post(
        path,
        headers={"Content-Type": "application/json", **headers},
        body=json.dumps(body),
    )


def token(client: Client, headers: dict[str, str]) -> str:
    credentials = {"username": "alice", "password": PASSWORD}
    assert post(client, "/auth/signup", credentials, headers).status_code == 201
    response = post(client, "/auth/login", credentials, headers)
    assert response.status_code == 200, response.body
    return str(response.json_body["token"])


def assert_refused(response: Any) -> None:
    assert response.status_code == 403
    assert response.json_body == {"message": EDGE_REQUIRED_MESSAGE}
    assert response.headers["Content-Type"] == "application/json"
    # Refused inside the request log: logged, with the usual headers.
    assert "X-Request-Id" in response.headers


@pytest.mark.usefixtures("edge_required")
class TestRequired:
    def test_without_the_edge_key_a_public_route_is_refused(self, client: Client) -> None:
        assert_refused(client.http.get("/health"))

    def test_a_wrong_edge_key_is_refused(self, client: Client) -> None:
        for wrong in ("", "k" * 47, "k" * 49, "K" * 48, EDGE_SECRET[:-1] + "x"):
            assert_refused(client.http.get("/health", headers={"X-Gatehouse-Edge": wrong}))

    def test_refused_before_the_route_does_any_work(self, client: Client, table: Any) -> None:
        credentials = {"username": "alice", "password": PASSWORD}
        assert_refused(post(client, "/auth/signup", credentials, {}))
        assert table.scan()["Items"] == []

    def test_the_right_edge_key_passes(self, client: Client) -> None:
        response = client.http.get("/health", headers=THROUGH_EDGE)
        assert response.status_code == 200
        assert response.json_body == {"status": "ok"}

    def test_a_valid_token_does_not_replace_the_edge_key(self, client: Client) -> None:
        """The authorizer runs first (API Gateway calls it before the handler); its answer
        does not let the request in."""
        bearer = {"Authorization": f"Bearer {token(client, THROUGH_EDGE)}"}
        assert_refused(client.http.get("/auth/user", headers=bearer))
        response = client.http.get("/auth/user", headers={**bearer, **THROUGH_EDGE})
        assert response.status_code == 200
        assert response.json_body["username"] == "alice"

    def test_admin_routes_are_refused_too(self, client: Client) -> None:
        bearer = {"Authorization": f"Bearer {token(client, THROUGH_EDGE)}"}
        assert_refused(client.http.get("/users", headers=bearer))


def gateway_event(domain: str, headers: dict[str, str]) -> dict[str, Any]:
    """What API Gateway hands the handler for GET /health arriving on ``domain``."""
    return {
        "resource": "/health",
        "path": "/health",
        "httpMethod": "GET",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/health",
            "httpMethod": "GET",
            "path": "/api/health",
            "stage": "api",
            "domainName": domain,
            "requestId": "request-1",
            "identity": {"sourceIp": "203.0.113.7"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


@pytest.mark.usefixtures("edge_required", "dependencies")
class TestApiDomain:
    """As Lambda invokes the handler: requestContext.domainName is the host API Gateway routed
    the request by, which the test client does not set."""

    @pytest.fixture(autouse=True)
    def settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TABLE_NAME", "gatehouse-dev")
        monkeypatch.setenv("JWT_SECRET_ID", "gatehouse/dev/jwt-signing-key")

    def invoke(self, domain: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = app_module.app(
            gateway_event(domain, headers or {}), LambdaContext("api_handler", 1769)
        )
        return answer

    def test_the_api_domain_passes_without_the_edge_key(self) -> None:
        answer = self.invoke(API_DOMAIN, {"Host": API_DOMAIN})
        assert answer["statusCode"] == 200
        assert self.invoke(API_DOMAIN.upper())["statusCode"] == 200

    def test_the_execute_api_host_does_not(self) -> None:
        answer = self.invoke(EXECUTE_API, {"Host": API_DOMAIN})
        assert answer["statusCode"] == 403
        assert json.loads(answer["body"]) == {"message": EDGE_REQUIRED_MESSAGE}
        assert self.invoke(EXECUTE_API, {"x-gatehouse-edge": EDGE_SECRET})["statusCode"] == 200


@pytest.mark.usefixtures("edge_required")
class TestWebSocket:
    """WAF cannot guard the WebSocket API: its $connect refuses a handshake without the key."""

    def connect(self, client: Client, ticket: str | None, headers: dict[str, str]) -> int:
        event = ws_event(
            "$connect",
            "conn-1",
            queryStringParameters=None if ticket is None else {"ticket": ticket},
        )
        event["headers"] = {**event["headers"], **headers}
        status: int = client.lambda_.invoke("ws_connect", event).payload["statusCode"]
        return status

    def ticket(self, client: Client) -> str:
        bearer = {"Authorization": f"Bearer {token(client, THROUGH_EDGE)}"}
        response = post(client, "/auth/ws-ticket", {}, {**bearer, **THROUGH_EDGE})
        assert response.status_code == 200, response.body
        (value,) = parse_qs(urlsplit(str(response.json_body["url"])).query)["ticket"]
        return value

    def test_a_handshake_without_the_edge_key_is_refused_and_keeps_the_ticket(
        self, client: Client
    ) -> None:
        ticket = self.ticket(client)
        assert self.connect(client, ticket, {}) == 403
        assert self.connect(client, ticket, {"x-gatehouse-edge": "k" * 47}) == 403
        # CloudFront sends the header in the case it was configured with; any case will do.
        assert self.connect(client, ticket, {"X-Gatehouse-Edge": EDGE_SECRET}) == 200


@pytest.mark.usefixtures("edge_secret")
class TestNotRequired:
    """Without EDGE_REQUIRED (the default; enableWaf off): direct calls work as before."""

    def test_a_call_without_the_edge_key_is_answered(self, client: Client) -> None:
        assert client.http.get("/health").status_code == 200
        credentials = {"username": "alice", "password": PASSWORD}
        assert post(client, "/auth/signup", credentials, {}).status_code == 201

    def test_a_handshake_without_the_edge_key_reaches_the_ticket_check(
        self, client: Client
    ) -> None:
        assert TestWebSocket().connect(client, None, {}) == 401


class TestSettings:
    def test_off_by_default(self) -> None:
        settings = Settings.from_env(REQUIRED)
        assert (settings.edge_required, settings.edge_exempt_domain) == (False, None)

    def test_read_with_the_domain_in_lower_case(self) -> None:
        settings = Settings.from_env(
            {
                **REQUIRED,
                "EDGE_SECRET": EDGE_SECRET,
                "EDGE_REQUIRED": "true",
                "EDGE_EXEMPT_DOMAIN": " API.Example.com ",
            }
        )
        assert (settings.edge_required, settings.edge_exempt_domain) == (True, API_DOMAIN)

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({"EDGE_REQUIRED": "true"}, "EDGE_REQUIRED needs EDGE_SECRET"),
            ({"EDGE_REQUIRED": "perhaps", "EDGE_SECRET": EDGE_SECRET}, "EDGE_REQUIRED"),
            (
                {"EDGE_EXEMPT_DOMAIN": API_DOMAIN, "EDGE_SECRET": EDGE_SECRET},
                "EDGE_EXEMPT_DOMAIN needs EDGE_REQUIRED",
            ),
        ],
    )
    def test_inconsistent_values_are_refused_by_name(self, env: dict[str, str], named: str) -> None:
        with pytest.raises(SettingsError, match=named):
            Settings.from_env({**REQUIRED, **env})
