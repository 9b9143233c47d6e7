"""The workers' shared parts: a batch's partial failures, malformed messages, and the mark that
gives an event one effect (its contract run against DynamoDB under moto and the in-memory twin).

The helpers here build what a worker receives: an SQS record whose body is EventBridge's event
around an envelope (``chalicelib/eventroutes.py``)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from chalice.app import SQSEvent
from chalice.test import Client

from chalicelib.eventroutes import SOURCE, VERSION
from chalicelib.stores import Stores
from chalicelib.workers import LEASE, MARK_TTL, Idempotency, InMemoryMarkRepository, handle_batch
from tests.conftest import FakeClock, owner_of

ALICE_ID = owner_of("alice").user_id


def envelope(
    kind: str = "item.created",
    *,
    event_id: str = "event-1",
    username: str = "alice",
    account_id: str = ALICE_ID,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": kind,
        "version": VERSION,
        "id": event_id,
        "time": "2026-01-01T00:00:00.000Z",
        "accountId": account_id,
        "username": username,
        "data": {} if data is None else data,
    }


def record(detail: dict[str, Any], *, message_id: str | None = None) -> dict[str, Any]:
    """An SQS record as Lambda hands it over, holding EventBridge's event."""
    event = {
        "version": "0",
        "id": f"eb-{detail['id']}",
        "detail-type": detail["type"],
        "source": SOURCE,
        "account": "000000000000",
        "time": detail["time"],
        "region": "eu-west-2",
        "resources": [],
        "detail": detail,
    }
    return raw_record(json.dumps(event), message_id=message_id or f"m-{detail['id']}")


def raw_record(body: str, *, message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"receipt-{message_id}",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-2:000000000000:gatehouse-dev-notify",
        "awsRegion": "eu-west-2",
    }


def sqs_event(*details: dict[str, Any]) -> dict[str, Any]:
    """The event an SQS-triggered Lambda function receives for these envelopes."""
    return {"Records": [record(detail) for detail in details]}


def invoke_worker(client: Client, name: str, *details: dict[str, Any]) -> dict[str, Any]:
    """Run an SQS worker of the app the way Lambda does; its partial batch response."""
    answer: dict[str, Any] = client.lambda_.invoke(name, sqs_event(*details)).payload
    return answer


def failed(response: dict[str, Any]) -> list[str]:
    return [entry["itemIdentifier"] for entry in response["batchItemFailures"]]


