"""tools/siteserver.py: the built site served as the CDN serves it, /api proxied to the API."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.localstack import free_port
from tools.siteserver import serve


class FakeApi(BaseHTTPRequestHandler):
    """Echoes what reached it, and sets two cookies, as the API's login does one."""

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "body": self.rfile.read(length).decode(),
                "origin": self.headers.get("Origin"),
                "cookie": self.headers.get("Cookie"),
                "authorization": self.headers.get("Authorization"),
            }
        ).encode()
        self.send_response(418)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "a=1; Path=/api/auth; HttpOnly")
        self.send_header("Set-Cookie", "b=2; Path=/api/auth; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _echo

    def log_message(self, format: str, *args: object) -> None:
        return


def _background(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def api() -> Iterator[str]:
    yield from _background(ThreadingHTTPServer(("127.0.0.1", free_port()), FakeApi))


@pytest.fixture
def build(tmp_path: Path) -> Path:
    (tmp_path / "200.html").write_text("fallback")
    (tmp_path / "index.html").write_text("home")
    (tmp_path / "login.html").write_text("login page")
    (tmp_path / "_app" / "immutable").mkdir(parents=True)
    (tmp_path / "_app" / "immutable" / "start.abc.js").write_text("export {}")
    (tmp_path.parent / "secret.txt").write_text("outside the build")
    return tmp_path


@pytest.fixture
def site(build: Path, api: str) -> Iterator[str]:
    yield from _background(serve(host="127.0.0.1", port=free_port(), api=api, root=build))


def test_files_pages_and_the_fallback(site: str) -> None:
    assert requests.get(f"{site}/", timeout=5).text == "home"
    login = requests.get(f"{site}/login", timeout=5)
    assert (login.text, login.headers["Cache-Control"]) == ("login page", "no-cache")
    assert login.headers["Content-Type"] == "text/html; charset=utf-8"
    asset = requests.get(f"{site}/_app/immutable/start.abc.js", timeout=5)
    assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for unknown in ("/dashboard/deep/link", "/apiary", "/../secret.txt", "/%2e%2e/secret.txt"):
        response = requests.get(f"{site}{unknown}", timeout=5)
        assert (response.status_code, response.text) == (200, "fallback"), unknown


def test_every_file_carries_the_production_csp(build: Path, api: str) -> None:
    boot = "window.boot = 1;"
    for page in ("index.html", "200.html"):
        (build / page).write_text(f"<html><script>{boot}</script></html>")
    digest = base64.b64encode(hashlib.sha256(boot.encode()).digest()).decode()
    server = serve(
        host="127.0.0.1",
        port=free_port(),
        api=api,
        root=build,
        upload_origin="http://127.0.0.1:5000",
    )
    for url in _background(server):
        for path in ("/", "/dashboard", "/_app/immutable/start.abc.js"):
            csp = requests.get(f"{url}{path}", timeout=5).headers["Content-Security-Policy"]
            assert f"script-src 'self' 'sha256-{digest}';" in csp
            assert "connect-src 'self' http://127.0.0.1:5000;" in csp
            assert "frame-ancestors 'none'" in csp


def test_api_calls_reach_the_api_without_the_prefix(site: str) -> None:
    response = requests.patch(
        f"{site}/api/items/7?x=1",
        data='{"name": "n"}',
        headers={
            "Origin": site,
            "Cookie": "gatehouse_refresh=r",
            "Authorization": "Bearer t",
            "Content-Type": "application/json",
        },
        timeout=5,
    )
    assert response.status_code == 418
    assert response.json() == {
        "method": "PATCH",
        "path": "/items/7?x=1",
        "body": '{"name": "n"}',
        "origin": site,
        "cookie": "gatehouse_refresh=r",
        "authorization": "Bearer t",
    }
    assert response.raw.headers.getlist("Set-Cookie") == [
        "a=1; Path=/api/auth; HttpOnly",
        "b=2; Path=/api/auth; HttpOnly",
    ]
    assert requests.get(f"{site}/api", timeout=5).json()["path"] == "/"


def test_only_the_api_takes_other_methods(site: str) -> None:
    assert requests.post(f"{site}/login", timeout=5).status_code == 405


def test_an_unreachable_api_is_a_502_with_a_message(build: Path) -> None:
    server = serve(
        host="127.0.0.1", port=free_port(), api=f"http://127.0.0.1:{free_port()}", root=build
    )
    for url in _background(server):
        response = requests.get(f"{url}/api/health", timeout=5)
        assert response.status_code == 502
        assert response.json() == {"message": "The API is not reachable"}


def test_a_missing_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="make site"):
        serve(host="127.0.0.1", port=free_port(), api="http://127.0.0.1:1", root=tmp_path)
