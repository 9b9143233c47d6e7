"""The real local stack (``python -m tools.devstack`` or ``make dev``) on free ports."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT


def advance_clock(clock_offset: Path, seconds: float) -> None:
    """Move the stack's clock ``seconds`` forward."""
    clock_offset.write_text(str(float(clock_offset.read_text() or 0) + seconds))


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


def processes_with_environment(name: str, value: str) -> list[str]:
    """Processes whose environment has ``name=value`` (vite's command line names no port)."""
    needle = f"{name}={value}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(environ.parent.name)
        except OSError:
            continue
    return found


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    output: list[str]
    aws_port: int
    api_port: int
    site_port: int
    mail_port: int
    ws_port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def site_url(self) -> str:
        return f"http://127.0.0.1:{self.site_port}"

    @property
    def aws_url(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def mail_url(self) -> str:
        """The mail viewer: ``GET /api/messages`` lists what the API sent, newest first."""
        return f"http://127.0.0.1:{self.mail_port}"

    @property
    def ws_endpoint(self) -> str:
        """The local WebSocket gateway: ``/ws`` and the ``@connections`` API."""
        return f"http://127.0.0.1:{self.ws_port}"

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def leftovers(self) -> list[str]:
        return processes_mentioning(
            f"--port {self.api_port} ",
            f"--port {self.aws_port} ",
            f"--port {self.site_port} ",
            f"--port {self.mail_port} ",
            f"--port {self.ws_port} ",
            f"--aws {self.aws_url}",
            f"LOCAL_AWS_PORT={self.aws_port}",
        ) + processes_with_environment("SITE_PORT", str(self.site_port))

    def promote(self, username: str) -> None:
        """Make ``username`` an administrator with ``make admin``'s command."""
        promoted = subprocess.run(
            [sys.executable, "-m", "tools.admin", username],
            cwd=ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "AWS_ENDPOINT_URL": self.aws_url,
                "AWS_DEFAULT_REGION": "eu-west-2",
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
            },
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "is now an administrator" in promoted.stdout

    def ports_open(self) -> list[int]:
        ports = (self.aws_port, self.api_port, self.site_port, self.mail_port, self.ws_port)
        return [port for port in ports if listening(port)]


def start(command: list[str], extra_env: dict[str, str] | None = None) -> RunningStack:
    """Start the stack on free ports and wait for its ``ready`` line."""
    aws_port, api_port, site_port, mail_port, ws_port = (free_port() for _ in range(5))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AWS_ENDPOINT_URL", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    env.update(
        LOCAL_AWS_PORT=str(aws_port),
        API_PORT=str(api_port),
        SITE_PORT=str(site_port),
        MAIL_PORT=str(mail_port),
        WS_PORT=str(ws_port),
        **(extra_env or {}),
    )
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
                    process, output, aws_port, api_port, site_port, mail_port, ws_port
                )
        except queue.Empty:
            if process.poll() is not None:
                break
    process.kill()
    pytest.fail("the local stack did not start:\n" + "".join(output))