class TestBatches:
    def test_every_message_is_handled_and_only_the_failures_are_reported(self) -> None:
        seen: list[str] = []

        def handle(detail: dict[str, Any]) -> None:
            seen.append(detail["id"])
            if detail["id"] == "bad":
                raise RuntimeError("boom")

        records = [record(envelope(event_id=name)) for name in ("one", "bad", "three")]
        response = handle_batch(records, handle)
        assert seen == ["one", "bad", "three"]
        assert response == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}

    def test_an_empty_or_successful_batch_reports_no_failure(self) -> None:
        assert handle_batch([], lambda detail: None) == {"batchItemFailures": []}
        ok = [record(envelope(event_id="x"))]
        assert handle_batch(ok, lambda detail: None) == {"batchItemFailures": []}

    def test_malformed_messages_fail_alone_and_are_logged_without_their_content(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        secret = "do-not-log-me"
        bodies = {
            "not-json": f"{{{secret}",
            "no-detail": json.dumps({"source": SOURCE, "note": secret}),
            "no-id": json.dumps({"detail": {"type": "item.created", "note": secret}}),
            "no-type": json.dumps({"detail": {"id": "e", "note": secret}}),
            "long-id": json.dumps({"detail": {"id": "e" * 201, "type": "item.created"}}),
            "a-list": json.dumps([secret]),
        }
        handled: list[str] = []
        records = [raw_record(body, message_id=name) for name, body in bodies.items()]
        records.append(record(envelope(event_id="fine"), message_id="fine"))
        with caplog.at_level(logging.INFO):
            response = handle_batch(records, lambda detail: handled.append(detail["id"]))
        assert failed(response) == list(bodies)
        assert handled == ["fine"]
        assert secret not in caplog.text
        assert caplog.text.count("malformed message") == len(bodies)

    def test_chalices_sqs_event_is_a_batch_too(self) -> None:
        event = SQSEvent(sqs_event(envelope(event_id="one"), envelope(event_id="two")), None)
        handled: list[str] = []
        assert handle_batch(event, lambda detail: handled.append(detail["id"])) == {
            "batchItemFailures": []
        }
        assert handled == ["one", "two"]


class TestMarks:
    def test_an_event_is_claimed_once_per_worker(self, stores: Stores) -> None:
        assert stores.marks.claim("mail", "e1", now=1_000, lease=1_120)
        assert not stores.marks.claim("mail", "e1", now=1_001, lease=1_121)
        assert stores.marks.claim("notify", "e1", now=1_001, lease=1_121)
        assert stores.marks.claim("mail", "e2", now=1_001, lease=1_121)

    def test_a_released_claim_can_be_taken_again(self, stores: Stores) -> None:
        assert stores.marks.claim("mail", "e1", now=1_000, lease=1_120)
        stores.marks.release("mail", "e1")
        assert stores.marks.claim("mail", "e1", now=1_000, lease=1_120)
        stores.marks.release("mail", "never-claimed")

    def test_a_lease_nobody_finished_runs_out(self, stores: Stores) -> None:
        assert stores.marks.claim("mail", "e1", now=1_000, lease=1_120)
        assert not stores.marks.claim("mail", "e1", now=1_119, lease=1_239)
        assert stores.marks.claim("mail", "e1", now=1_120, lease=1_240)

    def test_a_finished_event_stays_done_for_a_day(self, stores: Stores) -> None:
        day = int(MARK_TTL.total_seconds())
        assert stores.marks.claim("mail", "e1", now=1_000, lease=1_120)
        stores.marks.finish("mail", "e1", now=1_010)
        assert not stores.marks.claim("mail", "e1", now=1_200, lease=1_320)
        assert not stores.marks.claim("mail", "e1", now=1_010 + day - 1, lease=1_010 + day)
        # Past its time it no longer counts, even before TTL removes the row.
        assert stores.marks.claim("mail", "e1", now=1_010 + day, lease=1_130 + day)

    def test_the_stored_marks(self, table: Any) -> None:
        marks = Stores.dynamodb(table).marks
        marks.claim("mail", "e1", now=1_000, lease=1_120)
        (row,) = table.scan()["Items"]
        assert row == {"pk": "DONE#mail#e1", "sk": "DONE", "leaseUntil": 1_120, "expiresAt": 1_120}
        marks.finish("mail", "e1", now=1_010)
        (row,) = table.scan()["Items"]
        assert row == {"pk": "DONE#mail#e1", "sk": "DONE", "expiresAt": 1_010 + 86_400}


class TestIdempotency:
    def test_a_second_delivery_has_no_effect(self) -> None:
        once = Idempotency(InMemoryMarkRepository(), worker="mail", clock=FakeClock())
        effects: list[str] = []
        assert once.once("e1", lambda: effects.append("mailed"))
        assert not once.once("e1", lambda: effects.append("mailed"))
        assert effects == ["mailed"]

    def test_a_failed_effect_is_redone_on_the_next_delivery(self) -> None:
        once = Idempotency(InMemoryMarkRepository(), worker="mail", clock=FakeClock())
        attempts: list[int] = []

        def flaky() -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("mail service down")

        with pytest.raises(ConnectionError):
            once.once("e1", flaky)
        assert once.once("e1", flaky)
        assert not once.once("e1", flaky)
        assert len(attempts) == 2

    def test_a_worker_that_died_mid_effect_is_redone_once_its_lease_runs_out(self) -> None:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        marks = InMemoryMarkRepository()
        once = Idempotency(marks, worker="mail", clock=clock)
        now = int(clock().timestamp())
        # A Lambda timeout: claimed, neither finished nor released.
        marks.claim("mail", "e1", now=now, lease=now + int(LEASE.total_seconds()))
        effects: list[str] = []
        assert not once.once("e1", lambda: effects.append("mailed"))
        clock.advance(seconds=LEASE.total_seconds())
        assert once.once("e1", lambda: effects.append("mailed"))
        assert not once.once("e1", lambda: effects.append("mailed"))
        assert effects == ["mailed"]

    def test_a_batch_delivered_twice_has_one_effect_per_event(self) -> None:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        once = Idempotency(InMemoryMarkRepository(), worker="notify", clock=clock)
        effects: list[str] = []

        def handle(detail: dict[str, Any]) -> None:
            once.once(detail["id"], lambda: effects.append(detail["id"]))

        batch = [record(envelope(event_id=name)) for name in ("one", "two")]
        # The same event twice in one batch, and the whole batch again.
        batch.append(record(envelope(event_id="one"), message_id="m-one-again"))
        assert failed(handle_batch(batch, handle)) == []
        assert failed(handle_batch(batch, handle)) == []
        assert effects == ["one", "two"]
