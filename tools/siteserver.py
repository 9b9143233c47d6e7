"""The built site as the CDN serves it, with ``/api/*`` proxied to the API: one origin.

The browser tests run against this: the real build output (``frontend/build``) and the same
rules as the Site stack's CloudFront distribution:

- ``/api`` and ``/api/...`` go to the API with the ``/api`` prefix stripped, every method, headers
  and cookies passed both ways;
- ``/ws`` (the WebSocket API: an upgrade, then frames both ways) goes to the local WebSocket
  gateway (``tools/wsgateway.py``), as CloudFront sends it to API Gateway;
- any other path is a file of the build (``/login`` is ``login.html``), and a path that is not is
  answered with the SPA fallback ``200.html``, which routes in the browser;
- hashed assets under ``/_app/immutable/`` may be cached for a year, pages must be revalidated;
- every file carries the Content-Security-Policy header CloudFront sends (the same builder,
  ``cdk/gatehouse_infra/csp.py``), with the uploads endpoint (here the emulator) allowed to be
  posted to, so the browser tests run under the production policy.

``vite dev`` (with its own proxy, see ``frontend/vite.config.ts``) serves the site for ``make dev``;
``vite preview`` would run SvelteKit's server middleware instead of serving the files the CDN
serves, so it cannot show a broken fallback or a missing file.

Run: ``python -m tools.siteserver --port 5173 --api http://127.0.0.1:8000 --ws http://127.0.0.1:8001``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import mimetypes
import os
import posixpath
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "cdk"))  # the CDK app's CSP builder, which imports nothing of CDK

from gatehouse_infra.csp import SPA_FALLBACK, content_security_policy  # noqa: E402

BUILD = ROOT / "frontend" / "build"
FALLBACK = SPA_FALLBACK
# Connection-level headers a proxy must not forward (RFC 9110, section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
MAX_BODY = 16 * 1024 * 1024
WEBSOCKET_PATH = "/ws"


class SiteHandler(BaseHTTPRequestHandler):
    root: ClassVar[Path] = BUILD
    api: ClassVar[str] = "http://127.0.0.1:8000"
    ws: ClassVar[str] = "http://127.0.0.1:8001"
    csp: ClassVar[str] = "default-src 'self'"
    server_version = "gatehouse-site"

    def do_GET(self) -> None:
        if urlsplit(self.path).path == WEBSOCKET_PATH:
            self._tunnel()
        elif self._is_api():
            self._proxy()
        else:
            self._static(head=False)

    def do_HEAD(self) -> None:
        if self._is_api():
            self._proxy()
        else:
            self._static(head=True)

    def do_POST(self) -> None:
        self._api_only()

    def do_PUT(self) -> None:
        self._api_only()

    def do_PATCH(self) -> None:
        self._api_only()

    def do_DELETE(self) -> None:
        self._api_only()

    def do_OPTIONS(self) -> None:
        self._api_only()

    def log_message(self, format: str, *args: object) -> None:
        # Paths only: query strings and headers (tokens, cookies) never reach the log.
        return

    def _is_api(self) -> bool:
        path = urlsplit(self.path).path
        return path == "/api" or path.startswith("/api/")

    def _api_only(self) -> None:
        if self._is_api():
            self._proxy()
        else:
            self._reply(405, b"Method Not Allowed", "text/plain; charset=utf-8", "no-store")

    def _static(self, *, head: bool) -> None:
        file = self._resolve(unquote(urlsplit(self.path).path))
        body = file.read_bytes()
        immutable = "/_app/immutable/" in file.as_posix()
        cache = "public, max-age=31536000, immutable" if immutable else "no-cache"
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type == "application/javascript":
            content_type += "; charset=utf-8"
        self._reply(200, body, content_type, cache, head=head)

    def _resolve(self, path: str) -> Path:
        clean = posixpath.normpath("/" + path).lstrip("/")
        candidates = [clean, f"{clean}.html", posixpath.join(clean, "index.html")]
        for candidate in candidates:
            file = (self.root / candidate).resolve()
            if file.is_file() and file.is_relative_to(self.root.resolve()):
                return file
        return self.root / FALLBACK

    def _reply(
        self, status: int, body: bytes, content_type: str, cache: str, *, head: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", self.csp)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _proxy(self) -> None:
        target = urlsplit(self.api)
        parts = urlsplit(self.path)
        upstream_path = (parts.path.removeprefix("/api") or "/") + (
            f"?{parts.query}" if parts.query else ""
        )
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(413, b'{"message": "Request too large"}', "application/json", "no-store")
            return
        body = self.rfile.read(length) if length else None
        headers = {
            name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP
        }
        headers["Host"] = target.netloc
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, 60)
        try:
            connection.request(self.command, upstream_path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError:
            self._reply(
                502, b'{"message": "The API is not reachable"}', "application/json", "no-store"
            )
            return
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP | {"content-length", "date", "server"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _tunnel(self) -> None:
        """Pass the request to the WebSocket gateway as it came, then bytes both ways until
        either side closes: the upgrade, the frames and the close handshake."""
        target = urlsplit(self.ws)
        try:
            upstream = socket.create_connection(
                (target.hostname or "127.0.0.1", target.port or 80), timeout=10
            )
        except OSError:
            self._reply(
                502,
                b'{"message": "The WebSocket gateway is not reachable"}',
                "application/json",
                "no-store",
            )
            return
        head = f"{self.command} {self.path} {self.request_version}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in self.headers.items()
        )
        upstream.settimeout(None)
        self.close_connection = True
        with upstream:
            upstream.sendall(f"{head}\r\n".encode("latin-1"))
            back = threading.Thread(target=_pump, args=(upstream, self.connection), daemon=True)
            back.start()
            _pump(self.connection, upstream)
            back.join()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing side."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def serve(
    *,
    host: str,
    port: int,
    api: str,
    ws: str = SiteHandler.ws,
    root: Path = BUILD,
    upload_origin: str | None = None,
) -> ThreadingHTTPServer:
    """A server bound to ``host:port``; call ``serve_forever()`` on it."""
    if not (root / FALLBACK).is_file():
        raise SystemExit(f"{root / FALLBACK} is missing: build the site first (make site)")
    csp = content_security_policy(root, [upload_origin] if upload_origin else [])
    handler = type("Handler", (SiteHandler,), {"root": root, "api": api, "ws": ws, "csp": csp})
    return _Server((host, port), handler)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a page loads its modules and
    # makes its API calls at once.
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5173)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--ws", default=SiteHandler.ws, help="the WebSocket gateway that /ws is proxied to"
    )
    parser.add_argument("--root", type=Path, default=BUILD)
    parser.add_argument(
        "--upload-origin",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="where the browser posts uploads (default: the emulator, AWS_ENDPOINT_URL)",
    )
    args = parser.parse_args()
    server = serve(
        host=args.host,
        port=args.port,
        api=args.api,
        ws=args.ws,
        root=args.root,
        upload_origin=args.upload_origin,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
