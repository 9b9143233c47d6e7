from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from chalice.test import Client, HTTPResponse
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

import app as app_module
from chalicelib.accounts import MfaChallenge, SignedIn
from chalicelib.identity import Owner
from chalicelib.keys import user_key
from chalicelib.mail import InMemoryMailer
from chalicelib.passwords import ScryptCost
from chalicelib.stores import Stores
from chalicelib.users import DynamoDBUserRepository, InMemoryUserRepository, User, UserRepository
from tests.contract import Contract
from tools import emulator, localgateway
from tools.localaws import Resources, provision

ROOT = Path(__file__).resolve().parent.parent
# A tiny scrypt cost keeps the suite fast; the production cost has its own tests.
CHEAP_COST = ScryptCost(n=2**10, r=8, p=1)
REGION = "eu-west-2"
# The test client answers authorizer denials as the deployed API's gateway responses do.
localgateway.install()
# moto's DynamoDB transactions as the local emulator runs them: DynamoDB's semantics, at a cost
# that does not grow with the table (tools/emulator.py).
emulator.install_journaled_transactions()


class FakeClock:
    """A settable clock for expiry tests."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    """moto's in-process AWS; AWS_ENDPOINT_URL must be unset or moto does not intercept."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # moto applies concurrent requests without isolation; DynamoDB applies each conditional
    # write atomically. Serialising moto's dispatch restores that for the race tests.
    lock = threading.RLock()
    dispatch = BotocoreStubber.__call__

    def serialised(self: BotocoreStubber, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return dispatch(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", serialised)
    with mock_aws():
        yield _session()


@functools.cache
def _session() -> boto3.Session:
    """One session for the whole run: a new one loads every service model again (~0.3 s a test).
    moto's mock is per test all the same: it intercepts every client's requests while active."""
    return boto3.Session(region_name=REGION)


@pytest.fixture
def resources(aws: boto3.Session) -> Resources:
    resources = Resources.for_stage("dev")
    provision(aws, resources)
    return resources


@pytest.fixture
def table(aws: boto3.Session, resources: Resources):  # type: ignore[no-untyped-def]
    return aws.resource("dynamodb").Table(resources.table_name)


@pytest.fixture(params=["dynamodb", "memory"])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The repositories under moto, then their in-memory twins: contract tests run on both."""
    if request.param == "memory":
        return Stores.in_memory()
    return Stores.dynamodb(request.getfixturevalue("table"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def mailbox() -> InMemoryMailer:
    """What the app mails during a test, in order."""
    return InMemoryMailer()


@pytest.fixture
def dependencies(
    resources: Resources, clock: FakeClock, mailbox: InMemoryMailer, monkeypatch: pytest.MonkeyPatch
) -> app_module.Dependencies:
    """The production wiring, with a cheap scrypt cost, a settable clock and a kept mailbox."""
    deps = app_module.Dependencies(clock=clock, scrypt_cost=CHEAP_COST, mailer=mailbox)
    monkeypatch.setattr(app_module, "dependencies", deps)
    return deps


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract(app_module.openapi_document())


@pytest.fixture
def client(dependencies: app_module.Dependencies, contract: Contract) -> Iterator[Client]:
    """Chalice's test client; every answer it gets is checked against the OpenAPI document."""
    with Client(app_module.app, stage_name="dev", project_dir=str(ROOT)) as test_client:
        http = test_client.http
        send = http.request

        def checked(
            method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
        ) -> HTTPResponse:
            response = send(method, path, headers, body)
            contract.check(method, path, response.status_code, response.body)
            return response

        http.request = checked  # type: ignore[method-assign]
        yield test_client


@dataclass
class Api:
    """Small helpers over chalice's test client for JSON calls."""

    client: Client

    def post(self, path: str, body: object, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        return self.client.http.post(
            path,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=json.dumps(body),
        )

    def get(self, path: str, token: str | None = None):  # type: ignore[no-untyped-def]
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.client.http.get(path, headers=headers)

    def signup(self, username: str, password: str = "correct horse battery") -> None:
        response = self.post("/auth/signup", {"username": username, "password": password})
        assert response.status_code == 201, response.body

    def login(self, username: str, password: str = "correct horse battery") -> str:
        response = self.post("/auth/login", {"username": username, "password": password})
        assert response.status_code == 200, response.body
        return str(response.json_body["token"])


@pytest.fixture
def api(client: Client) -> Api:
    return Api(client)


MAX_PAGES = 50
PageT = TypeVar("PageT")


def without_mfa(result: SignedIn | MfaChallenge) -> SignedIn:
    """A login's answer for an account without a second factor: the tokens."""
    assert isinstance(result, SignedIn), result
    return result


LEGACY = "2024-05-01T10:00:00.000Z"


@pytest.fixture(scope="module")
def clock_offset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file whose seconds a local stack started with ``CLOCK_OFFSET_FILE`` set to it (and a
    job run by hand with the same variable) adds to its clock."""
    path = tmp_path_factory.mktemp("clock") / "offset"
    path.write_text("0")
    return path


def owner_of(name: str) -> Owner:
    """The account of ``name`` in repository tests, with an id that is the same on every run."""
    return Owner(name, hashlib.sha256(name.encode()).hexdigest()[:32])


def account(name: str) -> User:
    """A profile for ``owner_of(name)``."""
    return User(
        username=name,
        user_id=owner_of(name).user_id,
        password_hash="h",
        created_at="2026-01-01T00:00:00.000Z",
    )


def add_legacy(users: UserRepository, username: str, password_hash: str = "c2FsdA==:a2V5") -> None:
    """A profile as the original system wrote it: no id, no name claim, no role."""
    if isinstance(users, InMemoryUserRepository):
        users.add_legacy(
            User(username=username, user_id=None, password_hash=password_hash, created_at=LEGACY)
        )
        return
    assert isinstance(users, DynamoDBUserRepository)
    users._table.put_item(
        Item={
            **user_key(username),
            "username": username,
            "passwordHash": password_hash,
            "createdAt": LEGACY,
        }
    )


def follow(
    fetch: Callable[[str | None], PageT], next_cursor: Callable[[PageT], Any]
) -> list[PageT]:
    """Every page from the first, each fetched with the cursor of the one before.

    A listing that never ends fails the test instead of hanging it.
    """
    pages: list[PageT] = []
    cursor = None
    for _ in range(MAX_PAGES):
        pages.append(fetch(cursor))
        cursor = next_cursor(pages[-1])
        if cursor is None:
            return pages
    pytest.fail(f"the listing did not end within {MAX_PAGES} pages")


def every_page(fetch: Callable[[str | None], Any], key: str) -> list[Any]:
    """The entries under ``key`` of every page of an API listing."""
    return [entry for page in follow(fetch, lambda page: page["nextCursor"]) for entry in page[key]]


def node_scrypt_hashes(passwords: list[str]) -> list[str]:
    """Hashes made by Node's own crypto.scrypt, exactly as the original system stored them."""
    script = """
const crypto = require('crypto');
const passwords = JSON.parse(process.argv[1]);
const out = passwords.map((password) => {
  const salt = crypto.randomBytes(32);
  const key = crypto.scryptSync(password, salt, 64);
  return salt.toString('base64') + ':' + key.toString('base64');
});
process.stdout.write(JSON.stringify(out));
"""
    result = subprocess.run(
        ["node", "-e", script, json.dumps(passwords)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    hashes: list[str] = json.loads(result.stdout)
    return hashes


def promote(table: Any, username: str) -> None:
    """Give an existing user the admin role, straight in the table."""
    table.update_item(
        Key=user_key(username),
        UpdateExpression="SET #role = :admin",
        ExpressionAttributeNames={"#role": "role"},
        ExpressionAttributeValues={":admin": "admin"},
    )
