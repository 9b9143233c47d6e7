"""Events and real time, end to end on the real local stack (``make dev``'s, without the site).

One stack for the module (``tools/devstack.py --no-site``: the emulator, ``chalice local``, the
event runner, the WebSocket gateway and the mail viewer). Every test signs up accounts of its own
and waits a bounded time for what the pipeline does by itself: API write -> table -> stream ->
event runner -> ``on_table_change`` -> bus -> rule -> queue -> worker -> ``@connections`` -> the
client. Without the site, the ticket's URL is the gateway's own ``/ws``.

The sweep test moves the stack's clock (``CLOCK_OFFSET_FILE``, ``chalicelib/clock.py``) a day
forward; the job it runs reads the same file. It runs after the others (only the check of the
stack's log follows), and every test logs in afresh anyway.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import requests
from boto3.dynamodb.conditions import Key

from chalicelib.keys import CONNECTION, user_pk
from chalicelib.table import PARTITION_KEY, SORT_KEY
from chalicelib.uploads import PENDING_SECONDS, SWEEP_AFTER_SECONDS
from tests.conftest import ROOT
from tests.localstack import RunningStack, advance_clock, start
from tools.localaws import Resources

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
# Tests sign up far more often from one address than a person does.
STACK_ENV = {"IP_RATE_LIMIT": "100000"}
RESOURCES = Resources.for_stage("dev")
# The bound for an API write to reach a connected client.
LIVE_SECONDS = 5.0
# Bounds for what takes several polls of the runner: redrives, purges, mail.
PIPELINE_SECONDS = 30.0
Json = dict[str, Any]


@pytest.fixture(scope="module")
def stack(clock_offset: Path) -> Iterator[RunningStack]:
    running = start(
        [sys.executable, "-m", "tools.devstack", "--no-site"],
        {**STACK_ENV, "CLOCK_OFFSET_FILE": str(clock_offset)},
    )
    yield running
    if running.process.poll() is None:
        running.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def aws(stack: RunningStack) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-2"
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class Api:
    """One account's calls to the stack's API."""

    def __init__(self, stack: RunningStack, username: str, password: str = PASSWORD) -> None:
        self.url = stack.api_url
        self.username = username
        self.password = password
        self.token = ""

    def signup(self, **extra: str) -> requests.Response:
        body = {"username": self.username, "password": self.password, **extra}
        return requests.post(f"{self.url}/auth/signup", json=body, timeout=10)

    def login(self) -> requests.Response:
        body = {
            "username": self.username,
            "password": self.password,
            "refreshTokenDelivery": "body",
        }
        answer = requests.post(f"{self.url}/auth/login", json=body, timeout=10)
        if answer.status_code == 200:
            self.token = answer.json()["token"]
        return answer

    def call(self, method: str, path: str, **options: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **options.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **options)

    def account_id(self) -> str:
        """The access token's ``sub``: the account's immutable id."""
        payload = self.token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])

    def listen(self) -> LiveSocket:
        ticket = self.call("POST", "/auth/ws-ticket", json={})
        assert ticket.status_code == 200, ticket.text
        assert ticket.json()["expiresIn"] == 30
        return LiveSocket(ticket.json()["url"])


def signed_up(stack: RunningStack, prefix: str, **extra: str) -> Api:
    api = Api(stack, unique(prefix))
    assert api.signup(**extra).status_code == 201
    assert api.login().status_code == 200
    return api


_CLOSED = object()


class LiveSocket:
    """A WebSocket client on a thread of its own; what it receives waits on a queue."""

    def __init__(self, url: str) -> None:
        self.received: list[Json] = []
        self._inbox: queue.Queue[object] = queue.Queue()
        self._opened: queue.Queue[BaseException | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(url),), daemon=True)
        self._thread.start()
        failure = self._opened.get(timeout=15)
        if failure is not None:
            raise failure

    async def _run(self, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            try:
                self._socket = await http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(10))
            except (aiohttp.ClientError, OSError) as exc:
                self._opened.put(exc)
                return
            self._loop = asyncio.get_running_loop()
            self._opened.put(None)
            async for message in self._socket:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._inbox.put(json.loads(message.data))
            self._inbox.put(_CLOSED)

    def wait_for(
        self, matches: Callable[[Json], bool], timeout: float, *, since: float | None = None
    ) -> Json:
        """The first message (not yet looked at) that ``matches``; fails ``timeout`` seconds
        after ``since`` (a ``time.monotonic()`` reading: when the write was sent), or now."""
        deadline = (time.monotonic() if since is None else since) + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._inbox.get(timeout=left)
            except queue.Empty:
                break
            if message is _CLOSED:
                pytest.fail(f"the WebSocket closed; it received {self.received}")
            assert isinstance(message, dict)
            self.received.append(message)
            if matches(message):
                return message
        pytest.fail(f"nothing matching within {timeout} s; received {self.received}")

    def close(self) -> None:
        if self._loop is not None and self._socket is not None:
            asyncio.run_coroutine_threadsafe(self._socket.close(), self._loop).result(10)
        self._thread.join(timeout=10)


def item_event(kind: str, item_id: str) -> Callable[[Json], bool]:
    def matches(message: Json) -> bool:
        data = message.get("data")
        return message.get("type") == kind and isinstance(data, dict) and data.get("id") == item_id

    return matches


def until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Polls ``check`` until it answers something truthy; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout} s")


def uploaded(api: Api, content: bytes, *, complete: bool) -> str:
    """Starts an upload and POSTs the file with the presigned POST; the object's key."""
    body = {
        "filename": "draft.pdf",
        "contentType": "application/pdf",
        "size": len(content),
        "kind": "document",
    }
    started = api.call("POST", "/uploads", json=body)
    assert started.status_code == 201, started.text
    upload_id, post = started.json()["upload"]["id"], started.json()["post"]
    sent = requests.post(
        post["url"], data=post["fields"], files={"file": ("draft.pdf", content)}, timeout=30
    )
    assert sent.status_code == 204, sent.text
    if complete:
        done = api.call("POST", f"/uploads/{upload_id}/complete")
        assert done.json()["status"] == "ready", done.text
    return str(post["fields"]["key"])


