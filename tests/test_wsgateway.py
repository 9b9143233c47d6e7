"""The local WebSocket gateway, on a free port, with a tiny Chalice app's WebSocket handlers: API
Gateway's events and refusals, and its @connections API through boto3's own client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import requests
from chalice.app import Chalice, Response, WebsocketEvent

from tests.localstack import free_port
from tools.siteserver import serve
from tools.wsgateway import API_ID, Gateway, RunningGateway

TIMEOUT = 10
# What the handlers of the tiny app were given, in order.
EVENTS: list[dict[str, Any]] = []
# Where the handlers send to (set by the fixture): the gateway's @connections API.
ENDPOINT: list[str] = []

tiny = Chalice(app_name="tinyws")


def management() -> Any:
    return boto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-2"
    ).client("apigatewaymanagementapi", endpoint_url=ENDPOINT[0])


@tiny.on_ws_connect()
def connect(event: WebsocketEvent) -> Response | None:
    EVENTS.append(event.to_dict())
    if (event.to_dict().get("queryStringParameters") or {}).get("ticket") != "good":
        return Response(body=json.dumps({"message": "bad ticket"}), status_code=401)
    return None


@tiny.on_ws_message()
def message(event: WebsocketEvent) -> None:
    EVENTS.append(event.to_dict())
    if event.body == "boom":
        raise RuntimeError("a message this handler cannot take")
    management().post_to_connection(
        ConnectionId=event.connection_id, Data=f"echo: {event.body}".encode()
    )


@tiny.on_ws_disconnect()
def disconnect(event: WebsocketEvent) -> None:
    EVENTS.append(event.to_dict())


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The gateway's URL; it stops with the test."""
    # Chalice's WebSocket handler wrapper reads the region to name the deployed endpoint.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    EVENTS.clear()
    running = RunningGateway(Gateway(tiny), host="127.0.0.1", port=free_port())
    ENDPOINT[:] = [running.url]
    yield running.url
    running.stop()


def routed(route_key: str) -> list[dict[str, Any]]:
    return [event for event in EVENTS if event["requestContext"]["routeKey"] == route_key]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the gateway did not get there in time")
        time.sleep(0.02)


def run(scenario: Callable[[aiohttp.ClientSession], Any]) -> Any:
    """Run ``scenario`` with an HTTP client session, within the time limit."""

    async def main() -> Any:
        async with asyncio.timeout(TIMEOUT), aiohttp.ClientSession() as session:
            return await scenario(session)

    return asyncio.run(main())


def ws_url(base: str, ticket: str = "good") -> str:
    return f"{base.replace('http://', 'ws://')}/ws?ticket={ticket}&x=1&x=2"


