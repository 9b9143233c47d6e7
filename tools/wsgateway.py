"""The local WebSocket gateway: API Gateway's WebSocket API for ``make dev``, calling the app's
``on_ws_connect``, ``on_ws_message`` and ``on_ws_disconnect`` handlers in-process.

``chalice local`` serves no WebSockets, so this does, on one port (``WS_PORT``, default 8001),
built on aiohttp (WebSocket and plain HTTP on one server):

- ``GET /ws`` (or ``/``) with a WebSocket upgrade: the ``$connect`` handler gets API Gateway's
  event (headers, query string, ``requestContext`` with ``connectionId``, ``routeKey``,
  ``eventType``, ``domainName``, ``stage``, ``apiId``...). An answer other than 2xx refuses the
  upgrade with that status, as API Gateway does. Each text or binary message goes to
  ``$default`` (a handler that raises sends the client API Gateway's ``Internal server error``
  message); a close, by either side, calls ``$disconnect``. API Gateway's limits apply: 128 KB a
  message, 10 minutes idle (client messages count), 2 hours a connection.
- The ``@connections`` management API: ``POST /@connections/{id}`` sends the body to the client,
  ``GET`` describes the connection, ``DELETE`` closes it; an unknown or closed connection is 410
  with ``x-amzn-ErrorType: GoneException``, so boto3's ``apigatewaymanagementapi`` client with
  ``endpoint_url`` pointing here raises ``GoneException`` exactly as against AWS. Requests must
  be SigV4-signed (the signature is not checked: local credentials are not secret), so a
  browser reaching ``/ws`` through the site's proxy cannot drive it.

The site's dev server (``frontend/vite.config.ts``) and ``tools/siteserver.py`` proxy ``/ws`` to
this, so the browser connects to the site's own origin, as deployed behind CloudFront. Nothing
is logged per request: the ``$connect`` URL carries a one-time ticket.

Run: ``python -m tools.wsgateway --host 127.0.0.1 --port 8001`` (``make dev`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import secrets
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from chalice.app import Chalice

from tools.eventrunner import lambda_context, load_app

LOG = logging.getLogger("gatehouse.wsgateway")
# API Gateway's limits for WebSocket APIs.
MAX_MESSAGE_BYTES = 128 * 1024
IDLE_TIMEOUT = 10 * 60
MAX_LIFETIME = 2 * 60 * 60
# An API Gateway API id is 10 lowercase letters and digits.
API_ID = "localws001"
INTERNAL_ERROR = "Internal server error"
GOING_AWAY = int(WSCloseCode.GOING_AWAY)


@dataclass
class Connection:
    id: str
    socket: web.WebSocketResponse
    source_ip: str
    user_agent: str
    domain_name: str
    connected_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    close_reason: str = "Client-side close frame status code"
    # Set when this side closes: the client's answering frame may carry another code.
    close_code: int | None = None

    async def close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        with contextlib.suppress(ConnectionError):
            await self.socket.close(code=code)


class Gateway:
    """The WebSocket API of one Chalice app: its routes and the @connections API."""

    def __init__(
        self,
        app: Chalice,
        *,
        stage: str = "dev",
        api_stage: str = "api",
        api_id: str = API_ID,
        idle_timeout: float = IDLE_TIMEOUT,
        max_lifetime: float = MAX_LIFETIME,
    ) -> None:
        self._app = app
        self._stage = stage
        self._api_stage = api_stage
        self._api_id = api_id
        self._idle_timeout = idle_timeout
        self._max_lifetime = max_lifetime
        self._connections: dict[str, Connection] = {}

    def web_app(self) -> web.Application:
        application = web.Application(client_max_size=MAX_MESSAGE_BYTES + 1)
        application.router.add_get("/", self._connect)
        application.router.add_get("/ws", self._connect)
        application.router.add_post("/@connections/{id}", self._post)
        application.router.add_get("/@connections/{id}", self._describe)
        application.router.add_delete("/@connections/{id}", self._delete)
        application.on_startup.append(self._start_sweeper)
        application.on_shutdown.append(self._close_all)
        return application

    # The WebSocket routes

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _json(426, {"message": "Upgrade Required"})
        connection = Connection(
            id=_connection_id(),
            socket=web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, compress=False),
            source_ip=request.remote or "127.0.0.1",
            user_agent=request.headers.get("User-Agent", ""),
            domain_name=(request.host or "localhost").rsplit(":", 1)[0],
        )
        answer = await self._call("$connect", self._connect_event(request, connection))
        status = _status(answer)
        if not 200 <= status < 300:
            body = answer.get("body") if isinstance(answer, dict) else None
            return web.Response(
                status=status,
                text=body if isinstance(body, str) else "",
                content_type="application/json",
            )
        protocol = _header(answer, "Sec-WebSocket-Protocol")
        if protocol is not None:
            # The handler chose one of the client's subprotocols, as API Gateway lets it.
            connection.socket = web.WebSocketResponse(
                max_msg_size=MAX_MESSAGE_BYTES, compress=False, protocols=(protocol,)
            )
        socket = connection.socket
        await socket.prepare(request)
        self._connections[connection.id] = connection
        try:
            async for message in socket:
                if message.type in {WSMsgType.TEXT, WSMsgType.BINARY}:
                    connection.last_active = time.time()
                    await self._message(connection, message.data)
        finally:
            self._connections.pop(connection.id, None)
            await self._call("$disconnect", self._disconnect_event(connection))
        return socket

    async def _message(self, connection: Connection, data: str | bytes) -> None:
        binary = isinstance(data, bytes)
        event: dict[str, Any] = {
            "requestContext": self._request_context(
                connection, "$default", "MESSAGE", messageId=_message_id()
            ),
            "body": base64.b64encode(data).decode() if isinstance(data, bytes) else data,
            "isBase64Encoded": binary,
        }
        try:
            await self._invoke("$default", event)
        except Exception:  # noqa: BLE001 (any error fails the invocation, as in Lambda)
            LOG.error("$default failed:\n%s", traceback.format_exc().rstrip())
            error = {
                "message": INTERNAL_ERROR,
                "connectionId": connection.id,
                "requestId": event["requestContext"]["requestId"],
            }
            with contextlib.suppress(ConnectionError):
                await connection.socket.send_str(json.dumps(error))

    async def _call(self, route_key: str, event: dict[str, Any]) -> Any:
        """The handler's answer; a failure is answered as API Gateway does, with a 500."""
        try:
            return await self._invoke(route_key, event)
        except Exception:  # noqa: BLE001 (any error fails the invocation, as in Lambda)
            LOG.error("%s failed:\n%s", route_key, traceback.format_exc().rstrip())
            return {"statusCode": 500, "body": json.dumps({"message": INTERNAL_ERROR})}

    async def _invoke(self, route_key: str, event: dict[str, Any]) -> Any:
        config = self._app.websocket_handlers.get(route_key)
        if config is None:
            return {"statusCode": 200}
        handler: Callable[[dict[str, Any], Any], Any] = self._app.handler_map[config.name]
        context = lambda_context(self._app, config.name, stage=self._stage)
        # Handlers are blocking (boto3): each runs on a worker thread, as in its own Lambda.
        return await asyncio.get_running_loop().run_in_executor(None, handler, event, context)

    def _connect_event(self, request: web.Request, connection: Connection) -> dict[str, Any]:
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name, []).append(value)
        headers.setdefault("X-Forwarded-For", [connection.source_ip])
        headers.setdefault("X-Forwarded-Proto", [request.scheme])
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        event: dict[str, Any] = {
            "headers": {name: ",".join(values) for name, values in headers.items()},
            "multiValueHeaders": headers,
            "requestContext": self._request_context(connection, "$connect", "CONNECT"),
            "isBase64Encoded": False,
        }
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        return event

    def _disconnect_event(self, connection: Connection) -> dict[str, Any]:
        code = (
            connection.close_code
            or connection.socket.close_code
            or int(WSCloseCode.ABNORMAL_CLOSURE)
        )
        headers = {"Host": connection.domain_name, "x-api-key": "", "X-Forwarded-For": ""}
        return {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": self._request_context(
                connection,
                "$disconnect",
                "DISCONNECT",
                disconnectStatusCode=code,
                disconnectReason=connection.close_reason,
            ),
            "isBase64Encoded": False,
        }

    def _request_context(
        self, connection: Connection, route_key: str, event_type: str, **extra: Any
    ) -> dict[str, Any]:
        now = time.time()
        request_id = _request_id()
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self._api_stage,
            "connectedAt": int(connection.connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            "requestId": request_id,
            "domainName": connection.domain_name,
            "connectionId": connection.id,
            "apiId": self._api_id,
            **extra,
        }

    # The @connections API

    def _open(self, request: web.Request) -> Connection | web.Response:
        if not request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
            return _error(403, "ForbiddenException", "Missing Authentication Token")
        connection = self._connections.get(request.match_info["id"])
        if connection is None or connection.socket.closed:
            return _error(410, "GoneException", "The connection is gone")
        return connection

    async def _post(self, request: web.Request) -> web.Response:
        connection = self._open(request)
        if isinstance(connection, web.Response):
            return connection
        data = await request.read()
        if len(data) > MAX_MESSAGE_BYTES:
            return _error(413, "PayloadTooLargeException", "Message too long")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            sending = connection.socket.send_bytes(data)
        else:
            sending = connection.socket.send_str(text)
        try:
            await sending
        except ConnectionError:
            return _error(410, "GoneException", "The connection is gone")
        return web.Response(status=200)

    async def _describe(self, request: web.Request) -> web.Response:
        connection = self._open(request)
        if isinstance(connection, web.Response):
            return connection
        return _json(
            200,
            {
                "connectedAt": _iso(connection.connected_at),
                "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
                "lastActiveAt": _iso(connection.last_active),
            },
        )

    async def _delete(self, request: web.Request) -> web.Response:
        connection = self._open(request)
        if isinstance(connection, web.Response):
            return connection
        await connection.close(int(WSCloseCode.OK), "Connection was closed by the server")
        return web.Response(status=204)

    # Limits and shutdown

    async def _start_sweeper(self, application: web.Application) -> None:
        task = asyncio.create_task(self._sweep())
        application.on_cleanup.append(lambda _app: _cancel(task))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self._idle_timeout, 30.0))
            now = time.time()
            for connection in list(self._connections.values()):
                if now - connection.last_active > self._idle_timeout:
                    await connection.close(GOING_AWAY, "Idle timeout")
                elif now - connection.connected_at > self._max_lifetime:
                    await connection.close(GOING_AWAY, "Connection lifetime exceeded")

    async def _close_all(self, _application: web.Application) -> None:
        for connection in list(self._connections.values()):
            await connection.close(GOING_AWAY, "Going away")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _status(answer: Any) -> int:
    if isinstance(answer, dict):
        with contextlib.suppress(TypeError, ValueError):
            return int(answer.get("statusCode", 200))
        return 500
    return 200