def connection_rows(stack: RunningStack, aws: boto3.Session, username: str) -> list[Json]:
    table = aws.resource("dynamodb", endpoint_url=stack.aws_url).Table(RESOURCES.table_name)
    found = table.query(
        KeyConditionExpression=Key(PARTITION_KEY).eq(user_pk(username))
        & Key(SORT_KEY).begins_with(CONNECTION),
        ConsistentRead=True,
    )
    return list(found["Items"])


def test_item_changes_reach_the_owners_websocket_as_get_shows_them(
    stack: RunningStack, aws: boto3.Session
) -> None:
    alice = signed_up(stack, "alice")
    socket = alice.listen()
    assert len(connection_rows(stack, aws, alice.username)) == 1
    try:
        sent = time.monotonic()
        created = alice.call("POST", "/items", json={"name": "notes", "data": {"pages": 3}})
        assert created.status_code == 201, created.text
        item_id = created.json()["id"]
        message = socket.wait_for(item_event("item.created", item_id), LIVE_SECONDS, since=sent)
        shown = alice.call("GET", f"/items/{item_id}")
        assert message["data"] == shown.json()
        assert message["version"] == 1
        assert {"type", "version", "id", "time", "data"} <= set(message)

        sent = time.monotonic()
        patched = alice.call(
            "PATCH",
            f"/items/{item_id}",
            json={"status": "archived"},
            headers={"If-Match": shown.headers["ETag"]},
        )
        assert patched.status_code == 200, patched.text
        message = socket.wait_for(item_event("item.updated", item_id), LIVE_SECONDS, since=sent)
        last = alice.call("GET", f"/items/{item_id}").json()
        assert message["data"] == last
        assert last["status"] == "archived"

        sent = time.monotonic()
        assert alice.call("DELETE", f"/items/{item_id}").status_code == 200
        message = socket.wait_for(item_event("item.deleted", item_id), LIVE_SECONDS, since=sent)
        assert message["data"] == last
        assert alice.call("GET", f"/items/{item_id}").status_code == 404
    finally:
        socket.close()
    # The close reached $disconnect, which forgot the connection.
    until(
        lambda: not connection_rows(stack, aws, alice.username),
        timeout=LIVE_SECONDS,
        what="the connection's rows removed on disconnect",
    )


def test_another_users_client_receives_nothing_of_it(stack: RunningStack) -> None:
    alice, bob = signed_up(stack, "alice"), signed_up(stack, "bob")
    alices, bobs = alice.listen(), bob.listen()
    try:
        sent = time.monotonic()
        theirs = alice.call("POST", "/items", json={"name": "private"}).json()["id"]
        alices.wait_for(item_event("item.created", theirs), LIVE_SECONDS, since=sent)
        # Bob was listening all along: his own item reaches him, after Alice's reached her.
        sent = time.monotonic()
        own = bob.call("POST", "/items", json={"name": "mine"}).json()["id"]
        bobs.wait_for(item_event("item.created", own), LIVE_SECONDS, since=sent)
        assert theirs not in json.dumps(bobs.received)
        assert alice.username not in json.dumps(bobs.received)
    finally:
        alices.close()
        bobs.close()


