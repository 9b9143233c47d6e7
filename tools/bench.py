"""``make bench``: cold-start, password-hashing, request-overhead and round-trip figures.

The request figures come from the app called in-process through chalice's test client, with
production dependencies (the real scrypt cost), against moto's server started on a free port.

Round trips are AWS API calls, counted with botocore's ``before-call`` hook on the clients the
app uses (one per call, whatever botocore's retries do underneath). ``tests/test_round_trips.py``
runs the same scenario (``route_round_trips``) and fails above the budgets (``BUDGETS``).

Login against the scrypt verify inside it (``login_rows``):

- Each sample meets the table as the samples before it left it, as in production: DynamoDB's
  latency does not depend on a table's size, nor does the emulator's (``tools/emulator.py``
  journals the items a transaction names, where moto copied the whole table once per item, so
  that each login made the next one slower).
- Warm-up is excluded: one untimed pair after the set-up (clients, connections, caches).
- Interleaved: login and the bare verify alternate in pairs, their order swapped every pair, so
  load from other processes on the machine falls on both. The ratio is the median of the
  pairs' ratios (its interquartile range is printed beside it), over ``LOGIN_RUNS`` pairs.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import boto3
import jwt
from chalice.test import Client, HTTPResponse

import app
from chalicelib.keys import session_key, user_key
from chalicelib.logs import LOGGER_NAMES
from chalicelib.passwords import DEFAULT_COST, ScryptHasher
from tools.devstack import REGION, ROOT, STAGE, die_with_parent, responds, wait_until
from tools.localaws import Resources, ensure_table, provision

IMPORT_RUNS, SCRYPT_RUNS, GET_RUNS, LOGIN_RUNS, VARIANT_RUNS = 15, 7, 50, 41, 15
USERNAME, UNKNOWN, LEGACY = "bench-user", "no-such-user", "legacy-user"
PASSWORD = secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    goal: str = ""
    met: bool | None = None


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(call: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        call()
        return (time.perf_counter() - started) * 1000

    return run


def paired_medians(
    first: Callable[[], float], second: Callable[[], float], runs: int
) -> tuple[float, float]:
    """Median of each sample; alternating the two keeps drift (CPU clock, GC) out of the ratio."""
    samples = [(first(), second()) for _ in range(runs)]
    return statistics.median(a for a, _ in samples), statistics.median(b for _, b in samples)


@dataclass(frozen=True)
class Paired:
    """Interleaved samples of two calls: their medians, the median and quartiles of the pairs'
    ratios (first / second), and the median of their differences (first - second)."""

    first_ms: float
    second_ms: float
    ratio: float
    ratio_low: float
    ratio_high: float
    difference_ms: float

    @classmethod
    def of(cls, samples: list[tuple[float, float]]) -> Paired:
        ratios = [a / b for a, b in samples]
        low, _, high = statistics.quantiles(ratios, n=4)
        return cls(
            first_ms=statistics.median(a for a, _ in samples),
            second_ms=statistics.median(b for _, b in samples),
            ratio=statistics.median(ratios),
            ratio_low=low,
            ratio_high=high,
            difference_ms=statistics.median(a - b for a, b in samples),
        )

    def spread(self) -> str:
        return f"{self.ratio:.2f}x ({self.ratio_low:.2f}-{self.ratio_high:.2f})"


def paired(first: Callable[[], float], second: Callable[[], float], runs: int) -> Paired:
    """``runs`` pairs of samples, the order within a pair swapped every pair."""
    samples = []
    for run in range(runs):
        if run % 2:
            b, a = second(), first()
        else:
            a, b = first(), second()
        samples.append((a, b))
    return Paired.of(samples)


# The Lambda package has no `cryptography` (PyJWT needs it only for RSA/EC), but moto brings it
# into the dev venv and PyJWT imports it when present (~30 ms): hide it, as in Lambda.
AS_PACKAGED = "import sys; sys.modules['cryptography'] = None; "


def cold_import(module: str, prelude: str = "") -> Callable[[], float]:
    """Milliseconds ``import module`` takes in a fresh interpreter, measured inside it."""
    return cold_run(f"import {module}", prelude)


def cold_run(statement: str, prelude: str = "") -> Callable[[], float]:
    """Milliseconds ``statement`` takes in a fresh interpreter after ``prelude``, measured there."""
    clock = "import time; t = time.perf_counter(); "
    code = f"{prelude}{clock}{statement}; print(time.perf_counter() - t)"
    # Without AWS_LAMBDA_FUNCTION_NAME, app.py reads no settings at import; with bytecode caches
    # allowed, the untimed first run compiles once and the figures compare imports, not compiles.
    skip = {"AWS_LAMBDA_FUNCTION_NAME", "PYTHONDONTWRITEBYTECODE"}
    env = {name: value for name, value in os.environ.items() if name not in skip}

    def run() -> float:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"{statement} failed:\n{result.stderr}")
        return 1000 * float(result.stdout)

    return run


# What the first request with a body adds in a fresh process: the request models and pydantic,
# which the import defers (chalicelib/deferred.py), and the model's validator, built on first use.
FIRST_BODY = "app.P.LoginRequest.model_validate({'username': 'u', 'password': 'p'})"


def import_rows() -> list[Row]:
    progress(f"cold imports ({IMPORT_RUNS} fresh interpreters each)")
    app_import, boto3_import = cold_import("app", AS_PACKAGED), cold_import("boto3")
    first_body = cold_run(FIRST_BODY, AS_PACKAGED + "import app; ")
    # An untimed first run warms the page cache and, where allowed, the bytecode caches.
    paired_medians(app_import, boto3_import, 1)
    first_body()
    # The median of interleaved pairs' differences: this machine's speed drifts by tens of per
    # cent within seconds, which a difference of two separate medians takes in whole.
    imports = paired(app_import, boto3_import, IMPORT_RUNS)
    body_ms = statistics.median(first_body() for _ in range(IMPORT_RUNS))
    extra = imports.difference_ms
    return [
        Row("cold import boto3", f"{imports.second_ms:.1f} ms"),
        Row("cold import app (as packaged)", f"{imports.first_ms:.1f} ms"),
        Row("  app over boto3 (median of pairs)", f"{extra:+.1f} ms", "<= +150 ms", extra <= 150),
        Row("first request body after it (pydantic, deferred)", f"{body_ms:.1f} ms"),
    ]


def scrypt_rows() -> list[Row]:
    cost = DEFAULT_COST
    progress(f"scrypt n=2^{cost.n.bit_length() - 1} r={cost.r} p={cost.p} ({SCRYPT_RUNS} runs)")
    hasher = ScryptHasher()
    stored = hasher.hash(PASSWORD)
    hash_ms, verify_ms = paired_medians(
        timed(lambda: hasher.hash(PASSWORD)),
        timed(lambda: hasher.verify(PASSWORD, stored)),
        SCRYPT_RUNS,
    )
    return [
        Row("scrypt hash", f"{hash_ms:.1f} ms"),
        Row("scrypt verify", f"{verify_ms:.1f} ms"),
        Row("scrypt memory (128*n*r)", f"{128 * cost.n * cost.r / 2**20:.1f} MiB"),
    ]


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """moto's server on a free loopback port; its whole process group is killed on exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=die_with_parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = functools.partial(responds, f"{url}/moto-api/")
        wait_until(ready, what="the AWS emulator", timeout=30, child=child)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@contextlib.contextmanager
