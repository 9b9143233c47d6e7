"""``make dev``: the embedded AWS emulator, ``chalice local``, the event runner, the WebSocket
gateway, the site and the mail viewer, stopped together.

The site is served on one origin with the API under ``/api`` (prefix stripped), as deployed:
by ``vite dev`` (``--site dev``, the default: reloads as you edit ``frontend/``) or by
``tools/siteserver.py`` from the built site (``--site build``: what the browser tests use).

The API sends mail through SES to the emulator, from a sender identity provisioned there as a
deploy verifies it; ``tools/mailviewer.py`` shows what was sent.

Chalice's local server runs no event sources and no WebSockets, so two more processes run the
app's other handlers in-process: ``tools/eventrunner.py`` feeds the stream and queue handlers from
the emulator, and ``tools/wsgateway.py`` serves the WebSocket API and its ``@connections`` API
(``WEBSOCKET_ENDPOINT``); the site proxies ``/ws`` to it, so ``WEBSOCKET_URL`` is on the site's
origin. Both restart with the API when the source changes.

Ports and host come from the environment (LOCAL_AWS_PORT, API_PORT, SITE_PORT, MAIL_PORT,
WS_PORT, DEV_HOST). Ctrl-C or SIGTERM stops every process this started; so does the death of the
parent (make).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import boto3

from tools.localaws import Resources, ensure_sender, provision

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
LOG_DIR = ROOT / ".local"
STAGE = "dev"
REGION = "eu-west-2"
_PR_SET_PDEATHSIG = 1
# The local stage's mail settings. They are not in .chalice/config.json, whose values chalice
# local would put over these: SITE_URL follows SITE_PORT, which the tests choose.
MAIL_FROM = "Gatehouse <no-reply@example.com>"
SES_CONFIGURATION_SET = "gatehouse-dev"


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(
    ready: Callable[[], bool], *, what: str, timeout: float, child: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited with status {child.returncode} while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s")
        time.sleep(0.1)


def responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def answers(url: str) -> bool:
    """Whether a server answers at ``url``, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


SiteMode = Literal["dev", "build", "none"]


