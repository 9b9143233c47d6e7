"""End to end: the real local stack (`make dev`) as subprocesses, over HTTP, then stopped."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(*needles: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in text for needle in needles):
            found.append(text)
    return found


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    output: list[str]
    api_url: str
    aws_port: int
    api_port: int

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def leftovers(self) -> list[str]:
        return processes_mentioning(
            f"--port {self.api_port} ",
            f"--port {self.aws_port} ",
            f"LOCAL_AWS_PORT={self.aws_port}",
        )


def start(command: list[str]) -> RunningStack:
    aws_port, api_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AWS_ENDPOINT_URL", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    env.update(LOCAL_AWS_PORT=str(aws_port), API_PORT=str(api_port))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if lines.get(timeout=1).strip() == "ready":
                return RunningStack(
                    process, output, f"http://127.0.0.1:{api_port}", aws_port, api_port
                )
        except queue.Empty:
            if process.poll() is not None:
                break
    process.kill()
    pytest.fail("the local stack did not start:\n" + "".join(output))


@pytest.fixture
def stack() -> Iterator[RunningStack]:
    running = start([sys.executable, "-m", "tools.devstack"])
    yield running
    if running.process.poll() is None:
        running.stop(signal.SIGTERM)


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
    stack: RunningStack, sig: signal.Signals
) -> None:
    assert stack.leftovers()
    assert stack.stop(sig) == 0
    assert not listening(stack.api_port)
    assert not listening(stack.aws_port)
    assert stack.leftovers() == []
    assert "stopped" in "".join(stack.output)


def test_sigterm_to_make_dev_stops_everything() -> None:
    running = start(["make", "--no-print-directory", "dev"])
    assert listening(running.api_port)
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(timeout=30)
    deadline = time.monotonic() + 20
    while (running.leftovers() or listening(running.api_port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running.leftovers() == []
    assert not listening(running.api_port)
    assert not listening(running.aws_port)


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
    assert requests.get(detail["downloadUrl"], timeout=10).status_code == 404

    # The policy, not the API, stops these: the emulator enforces it as S3 does.
    too_big = post_file(presign(100), b"x" * (25 * 1024 * 1024 + 1))
    assert too_big.status_code == 400
    assert b"EntityTooLarge" in too_big.content
    wrong_type = post_file(presign(len(content)), content, **{"Content-Type": "text/html"})
    assert wrong_type.status_code == 403
    assert b"Policy Condition failed" in wrong_type.content