def quiet_request_log() -> Iterator[None]:
    """Send the app's log lines to /dev/null: still written, so still paid for, but not shown."""
    handlers = [
        handler
        for name in LOGGER_NAMES
        for handler in logging.getLogger(name).handlers
        if isinstance(handler, logging.StreamHandler)
    ]
    previous = [handler.stream for handler in handlers]
    with open(os.devnull, "w") as sink:
        for handler in handlers:
            handler.stream = sink
        try:
            yield
        finally:
            for handler, stream in zip(handlers, previous, strict=True):
                handler.stream = stream


def legacy_hash(password: str = PASSWORD) -> str:
    """A hash in the original system's format (Node's crypto.scrypt defaults)."""
    salt = secrets.token_bytes(32)
    key = hashlib.scrypt(password.encode(), salt=salt, n=16384, r=8, p=1, dklen=64)
    return f"{base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()}"


def expect(response: HTTPResponse, status: int) -> HTTPResponse:
    if response.status_code != status:
        raise RuntimeError(f"expected {status}, got {response.status_code}: {response.body!r}")
    return response


def request_rows(resources: Resources) -> list[Row]:
    session = boto3.Session(region_name=REGION)
    # A table of the bench's own rows only, not the round-trip scenario's.
    session.client("dynamodb").delete_table(TableName=resources.table_name)
    ensure_table(session, resources.table_name)
    http = Client(app.app, stage_name=STAGE, project_dir=str(ROOT)).http
    json_headers = {"Content-Type": "application/json"}

    def post(path: str, username: str, password: str, status: int) -> HTTPResponse:
        body = json.dumps({"username": username, "password": password}).encode()
        return expect(http.post(path, headers=json_headers, body=body), status)

    progress("sign-up and warm-up")
    post("/auth/signup", USERNAME, PASSWORD, 201)
    token = post("/auth/login", USERNAME, PASSWORD, 200).json_body["token"]
    post("/auth/login", UNKNOWN, PASSWORD, 401)
    bearer = {"Authorization": f"Bearer {token}"}
    table = boto3.resource("dynamodb", config=app.BOTO_CONFIG).Table(resources.table_name)
    table.put_item(
        Item={
            **user_key(LEGACY),
            "username": LEGACY,
            "passwordHash": legacy_hash(),
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    )
    # The legacy row's first use gives it an id (one more write, once): not what is timed.
    post("/auth/login", LEGACY, PASSWORD + "!", 401)
    item = table.get_item(Key=user_key(USERNAME), ConsistentRead=True)["Item"]
    stored, hasher = str(item["passwordHash"]), ScryptHasher()

    # The read the route needs: the authorizer's one batch read of the profile and the session.
    session_id = jwt.decode(token, options={"verify_signature": False})["sid"]
    keys = [user_key(USERNAME), session_key(USERNAME, session_id)]
    batch = {resources.table_name: {"Keys": keys, "ConsistentRead": True}}
    progress(f"GET /auth/user vs its batch read ({GET_RUNS} runs)")
    get_ms, item_ms = paired_medians(
        timed(lambda: expect(http.get("/auth/user", headers=bearer), 200)),
        timed(lambda: table.meta.client.batch_get_item(RequestItems=cast("Any", batch))),
        GET_RUNS,
    )
    rows = [
        Row("GET /auth/user (test client)", f"{get_ms:.2f} ms"),
        Row("its BatchGetItem alone", f"{item_ms:.2f} ms"),
        Row("  ratio", f"{get_ms / item_ms:.2f}x", "<= 1.3x", get_ms / item_ms <= 1.3),
    ]
    return rows + login_rows(post, hasher, stored)


def login_rows(
    post: Callable[[str, str, str, int], HTTPResponse],
    hasher: ScryptHasher,
    stored: str,
) -> list[Row]:
    """Login against the scrypt verify inside it, and the failed logins against each other
    (module docstring)."""
    login = timed(lambda: post("/auth/login", USERNAME, PASSWORD, 200))
    verify = timed(lambda: hasher.verify(PASSWORD, stored))
    unknown = timed(lambda: post("/auth/login", UNKNOWN, PASSWORD, 401))
    wrong = timed(lambda: post("/auth/login", USERNAME, PASSWORD + "!", 401))
    legacy = timed(lambda: post("/auth/login", LEGACY, PASSWORD + "!", 401))
    progress(f"POST /auth/login vs scrypt verify ({LOGIN_RUNS} pairs)")
    login(), verify()
    success = paired(login, verify, LOGIN_RUNS)
    progress(f"login: unknown user vs wrong password vs legacy hash ({VARIANT_RUNS} pairs each)")
    failures = paired(unknown, wrong, VARIANT_RUNS)
    legacy_failures = paired(legacy, unknown, VARIANT_RUNS)
    return [
        Row("POST /auth/login (test client)", f"{success.first_ms:.1f} ms"),
        Row("scrypt verify alone", f"{success.second_ms:.1f} ms"),
        Row(
            "  ratio (median of pairs, quartiles)",
            success.spread(),
            "<= 1.1x",
            success.ratio <= 1.1,
        ),
        Row("  ratio of the medians", f"{success.first_ms / success.second_ms:.2f}x"),
        Row("  login over verify", f"{success.first_ms - success.second_ms:+.1f} ms"),
        Row("login, unknown user", f"{failures.first_ms:.1f} ms"),
        Row("login, wrong password", f"{failures.second_ms:.1f} ms"),
        Row("  ratio", failures.spread()),
        Row("login, wrong password, legacy hash", f"{legacy_failures.first_ms:.1f} ms"),
        Row("  ratio to unknown user", legacy_failures.spread()),
    ]


class RoundTrips:
    """Counts the AWS calls of every client made from the default boto3 session while it is
    installed (botocore's ``before-call`` event; clients copy the session's handlers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append((str(model.service_model.service_name), str(model.name)))

    @contextlib.contextmanager
    def installed(self) -> Iterator[RoundTrips]:
        """Count the calls of clients created inside the block (the app builds its own clients
        on first use, so install this before the container's first request)."""
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        events = cast("Any", boto3.DEFAULT_SESSION).events
        events.register("before-call", self._count, unique_id="gatehouse-round-trips")
        try:
            yield self
        finally:
            events.unregister("before-call", unique_id="gatehouse-round-trips")

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[tuple[str, str]]]:
        """The calls made inside the block (the list is filled when the block ends)."""
        start = len(self.calls)
        made: list[tuple[str, str]] = []
        try:
            yield made
        finally:
            made.extend(self.calls[start:])


@dataclass(frozen=True)
class Counted:
    """The calls one request made: to DynamoDB, and to Secrets Manager (the signing keys, fetched
    once per container and cached, so only the container's first request that needs them)."""

    route: str
    dynamodb: list[str]
    secrets: list[str] = field(default_factory=list)


# The most DynamoDB calls each request of the scenario may make (tests/test_round_trips.py).
BUDGETS = {
    "POST /auth/signup": 2,
    "POST /auth/login": 3,
    "POST /auth/login, wrong password": 3,
    "POST /auth/login, unknown user": 3,
    "POST /auth/login, name in another case": 4,
    "POST /auth/login, original-format row, first use": 4,
    "POST /auth/refresh": 3,
    "GET /auth/user": 1,
    "POST /items": 2,
    "GET /items": 2,
}


def route_round_trips(
    http: Any, dependencies: app.Dependencies, *, password: str, legacy_hash: str
) -> list[Counted]:
    """Each request of a fixed scenario (signup, logins, refresh, authenticated routes), with the
    AWS calls it made, on a fresh table and a fresh container (``dependencies``, which must not
    have built its clients yet)."""
    with RoundTrips().installed() as trips:
        return _scenario(http, trips, dependencies, password=password, legacy_hash=legacy_hash)


def _scenario(
    http: Any,
    trips: RoundTrips,
    dependencies: app.Dependencies,
    *,
    password: str,
    legacy_hash: str,
) -> list[Counted]:
    json_headers = {"Content-Type": "application/json"}
    counted: list[Counted] = []

    def send(route: str, status: int, body: Any = None, token: str | None = None) -> Any:
        method, path = route.split(",")[0].split(" ")
        headers = dict(json_headers) if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        raw = b"" if body is None else json.dumps(body).encode()
        with trips.counting() as made:
            response = expect(http.request(method, path, headers=headers, body=raw), status)
        counted.append(
            Counted(
                route,
                [op for service, op in made if service == "dynamodb"],
                [op for service, op in made if service == "secretsmanager"],
            )
        )
        return response.json_body

    def login(name: str) -> dict[str, Any]:
        return {"username": name, "password": password, "refreshTokenDelivery": "body"}

    send("POST /auth/signup", 201, {"username": "Trip-User", "password": password})
    signed_in = send("POST /auth/login", 200, login("Trip-User"))
    send("POST /auth/login, wrong password", 401, {**login("Trip-User"), "password": "wrong!"})
    send("POST /auth/login, unknown user", 401, login("no-such-trip-user"))
    send("POST /auth/login, name in another case", 200, login("trip-user"))
    dependencies.table.put_item(
        Item={
            **user_key("trip-legacy"),
            "username": "trip-legacy",
            "passwordHash": legacy_hash,
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    )
    send("POST /auth/login, original-format row, first use", 200, login("trip-legacy"))
    refreshed = send("POST /auth/refresh", 200, {"refreshToken": signed_in["refreshToken"]})
    token = refreshed["token"]
    send("GET /auth/user", 200, token=token)
    send("POST /items", 201, {"name": "trip"}, token=token)
    send("GET /items", 200, token=token)
    return counted


def round_trip_rows(resources: Resources) -> list[Row]:
    progress("round trips per route (botocore before-call)")
    http = Client(app.app, stage_name=STAGE, project_dir=str(ROOT)).http
    # A new container: its own clients, its own (empty) signing-key cache.
    dependencies = app.Dependencies()
    previous, app.dependencies = app.dependencies, dependencies
    try:
        counted = route_round_trips(
            http, dependencies, password=PASSWORD, legacy_hash=legacy_hash()
        )
    finally:
        app.dependencies = previous
    rows = []
    for each in counted:
        budget = BUDGETS[each.route]
        calls = len(each.dynamodb)
        secrets_note = f" + {len(each.secrets)} Secrets Manager" if each.secrets else ""
        rows.append(
            Row(
                f"{each.route}: {', '.join(each.dynamodb)}",
                f"{calls}{secrets_note}",
                f"<= {budget}",
                calls <= budget,
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    verdicts = {None: "", True: "met", False: "not met"}
    lines = [("figure", "median", "goal", "")]
    lines += [(row.figure, row.value, row.goal, verdicts[row.met]) for row in rows]
    fig, val, goal = (max(len(line[column]) for line in lines) for column in range(3))
    for line in lines:
        print(f"{line[0]:<{fig}}  {line[1]:>{val}}  {line[2]:<{goal}}  {line[3]}".rstrip())


def main() -> int:
    rows = import_rows() + scrypt_rows()
    resources = Resources.for_stage(STAGE)
    with emulator() as url, quiet_request_log():
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCESS_KEY_ID="local",
            AWS_SECRET_ACCESS_KEY="local",
            TABLE_NAME=resources.table_name,
            JWT_SECRET_ID=resources.jwt_secret_id,
            # A benchmark is the load test the limits would otherwise stop.
            IP_RATE_LIMIT="1000000",
            LOGIN_FREE_FAILURES="1000",
            ACCOUNT_FREE_FAILURES="100000",
        )
        provision(boto3.Session(region_name=REGION), resources)
        rows += round_trip_rows(resources)
        rows += request_rows(resources)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