def _header(answer: Any, name: str) -> str | None:
    headers = answer.get("headers") if isinstance(answer, dict) else None
    if not isinstance(headers, dict):
        return None
    found = {key.lower(): value for key, value in headers.items()}.get(name.lower())
    return found if isinstance(found, str) else None


def _connection_id() -> str:
    # Like API Gateway's: 16 characters, ending in "=" (so clients must encode it in paths).
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def _message_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(11)).decode()


def _request_id() -> str:
    return str(uuid.uuid4())


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body), headers=headers or {}, content_type="application/json"
    )


def _error(status: int, kind: str, message: str) -> web.Response:
    """An error as API Gateway's management API answers it; botocore reads the header."""
    return _json(status, {"message": message}, {"x-amzn-ErrorType": kind})


class RunningGateway:
    """A gateway serving on a thread of its own (tests, and anything that is not asyncio)."""

    def __init__(self, gateway: Gateway, *, host: str, port: int) -> None:
        self.url = f"http://{host}:{port}"
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(gateway.web_app(), access_log=None)
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, host, port)
                self._loop.run_until_complete(site.start())
            except BaseException as exc:  # noqa: BLE001 (handed to the starting thread)
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="wsgateway", daemon=True)
        self._thread.start()
        started.wait(timeout=30)
        if failure:
            raise failure[0]

    def stop(self) -> None:
        """Close every connection (their ``$disconnect`` runs) and stop serving."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)


async def _serve(gateway: Gateway, host: str, port: int) -> None:
    runner = web.AppRunner(gateway.web_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"WebSocket gateway: ws://{host}:{port}/ws, @connections at http://{host}:{port}",
        flush=True,
    )
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # The app's log lines, as `chalice local` shows them; not botocore's chatter.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    # aiohttp's access log would print each $connect URL, ticket included.
    logging.getLogger("aiohttp.access").disabled = True
    gateway = Gateway(load_app(args.stage), stage=args.stage)
    asyncio.run(_serve(gateway, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
