"""Test helpers for the second half of an account's deletion: the ``account.deleted`` event the
stream handler makes of a profile marked deleted, the purge worker run on it as Lambda runs it
(an SQS batch whose bodies are EventBridge events), and failures injected into AWS calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.deletion import AccountPurge
from chalicelib.eventroutes import SOURCE, VERSION
from chalicelib.identity import Owner
from chalicelib.keys import user_key
from chalicelib.stores import Stores


def deleted_event(owner: Owner, *, event_id: str = "0" * 32) -> dict[str, Any]:
    """The envelope (``chalicelib/eventroutes.py``) of the account's ``account.deleted``."""
    return {
        "type": "account.deleted",
        "version": VERSION,
        "id": event_id,
        "time": "2026-01-01T00:00:00.000Z",
        "accountId": owner.user_id,
        "username": owner.username,
        "data": {"username": owner.username},
    }


def sqs_batch(*details: Any) -> dict[str, Any]:
    """The Lambda event of one SQS batch: message ``m{n}`` carries the n-th detail in the body
    EventBridge gives an SQS target."""
    records = []
    for n, detail in enumerate(details):
        body = {
            "version": "0",
            "id": f"event-{n}",
            "detail-type": detail.get("type", "") if isinstance(detail, dict) else "",
            "source": SOURCE,
            "account": "123456789012",
            "time": "2026-01-01T00:00:00Z",
            "region": "eu-west-2",
            "resources": [],
            "detail": detail,
        }
        records.append(
            {
                "messageId": f"m{n}",
                "receiptHandle": f"handle-{n}",
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-2:123456789012:gatehouse-dev-purge",
                "awsRegion": "eu-west-2",
            }
        )
    return {"Records": records}


def run_purge_worker(client: Any, *details: Any) -> list[str]:
    """Invoke ``purge_worker`` (through chalice's test client, with the stage's environment) on
    one batch; the ids of the messages it reports failed."""
    answer = client.lambda_.invoke("purge_worker", sqs_batch(*details)).payload
    return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]


def marked(table: Any, username: str) -> Owner:
    """The account whose profile is marked deleted under ``username`` (asserted)."""
    profile = table.get_item(Key=user_key(username), ConsistentRead=True).get("Item")
    assert profile is not None, f"{username} has no profile"
    assert "deletedAt" in profile, f"{username} is not marked deleted"
    return Owner(username, str(profile["userId"]))


def finish_deletion(client: Any, table: Any, username: str) -> Owner:
    """What the stream handler and the purge queue do after a deletion: run the worker on the
    account's ``account.deleted`` event; it must succeed."""
    owner = marked(table, username)
    assert run_purge_worker(client, deleted_event(owner)) == []
    return owner


class Faults:
    """Records every AWS call of the given clients (botocore's ``before-call``) and makes the
    call numbered ``fail_at`` (from 0) fail once, as an outage would (a 503 error code)."""

    def __init__(self, clients: list[Any], *, fail_at: int | None = None) -> None:
        self._clients = clients
        self.fail_at = fail_at
        self.calls: list[str] = []
        self.failed: str | None = None

    def _call(self, model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name}.{model.name}"
        self.calls.append(name)
        if len(self.calls) - 1 == self.fail_at:
            self.failed = name
            error: Any = {"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}
            raise ClientError(error, str(model.name))

    @contextlib.contextmanager
    def installed(self) -> Iterator[Faults]:
        for client in self._clients:
            client.meta.events.register("before-call", self._call, unique_id="injected-faults")
        try:
            yield self
        finally:
            for client in self._clients:
                client.meta.events.unregister("before-call", unique_id="injected-faults")


def delete_and_purge(stores: Stores, owner: Owner) -> int:
    """Both halves of a deletion over the repositories: the mark, then the purge."""
    stores.users.mark_deleted(owner, deleted_at="2026-01-01T00:00:00.000Z")
    return AccountPurge(stores.users, stores.partitions).purge(owner)