def test_connect_gets_api_gateways_event_and_posted_data_reaches_the_client(
    gateway: str,
) -> None:
    async def scenario(session: aiohttp.ClientSession) -> str:
        async with session.ws_connect(ws_url(gateway), headers={"User-Agent": "test"}) as ws:
            [connected] = routed("$connect")
            connection_id = connected["requestContext"]["connectionId"]
            # boto3 is blocking: it runs off the event loop, like another process would.
            await asyncio.to_thread(
                management().post_to_connection,
                ConnectionId=connection_id,
                Data=b'{"type": "item.created"}',
            )
            received = await ws.receive_str()
            described = await asyncio.to_thread(
                management().get_connection, ConnectionId=connection_id
            )
            assert described["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "test"}
            assert described["ConnectedAt"] <= described["LastActiveAt"]
            return received

    assert json.loads(run(scenario)) == {"type": "item.created"}
    [connected] = routed("$connect")
    context = connected["requestContext"]
    assert connected["queryStringParameters"] == {"ticket": "good", "x": "2"}
    assert connected["multiValueQueryStringParameters"]["x"] == ["1", "2"]
    assert connected["headers"]["Host"] == gateway.removeprefix("http://")
    assert connected["headers"]["User-Agent"] == "test"
    assert connected["isBase64Encoded"] is False
    assert (context["routeKey"], context["eventType"]) == ("$connect", "CONNECT")
    assert (context["domainName"], context["stage"], context["apiId"]) == (
        "127.0.0.1",
        "api",
        API_ID,
    )
    assert len(context["connectionId"]) == 16
    assert context["connectionId"].endswith("=")  # boto3 must encode it in the path
    assert context["identity"]["sourceIp"] == "127.0.0.1"


def test_a_connect_the_handler_refuses_is_not_upgraded(gateway: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(gateway, ticket="forged"))
        return refused.value.status

    assert run(scenario) == 401
    assert [event["requestContext"]["routeKey"] for event in EVENTS] == ["$connect"]


def test_messages_go_to_default_and_a_failing_handler_answers_an_internal_error(
    gateway: str,
) -> None:
    async def scenario(session: aiohttp.ClientSession) -> list[str]:
        async with session.ws_connect(ws_url(gateway)) as ws:
            await ws.send_str("hello")
            echoed = await ws.receive_str()
            await ws.send_str("boom")
            failed = await ws.receive_str()
            return [echoed, failed]

    echoed, failed = run(scenario)
    assert echoed == "echo: hello"
    error = json.loads(failed)
    assert error["message"] == "Internal server error"
    [connected] = routed("$connect")
    assert error["connectionId"] == connected["requestContext"]["connectionId"]
    hello = routed("$default")[0]
    assert hello["body"] == "hello"
    assert hello["requestContext"]["eventType"] == "MESSAGE"
    assert hello["requestContext"]["connectionId"] == error["connectionId"]


def test_a_client_leaving_calls_disconnect_and_its_connection_is_gone(gateway: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(ws_url(gateway)):
            pass

    run(scenario)
    wait_for(lambda: bool(routed("$disconnect")))
    [connected], [left] = routed("$connect"), routed("$disconnect")
    connection_id = connected["requestContext"]["connectionId"]
    assert left["requestContext"]["connectionId"] == connection_id
    assert left["requestContext"]["eventType"] == "DISCONNECT"
    assert left["requestContext"]["disconnectStatusCode"] == 1000
    client = management()
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId=connection_id, Data=b"late")
    with pytest.raises(client.exceptions.GoneException):
        client.get_connection(ConnectionId="never-connected=")


def test_delete_closes_the_connection_and_calls_disconnect(gateway: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> Any:
        async with session.ws_connect(ws_url(gateway)) as ws:
            [connected] = routed("$connect")
            await asyncio.to_thread(
                management().delete_connection,
                ConnectionId=connected["requestContext"]["connectionId"],
            )
            closing = await ws.receive()
            return closing.type

    assert run(scenario) == aiohttp.WSMsgType.CLOSE
    wait_for(lambda: bool(routed("$disconnect")))
    [left] = routed("$disconnect")
    assert left["requestContext"]["disconnectReason"] == "Connection was closed by the server"


def test_the_management_api_wants_a_signed_request(gateway: str) -> None:
    answer = requests.post(f"{gateway}/@connections/anything", data=b"x", timeout=TIMEOUT)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-ErrorType"] == "ForbiddenException"
    assert answer.json() == {"message": "Missing Authentication Token"}
    # A plain GET of the WebSocket route, without an upgrade, is refused too.
    assert requests.get(f"{gateway}/ws", timeout=TIMEOUT).status_code == 426


def test_stopping_the_gateway_disconnects_its_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    EVENTS.clear()
    running = RunningGateway(Gateway(tiny), host="127.0.0.1", port=free_port())

    async def scenario(session: aiohttp.ClientSession) -> Any:
        async with session.ws_connect(ws_url(running.url)) as ws:
            await asyncio.to_thread(running.stop)
            return (await ws.receive()).type

    assert run(scenario) in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
    [left] = routed("$disconnect")
    assert left["requestContext"]["disconnectStatusCode"] == 1001


def test_an_idle_connection_is_closed_as_api_gateway_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    EVENTS.clear()
    running = RunningGateway(Gateway(tiny, idle_timeout=0.3), host="127.0.0.1", port=free_port())
    try:

        async def scenario(session: aiohttp.ClientSession) -> Any:
            async with session.ws_connect(ws_url(running.url)) as ws:
                return (await ws.receive()).type

        assert run(scenario) == aiohttp.WSMsgType.CLOSE
        wait_for(lambda: bool(routed("$disconnect")))
        [left] = routed("$disconnect")
        assert left["requestContext"]["disconnectStatusCode"] == 1001
        assert left["requestContext"]["disconnectReason"] == "Idle timeout"
    finally:
        running.stop()


def test_the_built_sites_server_passes_ws_to_the_gateway(gateway: str, tmp_path: Path) -> None:
    for page in ("200.html", "index.html"):
        (tmp_path / page).write_text("page")
    server = serve(
        host="127.0.0.1", port=free_port(), api="http://127.0.0.1:1", ws=gateway, root=tmp_path
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site = f"http://127.0.0.1:{server.server_address[1]}"
    try:

        async def scenario(session: aiohttp.ClientSession) -> str:
            async with session.ws_connect(ws_url(site)) as ws:
                await ws.send_str("through the site")
                return await ws.receive_str()

        assert run(scenario) == "echo: through the site"
        wait_for(lambda: bool(routed("$disconnect")))
        [connected] = routed("$connect")
        assert connected["queryStringParameters"]["ticket"] == "good"
        assert connected["headers"]["Host"] == site.removeprefix("http://")
        # Without an upgrade the gateway's own answer comes back through the site.
        assert requests.get(f"{site}/ws", timeout=TIMEOUT).status_code == 426
    finally:
        server.shutdown()
        server.server_close()
