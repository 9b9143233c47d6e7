"""End to end: the real local stack (`make dev`) as subprocesses, over HTTP, then stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
import requests

from chalicelib.mail import Message, SesMailer
from tests.conftest import ROOT
from tests.localstack import RunningStack, start
from tools import devstack

pytestmark = pytest.mark.e2e


def launch() -> Iterator[RunningStack]:
    running = start([sys.executable, "-m", "tools.devstack"])
    yield running
    if running.process.poll() is None:
        running.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    """One stack for the tests that only send requests, each with accounts of its own."""
    yield from launch()


@pytest.fixture
def own_stack() -> Iterator[RunningStack]:
    """A stack for a test that stops it."""
    yield from launch()


def test_the_local_stack_serves_the_whole_contract(stack: RunningStack) -> None:
    assert requests.get(f"{stack.api_url}/health", timeout=10).json() == {"status": "ok"}
    credentials = {"username": "alice", "password": "correct horse battery"}
    signup = requests.post(f"{stack.api_url}/auth/signup", json=credentials, timeout=10)
    assert signup.status_code == 201
    login = requests.post(f"{stack.api_url}/auth/login", json=credentials, timeout=10)
    assert login.status_code == 200
    token = login.json()["token"]
    profile = requests.get(
        f"{stack.api_url}/auth/user", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert profile.status_code == 200
    assert profile.json()["username"] == "alice"
    assert profile.json()["role"] == "user"


def test_simultaneous_signups_of_one_name_give_exactly_one_201(stack: RunningStack) -> None:
    def attempt(index: int) -> int:
        body = {"username": "racer", "password": f"password number {index}"}
        return requests.post(f"{stack.api_url}/auth/signup", json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(attempt, range(16)))
    assert sorted(statuses) == [201] + [409] * 15


def test_the_api_restarts_when_its_source_changes(stack: RunningStack) -> None:
    # The shared stack: a running stack of this checkout restarts on the change anyway, and this
    # test waits until the API answers again.
    os.utime(ROOT / "app.py")
    deadline = time.monotonic() + 60
    while "source changed" not in "".join(stack.output) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "source changed: restarting the API" in "".join(stack.output)
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{stack.api_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail("the API did not come back after a source change")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_everything_and_frees_the_ports(
    own_stack: RunningStack, sig: signal.Signals
) -> None:
    stack = own_stack
    assert stack.leftovers()
    assert stack.ports_open() == [
        stack.aws_port,
        stack.api_port,
        stack.site_port,
        stack.mail_port,
        stack.ws_port,
    ]
    assert stack.stop(sig) == 0
    assert stack.ports_open() == []
    assert stack.leftovers() == []
    assert "stopped" in "".join(stack.output)


def test_sigterm_to_make_dev_stops_everything() -> None:
    running = start(["make", "--no-print-directory", "dev"])
    assert running.ports_open() == [
        running.aws_port,
        running.api_port,
        running.site_port,
        running.mail_port,
        running.ws_port,
    ]
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while (running.leftovers() or running.ports_open()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running.leftovers() == []
    assert running.ports_open() == []


def test_the_dev_site_is_one_origin_with_the_api_under_api(stack: RunningStack) -> None:
    page = requests.get(f"{stack.site_url}/login", timeout=30)
    assert page.status_code == 200
    assert "/.svelte-kit/generated/client/app.js" in page.text  # vite dev: reloads on edits
    assert requests.get(f"{stack.site_url}/api/health", timeout=10).json() == {"status": "ok"}
    credentials = {"username": "carol", "password": "correct horse battery"}
    assert requests.post(f"{stack.site_url}/api/auth/signup", json=credentials, timeout=10).ok
    browser = requests.Session()
    login = browser.post(f"{stack.site_url}/api/auth/login", json=credentials, timeout=10)
    assert login.status_code == 200
    cookie = next(iter(browser.cookies))
    assert (cookie.name, cookie.path) == ("gatehouse_refresh", "/api/auth")
    # The API lets the site's own origin, on whatever port it runs, refresh by cookie, and
    # only that origin.
    csrf = {"X-Requested-With": "fetch"}
    foreign = browser.post(
        f"{stack.site_url}/api/auth/refresh",
        headers={**csrf, "Origin": "http://127.0.0.1:1"},
        timeout=10,
    )
    assert foreign.status_code == 403
    refreshed = browser.post(
        f"{stack.site_url}/api/auth/refresh",
        headers={**csrf, "Origin": stack.site_url},
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["username"] == "carol"


def test_the_uploads_bucket_answers_cors_for_the_site_only(stack: RunningStack) -> None:
    bucket = f"{stack.aws_url}/gatehouse-dev-uploads"
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = requests.options(bucket, headers={**preflight, "Origin": stack.site_url}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == stack.site_url
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    foreign = requests.options(
        bucket, headers={**preflight, "Origin": "https://evil.example"}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in foreign.headers
    # moto's server would otherwise allow every origin on every service.
    other = requests.get(
        f"{stack.aws_url}/moto-api/", headers={"Origin": "https://evil.example"}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_real_upload_through_the_presigned_post(stack: RunningStack) -> None:
    credentials = {"username": "uploader", "password": "correct horse battery"}
    assert requests.post(f"{stack.api_url}/auth/signup", json=credentials, timeout=10).ok
    token = requests.post(f"{stack.api_url}/auth/login", json=credentials, timeout=10).json()
    auth = {"Authorization": f"Bearer {token['token']}"}
    content = b"%PDF-1.4 a small document\n"

    def presign(size: int) -> dict[str, object]:
        body: dict[str, Any] = {
            "filename": "notes.pdf",
            "contentType": "application/pdf",
            "size": size,
            "kind": "document",
        }
        response = requests.post(f"{stack.api_url}/uploads", json=body, headers=auth, timeout=10)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def post_file(created: dict[str, object], data: bytes, **overrides: str) -> requests.Response:
        post = created["post"]
        assert isinstance(post, dict)
        fields = {**post["fields"], **overrides}
        return requests.post(
            post["url"], data=fields, files={"file": ("notes.pdf", data)}, timeout=30
        )

    created = presign(len(content))
    upload = created["upload"]
    assert isinstance(upload, dict)
    assert post_file(created, content).status_code == 204
    done = requests.post(
        f"{stack.api_url}/uploads/{upload['id']}/complete", headers=auth, timeout=10
    )
    assert done.json()["status"] == "ready"
    listed = requests.get(f"{stack.api_url}/uploads", headers=auth, timeout=10).json()
    assert [entry["id"] for entry in listed["uploads"]] == [upload["id"]]
    detail = requests.get(
        f"{stack.api_url}/uploads/{upload['id']}", headers=auth, timeout=10
    ).json()
    assert requests.get(detail["downloadUrl"], timeout=10).content == content
    deleted = requests.delete(f"{stack.api_url}/uploads/{upload['id']}", headers=auth, timeout=10)
    assert deleted.status_code == 200
    # S3 answers 403 for a missing key to a signer that may not list the bucket; moto 404.
    assert requests.get(detail["downloadUrl"], timeout=10).status_code in {403, 404}

    # The policy, not the API, stops these: the emulator enforces it as S3 does.
    too_big = post_file(presign(100), b"x" * (25 * 1024 * 1024 + 1))
    assert too_big.status_code == 400
    assert b"EntityTooLarge" in too_big.content
    wrong_type = post_file(presign(len(content)), content, **{"Content-Type": "text/html"})
    assert wrong_type.status_code == 403
    assert b"Policy Condition failed" in wrong_type.content


def test_mail_from_the_dev_stage_reaches_the_viewer_it_prints(stack: RunningStack) -> None:
    """The sender identity and configuration set are provisioned as a deploy creates them, so
    the API's settings for the stage send; the viewer's line is printed with the others."""
    assert f"  Mail:          {stack.mail_url}  " in "".join(stack.output)
    session = boto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-2"
    )
    client = session.client("sesv2", endpoint_url=stack.aws_url)
    mailer = SesMailer(
        client, sender=devstack.MAIL_FROM, configuration_set=devstack.SES_CONFIGURATION_SET
    )
    mailer.send(Message(to="dave@example.org", subject="From dev", text="t", html="<p>h</p>"))
    [latest, *_] = requests.get(f"{stack.mail_url}/api/messages", timeout=10).json()
    assert (latest["to"], latest["subject"], latest["from"]) == (
        ["dave@example.org"],
        "From dev",
        devstack.MAIL_FROM,
    )


def test_the_websocket_gateway_is_on_the_sites_origin_with_the_url_make_dev_prints(
    stack: RunningStack,
) -> None:
    """The site proxies /ws to the gateway (its own answer to a request without an upgrade comes
    back), and the gateway's @connections API answers boto3's client as API Gateway does."""
    assert f"  WebSocket:     ws://127.0.0.1:{stack.site_port}/ws  " in "".join(stack.output)
    plain = requests.get(f"{stack.site_url}/ws?ticket=none", timeout=10)
    assert (plain.status_code, plain.json()) == (426, {"message": "Upgrade Required"})
    client = boto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-2"
    ).client("apigatewaymanagementapi", endpoint_url=stack.ws_endpoint)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId="not-connected=", Data=b"{}")
