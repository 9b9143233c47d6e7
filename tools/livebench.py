"""``make bench``'s live-update figure: the median time from an API write (``POST /items``) to the
``item.created`` message on the writer's WebSocket, on the local stack.

The path measured is the whole local pipeline: the API's write, the table's stream, the event
runner and the stream handler, EventBridge's rule into the notify queue, the notify worker, and
the gateway's ``@connections`` API to the client (``tools/eventrunner.py``,
``tools/wsgateway.py``). Deployed, Lambda's pollers take the runner's place, so the figure says
how the local stack behaves, not AWS.

By default it starts a stack of its own on free ports (``tools/devstack.py`` without the site)
and stops it after; ``--api URL`` measures a running ``make dev`` instead (its API, e.g.
``http://127.0.0.1:8000``).

Run: ``python -m tools.livebench`` (``make bench`` does, after ``tools/bench.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import sys
import time
from collections.abc import Iterator

import aiohttp

from tools.devstack import LOG_DIR, Stack, die_with_parent

SAMPLES = 20
# Each message must arrive within this; the goal for the site is 2 seconds.
MESSAGE_TIMEOUT = 10.0
# What the stack this starts prints (its servers' logs), kept for when something goes wrong.
STACK_LOG = LOG_DIR / "livebench-stack.log"


class Unavailable(Exception):
    """The stack cannot give live updates (the API refused a step, or nothing arrived)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def own_stack() -> Iterator[str]:
    """The emulator, API, event runner, gateway and mail viewer on free ports; the API's URL."""
    stack = Stack(
        host="127.0.0.1",
        aws_port=_free_port(),
        api_port=_free_port(),
        site_port=_free_port(),
        mail_port=_free_port(),
        ws_port=_free_port(),
        site="none",
    )
    # The stack's servers inherit standard output and error: their request logs (chalice local
    # writes them to standard error) would bury the figure, so they go to STACK_LOG.
    STACK_LOG.parent.mkdir(exist_ok=True)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with STACK_LOG.open("wb") as sink:
        for fd in saved:
            os.dup2(sink.fileno(), fd)
    try:
        stack.start()
        yield stack.api_url
    finally:
        stack.stop()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)


async def _json(response: aiohttp.ClientResponse, step: str, expected: int) -> dict[str, object]:
    if response.status != expected:
        raise Unavailable(f"{step} answered {response.status}: {(await response.text())[:200]}")
    answer = await response.json()
    if not isinstance(answer, dict):
        raise Unavailable(f"{step} answered {answer!r}")
    return answer


async def measure(api: str, samples: int = SAMPLES) -> list[float]:
    """Milliseconds from each ``POST /items`` to its ``item.created`` message."""
    credentials = {"username": f"bench-{secrets.token_hex(4)}", "password": secrets.token_hex(16)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.post(f"{api}/auth/signup", json=credentials) as response:
            await _json(response, "POST /auth/signup", 201)
        login = {**credentials, "refreshTokenDelivery": "body"}
        async with http.post(f"{api}/auth/login", json=login) as response:
            token = (await _json(response, "POST /auth/login", 200))["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{api}/auth/ws-ticket", json={}, headers=bearer) as response:
            url = str((await _json(response, "POST /auth/ws-ticket", 200))["url"])
        timings = []
        async with http.ws_connect(url) as socket_:
            for index in range(samples):
                started = time.perf_counter()
                body = {"name": f"live bench {index}"}
                async with http.post(f"{api}/items", json=body, headers=bearer) as response:
                    item_id = (await _json(response, "POST /items", 201))["id"]
                await _until_created(socket_, item_id)
                timings.append((time.perf_counter() - started) * 1000)
        return timings


async def _until_created(socket_: aiohttp.ClientWebSocketResponse, item_id: object) -> None:
    deadline = time.monotonic() + MESSAGE_TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await socket_.receive(timeout=left)
        except TimeoutError:
            break
        if message.type != aiohttp.WSMsgType.TEXT:
            raise Unavailable(f"the WebSocket closed ({message.type.name})")
        pushed = json.loads(message.data)
        if not isinstance(pushed, dict) or pushed.get("type") != "item.created":
            continue
        data = pushed.get("data")
        if isinstance(data, dict) and data.get("id") == item_id:
            return
    raise Unavailable(f"no item.created message within {MESSAGE_TIMEOUT:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", help="a running stack's API (default: start one)")
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args(argv)
    die_with_parent()
    print("live updates: timing API writes to WebSocket messages ...", file=sys.stderr)
    try:
        with contextlib.ExitStack() as stack:
            api = args.api or stack.enter_context(own_stack())
            timings = asyncio.run(measure(api, args.samples))
    except (Unavailable, RuntimeError, aiohttp.ClientError, OSError) as exc:
        where = "" if args.api else f" (the stack's log: {STACK_LOG})"
        print(f"live updates: unavailable: {exc}{where}", file=sys.stderr)
        return 1
    median = statistics.median(timings)
    print(
        f"API write -> WebSocket message (POST /items -> item.created), median of {len(timings)}:"
        f" {median:.1f} ms (min {min(timings):.1f}, max {max(timings):.1f}; goal for the site:"
        " 2000 ms)"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
