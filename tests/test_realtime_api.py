"""Live updates through the app's handlers: the ticket route over chalice's test client, the
WebSocket handlers invoked with API Gateway's event shapes, and the notify worker sending through
boto3's apigatewaymanagementapi client to moto's @connections API."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from boto3.dynamodb.conditions import Key
from chalice.test import Client
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core.models import DEFAULT_ACCOUNT_ID

from tests.conftest import REGION, Api
from tests.test_workers import envelope, failed, invoke_worker

WEBSOCKET_URL = "wss://site.example/ws"
API_ID = "abc123"
ENDPOINT = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/api"


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebSocket API's settings, as the CDK app or `make dev` gives them."""
    monkeypatch.setenv("WEBSOCKET_URL", WEBSOCKET_URL)
    monkeypatch.setenv("WEBSOCKET_ENDPOINT", ENDPOINT)


def ws_event(route: str, connection_id: str, **extra: Any) -> dict[str, Any]:
    """What API Gateway's WebSocket API hands the Lambda function of a route."""
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
    return {
        "headers": {"Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com"},
        "isBase64Encoded": False,
        "requestContext": {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "stage": "api",
            "connectedAt": 1_767_225_600_000,
            "requestTimeEpoch": 1_767_225_600_000,
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "pytest"},
            "requestId": "request-1",
            "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
            "connectionId": connection_id,
            "apiId": API_ID,
        },
        **extra,
    }


def connect(client: Client, connection_id: str, ticket: str | None) -> int:
    query = None if ticket is None else {"ticket": ticket}
    event = ws_event("$connect", connection_id, queryStringParameters=query)
    status: int = client.lambda_.invoke("ws_connect", event).payload["statusCode"]
    return status


def ticket(api: Api, token: str) -> str:
    response = api.post("/auth/ws-ticket", {}, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.body
    (value,) = parse_qs(urlsplit(str(response.json_body["url"])).query)["ticket"]
    return value


def connection_rows(table: Any, connection_id: str) -> list[tuple[str, str]]:
    rows = table.scan()["Items"]
    return sorted(
        (str(row["pk"]), str(row["sk"]))
        for row in rows
        if connection_id in str(row["pk"]) or connection_id in str(row["sk"])
    )


@pytest.mark.usefixtures("live")
def test_a_ticket_is_a_url_to_open_within_30_seconds(api: Api) -> None:
    api.signup("alice")
    response = api.post("/auth/ws-ticket", {}, {"Authorization": f"Bearer {api.login('alice')}"})
    assert response.status_code == 200
    body = response.json_body
    assert set(body) == {"url", "expiresIn"}
    assert body["expiresIn"] == 30
    base, _, query = body["url"].partition("?")
    assert base == WEBSOCKET_URL
    assert list(parse_qs(query)) == ["ticket"]


def test_a_ticket_needs_a_token(api: Api) -> None:
    response = api.post("/auth/ws-ticket", {})
    assert response.status_code == 401
    assert response.json_body == {"message": "Invalid or expired token"}


def test_without_a_websocket_url_tickets_are_unavailable(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBSOCKET_URL", raising=False)
    api.signup("alice")
    response = api.post("/auth/ws-ticket", {}, {"Authorization": f"Bearer {api.login('alice')}"})
    assert response.status_code == 503
    assert response.json_body == {"message": "Live updates are not configured (WEBSOCKET_URL)"}


@pytest.mark.usefixtures("live")
def test_connect_uses_up_the_ticket_and_disconnect_forgets_the_connection(
    api: Api, table: Any
) -> None:
    api.signup("alice")
    raw = ticket(api, api.login("alice"))
    assert connect(api.client, "conn-1", raw) == 200
    assert connection_rows(table, "conn-1") == [
        ("CONN#conn-1", "CONN"),
        ("USER#alice", "CONN#conn-1"),
    ]
    # Used once: the same ticket, no ticket or a made-up one opens nothing.
    assert connect(api.client, "conn-2", raw) == 401
    assert connect(api.client, "conn-3", None) == 401
    assert connect(api.client, "conn-4", "bm9ib2R5." + "x" * 43) == 401
    assert connection_rows(table, "conn-2") == connection_rows(table, "conn-4") == []
    # No row of the ticket is left, and none ever held the ticket itself.
    partition = table.query(KeyConditionExpression=Key("pk").eq("USER#alice"))["Items"]
    assert not [row for row in partition if str(row["sk"]).startswith("WSTICKET#")]
    assert raw.split(".")[1] not in str(table.scan()["Items"])
    answer = api.client.lambda_.invoke("ws_disconnect", ws_event("$disconnect", "conn-1"))
    assert answer.payload == {"statusCode": 200}
    assert connection_rows(table, "conn-1") == []


@pytest.mark.usefixtures("live")
def test_a_message_from_the_client_is_answered_by_nothing(api: Api) -> None:
    event = ws_event("$default", "conn-1", body='{"type": "ping"}')
    assert api.client.lambda_.invoke("ws_message", event).payload == {"statusCode": 200}


@pytest.mark.usefixtures("live")
def test_the_notify_worker_pushes_to_the_owners_connections_only(api: Api) -> None:
    for name in ("alice", "bob"):
        api.signup(name)
    alice_token = api.login("alice")
    assert connect(api.client, "alice-1", ticket(api, alice_token)) == 200
    assert connect(api.client, "bob-1", ticket(api, api.login("bob"))) == 200
    profile = api.get("/auth/user", alice_token).json_body
    item = api.post("/items", {"name": "first"}, {"Authorization": f"Bearer {alice_token}"})
    created = envelope(
        "item.created",
        event_id="e1",
        username="alice",
        account_id=profile["userId"],
        data=item.json_body,
    )
    assert failed(invoke_worker(api.client, "notify_worker", created, created)) == []
    sent = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID][REGION].connections
    # Once, though delivered twice; and to bob's connection, nothing.
    assert "bob-1" not in sent
    assert json.loads(sent["alice-1"].data) == {
        "type": "item.created",
        "version": 1,
        "id": "e1",
        "time": created["time"],
        "data": item.json_body,
    }