def test_a_poison_message_lands_in_the_dead_letter_queue_after_3_receives(
    stack: RunningStack, aws: boto3.Session
) -> None:
    sqs = aws.client("sqs", endpoint_url=stack.aws_url)
    notify = sqs.get_queue_url(QueueName=RESOURCES.queues["notify"])["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=RESOURCES.dlq("notify"))["QueueUrl"]
    poison = json.dumps({"detail": {"not": "an envelope"}, "marker": secrets.token_hex(8)})
    sqs.send_message(QueueUrl=notify, MessageBody=poison)

    def dead() -> Json | None:
        found = sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        return next((dict(message) for message in found if message["Body"] == poison), None)

    landed = until(dead, timeout=PIPELINE_SECONDS, what="the poison message in the DLQ")
    # Received three times from the notify queue (each failed), plus this look at the DLQ.
    assert int(landed["Attributes"]["ApproximateReceiveCount"]) == 4
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=landed["ReceiptHandle"])
    # It left the notify queue: the worker is not retrying it (nor anything else) for ever.

    def notify_empty() -> bool:
        counts = sqs.get_queue_attributes(
            QueueUrl=notify,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return all(count == "0" for count in counts.values())

    until(notify_empty, timeout=PIPELINE_SECONDS, what="the notify queue empty")


def job(stack: RunningStack, name: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``make job NAME=<name>`` against the stack."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"AWS_ENDPOINT_URL", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"}
    }
    env.update(LOCAL_AWS_PORT=str(stack.aws_port), **extra)
    ran = subprocess.run(
        ["make", "-s", "job", f"NAME={name}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


def summary(ran: subprocess.CompletedProcess[str], message: str) -> Json:
    """The job's one summary line (JSON) with ``message``."""
    lines = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    found: list[Json] = [line for line in lines if line.get("message") == message]
    assert len(found) == 1, ran.stdout
    return found[0]


def test_the_backup_job_leaves_an_export_with_its_manifest(
    stack: RunningStack, aws: boto3.Session
) -> None:
    signed_up(stack, "backed")  # something to export
    ran = job(stack, "backup")
    line = summary(ran, "backup started")
    s3 = aws.client("s3", endpoint_url=stack.aws_url)
    listed = s3.list_objects_v2(Bucket=RESOURCES.backups_bucket, Prefix="backups/database/")
    keys = [entry["Key"] for entry in listed.get("Contents", [])]
    export_id = str(line["exportArn"]).rsplit("/", 1)[-1]
    folder = f"backups/database/AWSDynamoDB/{export_id}/"
    assert f"{folder}manifest-summary.json" in keys, keys
    assert f"{folder}manifest-files.json" in keys, keys
    data = [key for key in keys if key.startswith(f"{folder}data/") and key.endswith(".json.gz")]
    assert data, keys
    manifest = json.loads(
        s3.get_object(Bucket=RESOURCES.backups_bucket, Key=f"{folder}manifest-summary.json")[
            "Body"
        ].read()
    )
    assert manifest["exportArn"] == line["exportArn"]
    assert manifest["itemCount"] > 0
    files = s3.get_object(Bucket=RESOURCES.backups_bucket, Key=f"{folder}manifest-files.json")
    listed_files = [json.loads(row) for row in files["Body"].read().decode().splitlines()]
    assert sorted(entry["dataFileS3Key"] for entry in listed_files) == sorted(data)
    # Idempotent: a second run the same night finds tonight's export rather than starting one.
    assert summary(job(stack, "backup"), "backup started")["exportArn"] == line["exportArn"]
    again = s3.list_objects_v2(Bucket=RESOURCES.backups_bucket, Prefix="backups/database/")
    assert sorted(entry["Key"] for entry in again.get("Contents", [])) == sorted(keys)


def test_account_deletion_finishes_and_frees_the_name(
    stack: RunningStack, aws: boto3.Session
) -> None:
    dora = signed_up(stack, "dora")
    assert dora.call("POST", "/items", json={"name": "left behind"}).status_code == 201
    key = uploaded(dora, b"%PDF-1.4 left behind\n", complete=True)
    s3 = aws.client("s3", endpoint_url=stack.aws_url)
    assert s3.head_object(Bucket=RESOURCES.uploads_bucket, Key=key)["ContentLength"] > 0
    account_id = dora.account_id()
    deleted = dora.call("DELETE", "/auth/user", json={"password": PASSWORD})
    assert deleted.status_code == 202, deleted.text
    assert dora.login().status_code == 401

    again = Api(stack, dora.username, "another passphrase entirely")
    until(
        lambda: again.signup().status_code == 201,
        timeout=PIPELINE_SECONDS,
        what="the name free again after the purge",
    )
    table = aws.resource("dynamodb", endpoint_url=stack.aws_url).Table(RESOURCES.table_name)
    rows: list[Json] = []
    scan: Json = {}
    while True:
        page = table.scan(**scan)
        rows += [row for row in page["Items"] if row.get("userId") == account_id]
        if "LastEvaluatedKey" not in page:
            break
        scan = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    assert rows == []
    with pytest.raises(s3.exceptions.ClientError, match="404"):
        s3.head_object(Bucket=RESOURCES.uploads_bucket, Key=key)
    assert again.login().status_code == 200
    assert again.call("GET", "/items").json()["items"] == []


def test_an_administrators_deletion_finishes_too(stack: RunningStack) -> None:
    admin, gail = signed_up(stack, "admin"), signed_up(stack, "gail")
    stack.promote(admin.username)
    assert gail.call("POST", "/items", json={"name": "hers"}).status_code == 201
    deleted = admin.call("DELETE", f"/users/{gail.username}")
    assert deleted.status_code == 202, deleted.text
    assert gail.login().status_code == 401
    again = Api(stack, gail.username, "another passphrase entirely")
    until(
        lambda: again.signup().status_code == 201,
        timeout=PIPELINE_SECONDS,
        what="the name free again after the purge",
    )
    assert again.login().status_code == 200
    assert again.call("GET", "/items").json()["items"] == []


def mails(stack: RunningStack, address: str) -> list[Json]:
    found = requests.get(f"{stack.mail_url}/api/messages", timeout=10).json()
    return [mail for mail in found if address in mail["to"]]


def test_a_password_change_notice_arrives_through_the_queue(stack: RunningStack) -> None:
    name = unique("erin")
    address = f"{name}@example.org"
    erin = Api(stack, name)
    assert erin.signup(email=address).status_code == 201
    [verification] = mails(stack, address)
    token = re.search(r"/verify-email\?token=([A-Za-z0-9_.%-]+)", verification["text"])
    assert token is not None, verification["text"]
    verified = requests.post(
        f"{stack.api_url}/auth/email/verify", json={"token": token.group(1)}, timeout=10
    )
    assert verified.status_code == 200, verified.text
    assert erin.login().status_code == 200
    changed = erin.call(
        "POST",
        "/auth/password",
        json={
            "currentPassword": PASSWORD,
            "newPassword": "a brand new passphrase",
            "refreshTokenDelivery": "body",
        },
    )
    assert changed.status_code == 200, changed.text
    notice = until(
        lambda: [m for m in mails(stack, address) if m["subject"] == "Your password was changed"],
        timeout=PIPELINE_SECONDS,
        what="the password-changed notice",
    )
    assert len(notice) == 1
    assert name in notice[0]["text"]


def test_the_sweep_deletes_an_abandoned_uploads_object_and_record(
    stack: RunningStack, aws: boto3.Session, clock_offset: Path
) -> None:
    frank = signed_up(stack, "frank")
    content = b"%PDF-1.4 never completed\n"
    key = uploaded(frank, content, complete=False)
    upload_id = frank.call("GET", "/uploads").json()["uploads"][0]["id"]
    s3 = aws.client("s3", endpoint_url=stack.aws_url)
    assert s3.get_object(Bucket=RESOURCES.uploads_bucket, Key=key)["Body"].read() == content

    # Past the deadline and the sweep's margin; the offset only grows.
    advance_clock(clock_offset, PENDING_SECONDS + SWEEP_AFTER_SECONDS + 60)
    ran = job(stack, "sweep", CLOCK_OFFSET_FILE=str(clock_offset))
    assert summary(ran, "upload sweep done")["deleted"] >= 1

    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=RESOURCES.uploads_bucket, Key=key)
    assert frank.login().status_code == 200  # the old access token expired with the shift
    assert frank.call("GET", f"/uploads/{upload_id}").status_code == 404
    # A second run finds nothing more of it.
    again = job(stack, "sweep", CLOCK_OFFSET_FILE=str(clock_offset))
    assert summary(again, "upload sweep done")["found"] == 0


def test_no_handler_failed_along_the_way(stack: RunningStack) -> None:
    """Last: the runner, the workers and the gateway logged no failure during the module (the
    poison message is refused as malformed, a warning)."""
    output = "".join(stack.output)
    assert "Traceback" not in output
    assert '"level": "ERROR"' not in output