class Stack:
    def __init__(
        self,
        *,
        host: str,
        aws_port: int,
        api_port: int,
        site_port: int,
        mail_port: int,
        ws_port: int = 8001,
        site: SiteMode = "dev",
    ) -> None:
        self.host = host
        self.aws_url = f"http://{host}:{aws_port}"
        self.api_url = f"http://{host}:{api_port}"
        self.site_url = f"http://{host}:{site_port}"
        self.mail_url = f"http://{host}:{mail_port}"
        # The WebSocket gateway's @connections API, and the URL browsers connect to: through
        # the site's proxy, on its origin, as deployed; straight to the gateway without a site.
        self.ws_endpoint = f"http://{host}:{ws_port}"
        self.websocket_url = (
            f"ws://{host}:{ws_port}/ws" if site == "none" else f"ws://{host}:{site_port}/ws"
        )
        self._aws_port = aws_port
        self._api_port = api_port
        self._site_port = site_port
        self._mail_port = mail_port
        self._ws_port = ws_port
        self._site_mode: SiteMode = site
        self._emulator: subprocess.Popen[bytes] | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._runner: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None
        self._site: subprocess.Popen[bytes] | None = None
        self._mail: subprocess.Popen[bytes] | None = None
        self._loaded: dict[Path, float] = {}
        # The event runner's stream position, kept across its restarts (one per emulator port,
        # so stacks side by side keep their own).
        self._checkpoint = LOG_DIR / f"eventrunner-{aws_port}.json"

    @property
    def site_origins(self) -> list[str]:
        """Where the browser may load the site from: allowed to refresh and to upload."""
        origins = [self.site_url]
        if self.host == "127.0.0.1":
            origins.append(f"http://localhost:{self._site_port}")
        return origins

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT_URL=self.aws_url,
            AWS_DEFAULT_REGION=REGION,
            # The emulator accepts any credentials; these never leave this machine.
            AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "local"),
            AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "local"),
            PYTHONUNBUFFERED="1",
            # tools/localapi.py: the site's real origins, whatever its port.
            LOCAL_ALLOWED_ORIGINS=",".join(self.site_origins),
            # frontend/vite.config.ts: where `vite dev` listens and proxies /api and /ws to.
            GATEHOUSE_API_URL=self.api_url,
            GATEHOUSE_WS_URL=self.ws_endpoint,
            DEV_HOST=self.host,
            SITE_PORT=str(self._site_port),
            # chalicelib/settings.py: mail through SES (the emulator), links to this site.
            MAIL_FROM=MAIL_FROM,
            SES_CONFIGURATION_SET=SES_CONFIGURATION_SET,
            SITE_URL=self.site_url,
            # chalicelib/settings.py: WebSocket tickets point at the site's /ws; the notify
            # worker sends through the local gateway's @connections API.
            WEBSOCKET_URL=self.websocket_url,
            WEBSOCKET_ENDPOINT=self.ws_endpoint,
        )
        return env

    def _spawn(
        self, args: list[str], *, log: Path | None = None, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        # Each child leads its own process group, so stopping it also stops whatever it forked,
        # and a terminal's Ctrl-C reaches only us.
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=self.environment(),
            start_new_session=True,
            preexec_fn=die_with_parent,
            stdin=subprocess.DEVNULL,
            stdout=None if log is None else log.open("ab"),
            stderr=subprocess.STDOUT if log is not None else None,
        )

    def start(self) -> None:
        LOG_DIR.mkdir(exist_ok=True)
        self._emulator = emulator = self._spawn(
            [
                sys.executable,
                "-m",
                "tools.emulator",
                "--host",
                self.host,
                "--port",
                str(self._aws_port),
            ],
            log=LOG_DIR / "emulator.log",
        )
        wait_until(
            lambda: responds(f"{self.aws_url}/moto-api/"),
            what="the AWS emulator",
            timeout=30,
            child=emulator,
        )
        session = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION
        )
        os.environ["AWS_ENDPOINT_URL"] = self.aws_url
        provision(session, Resources.for_stage(STAGE), site_origins=self.site_origins)
        ensure_sender(session, MAIL_FROM, configuration_set=SES_CONFIGURATION_SET)
        self._start_mail()
        self._start_api()
        self._start_handlers()
        self._start_site()

    def _start_mail(self) -> None:
        self._mail = mail = self._spawn(
            [
                sys.executable,
                "-m",
                "tools.mailviewer",
                "--host",
                self.host,
                "--port",
                str(self._mail_port),
                "--aws",
                self.aws_url,
            ]
        )
        wait_until(
            lambda: responds(f"{self.mail_url}/api/messages"),
            what="the mail viewer",
            timeout=30,
            child=mail,
        )

    def _start_api(self) -> None:
        # chalice's own autoreload watches every file under the project (.venv and logs
        # included) and drops requests when it restarts, so we reload on source changes only.
        self._loaded = _source_mtimes()  # what this API process runs
        # `chalice local --no-autoreload`, letting the site's origin through (see tools/localapi).
        self._api = api = self._spawn(
            [
                sys.executable,
                "-m",
                "tools.localapi",
                "--host",
                self.host,
                "--port",
                str(self._api_port),
                "--stage",
                STAGE,
            ]
        )
        wait_until(
            lambda: responds(f"{self.api_url}/health"), what="chalice local", timeout=60, child=api
        )

    def _start_handlers(self) -> None:
        """The event runner and the WebSocket gateway, on the code the API runs."""
        self._runner = self._spawn(
            [
                sys.executable,
                "-m",
                "tools.eventrunner",
                "--stage",
                STAGE,
                "--checkpoint",
                str(self._checkpoint),
                "--aws",
                self.aws_url,
            ]
        )
        self._gateway = gateway = self._spawn(
            [
                sys.executable,
                "-m",
                "tools.wsgateway",
                "--host",
                self.host,
                "--port",
                str(self._ws_port),
                "--stage",
                STAGE,
            ]
        )
        wait_until(
            lambda: answers(f"{self.ws_endpoint}/ws"),
            what="the WebSocket gateway",
            timeout=60,
            child=gateway,
        )

    def _start_site(self) -> None:
        if self._site_mode == "none":
            return
        if self._site_mode == "dev":
            vite = FRONTEND / "node_modules" / ".bin" / "vite"
            if not vite.exists():
                raise RuntimeError("frontend/node_modules is missing: run `make dev`")
            self._site = site = self._spawn([str(vite), "dev"], cwd=FRONTEND)
        else:
            self._site = site = self._spawn(
                [
                    sys.executable,
                    "-m",
                    "tools.siteserver",
                    "--host",
                    self.host,
                    "--port",
                    str(self._site_port),
                    "--api",
                    self.api_url,
                    "--ws",
                    self.ws_endpoint,
                ]
            )
        wait_until(
            lambda: responds(f"{self.site_url}/api/health"),
            what="the site",
            timeout=60,
            child=site,
        )

    def run(self) -> int:
        """Serve until the emulator exits, restarting the API whenever its source changes."""
        if self._emulator is None or self._api is None or self._mail is None:
            raise RuntimeError("start() the stack before running it")
        reported = False
        while (
            self._emulator.poll() is None
            and self._mail.poll() is None
            and (self._site is None or self._site.poll() is None)
        ):
            time.sleep(0.5)
            if _source_mtimes() != self._loaded:
                reported = False
                print(
                    "source changed: restarting the API, the event runner and the gateway",
                    flush=True,
                )
                _stop(self._gateway)
                _stop(self._runner)
                _stop(self._api)
                with contextlib.suppress(RuntimeError):
                    self._start_api()
                    self._start_handlers()
            down = [
                name
                for name, child in (
                    ("the API", self._api),
                    ("the event runner", self._runner),
                    ("the WebSocket gateway", self._gateway),
                )
                if child is None or child.poll() is not None
            ]
            if down and not reported:
                reported = True
                print(
                    f"{' and '.join(down)} is down: fix the code and save to restart",
                    file=sys.stderr,
                )
        if self._site is not None and self._site.poll() is not None:
            print(f"the site exited with status {self._site.returncode}", file=sys.stderr)
            return self._site.returncode
        if self._mail.poll() is not None:
            print(f"the mail viewer exited with status {self._mail.returncode}", file=sys.stderr)
            return self._mail.returncode
        return self._emulator.returncode

    def stop(self) -> None:
        _stop(self._site)
        _stop(self._gateway)
        _stop(self._runner)
        _stop(self._api)
        _stop(self._mail)
        _stop(self._emulator)
        # The next start has a new emulator, so a new stream.
        self._checkpoint.unlink(missing_ok=True)


def _source_mtimes() -> dict[Path, float]:
    paths = [ROOT / "app.py", ROOT / ".chalice" / "config.json", *ROOT.glob("chalicelib/**/*.py")]
    return {path: path.stat().st_mtime for path in paths if path.exists()}


def _stop(child: subprocess.Popen[bytes] | None) -> None:
    if child is None:
        return
    _signal_group(child, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=10)
    # The group may still hold a process even after its leader exited.
    _signal_group(child, signal.SIGKILL)
    child.wait()


def _signal_group(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, sig)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--site",
        choices=["dev", "build"],
        default="dev",
        help="serve the site with `vite dev` (default) or the built frontend/build",
    )
    # The API tests that need no site (tests/test_fuzz.py) skip starting one.
    parser.add_argument("--no-site", action="store_true", help="run the emulator and API only")
    args = parser.parse_args(argv)
    site: SiteMode = "none" if args.no_site else "build" if args.site == "build" else "dev"
    die_with_parent()
    stack = Stack(
        host=os.environ.get("DEV_HOST", "127.0.0.1"),
        aws_port=int(os.environ.get("LOCAL_AWS_PORT", "5000")),
        api_port=int(os.environ.get("API_PORT", "8000")),
        site_port=int(os.environ.get("SITE_PORT", "5173")),
        mail_port=int(os.environ.get("MAIL_PORT", "8025")),
        ws_port=int(os.environ.get("WS_PORT", "8001")),
        site=site,
    )
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        stack.start()
        print(
            f"\nGatehouse is running (stage {STAGE}).\n"
            f"  Site:          {stack.site_url}  (the API under /api)\n"
            f"  API:           {stack.api_url}\n"
            f"  AWS emulator:  {stack.aws_url}  (in memory: a restart starts empty;"
            f" its log is in .local/emulator.log)\n"
            f"  Mail:          {stack.mail_url}  (what the API sent through SES;"
            f" JSON at /api/messages)\n"
            f"  WebSocket:     {stack.websocket_url}  (the gateway's @connections API:"
            f" {stack.ws_endpoint})\n"
            f"  Events:        the table's stream and the workers' queues drive the app's"
            f" handlers (make job NAME=backup|sweep runs a scheduled one)\n\n"
            f"Open {stack.site_url} in a browser, or try the API:\n"
            f"  curl -s -X POST {stack.api_url}/auth/signup \\\n"
            f"       -H 'Content-Type: application/json' \\\n"
            f'       -d \'{{"username": "alice", "password": "correct horse battery"}}\'\n\n'
            f"Press Ctrl-C to stop.\nready",
            flush=True,
        )
        status = stack.run()
        print(f"a server exited with status {status}; stopping", file=sys.stderr)
        return 1
    except _Stop:
        return 0
    except RuntimeError as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
