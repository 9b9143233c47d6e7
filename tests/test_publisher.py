"""The EventBridge publisher: calls within PutEvents' limits, refused entries sent again, giving
up loudly; and the stream handler that uses it."""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

import app as app_module
from chalicelib.changes import DomainEvent
from chalicelib.eventroutes import SOURCE
from chalicelib.publisher import (
    MAX_ENTRIES,
    MAX_REQUEST_BYTES,
    EventBridgePublisher,
    EventTooLarge,
    InMemoryPublisher,
    PublishFailed,
    batches,
    entry_size,
)
from chalicelib.settings import Settings, SettingsError

BUS = "gatehouse-test-events"


def event(number: int, *, padding: int = 0) -> DomainEvent:
    return DomainEvent(
        type="item.created",
        id=f"e-{number}",
        time="2026-01-01T00:00:00.000Z",
        account_id="a" * 32,
        username="alice",
        data={"id": str(number), "name": "x" * padding},
    )


class Sleeps(list[float]):
    """Records the back-off instead of sleeping it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def bus_with_queue(session: boto3.Session) -> str:
    """A bus whose one rule sends all of our events to a queue; the queue's URL."""
    events, sqs = session.client("events"), session.client("sqs")
    events.create_event_bus(Name=BUS)
    url = sqs.create_queue(QueueName="all")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventBusName=BUS, EventPattern=json.dumps({"source": [SOURCE]}))
    events.put_targets(Rule="all", EventBusName=BUS, Targets=[{"Id": "all", "Arn": arn}])
    return url


def drained(session: boto3.Session, url: str) -> list[dict[str, Any]]:
    sqs = session.client("sqs")
    bodies: list[dict[str, Any]] = []
    for _ in range(100):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_every_event_reaches_the_bus_in_calls_of_at_most_ten(aws: boto3.Session) -> None:
    url = bus_with_queue(aws)
    client = aws.client("events")
    calls: list[list[Any]] = []
    client.meta.events.register(
        "provide-client-params.events.PutEvents",
        lambda params, **_: calls.append(list(params["Entries"])),
    )
    EventBridgePublisher(client, bus_name=BUS).publish([event(n) for n in range(25)])

    assert [len(entries) for entries in calls] == [10, 10, 5]
    bodies = drained(aws, url)
    assert sorted(body["detail"]["id"] for body in bodies) == sorted(f"e-{n}" for n in range(25))
    first = next(body for body in bodies if body["detail"]["id"] == "e-0")
    assert (first["source"], first["detail-type"]) == (SOURCE, "item.created")
    assert first["detail"] == event(0).envelope()


def test_calls_stay_under_256_kb() -> None:
    publisher = EventBridgePublisher(boto3.client("events", region_name="eu-west-2"), bus_name=BUS)
    entries = [publisher.entry(event(n, padding=100_000)) for n in range(5)]
    calls = list(batches(entries))
    assert [len(call) for call in calls] == [2, 2, 1]
    assert all(sum(entry_size(entry) for entry in call) <= MAX_REQUEST_BYTES for call in calls)
    small = [publisher.entry(event(n)) for n in range(MAX_ENTRIES + 1)]
    assert [len(call) for call in batches(small)] == [MAX_ENTRIES, 1]
    assert list(batches([])) == []


def test_an_event_over_the_limit_alone_is_refused_before_anything_is_sent() -> None:
    client = boto3.client("events", region_name="eu-west-2")
    with Stubber(client) as stub:
        publisher = EventBridgePublisher(client, bus_name=BUS)
        with pytest.raises(EventTooLarge):
            publisher.publish([event(1), event(2, padding=MAX_REQUEST_BYTES)])
        stub.assert_no_pending_responses()


def test_only_the_refused_entries_are_sent_again_after_a_pause() -> None:
    client = boto3.client("events", region_name="eu-west-2")
    sleeps = Sleeps()
    publisher = EventBridgePublisher(client, bus_name=BUS, sleep=sleeps)
    entries = [publisher.entry(event(n)) for n in range(4)]
    with Stubber(client) as stub:
        stub.add_response(
            "put_events",
            {
                "FailedEntryCount": 2,
                "Entries": [
                    {"EventId": "1"},
                    {"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"},
                    {"EventId": "3"},
                    {"ErrorCode": "InternalFailure", "ErrorMessage": "oops"},
                ],
            },
            {"Entries": entries},
        )
        stub.add_response(
            "put_events",
            {"FailedEntryCount": 0, "Entries": [{"EventId": "2"}, {"EventId": "4"}]},
            {"Entries": [entries[1], entries[3]]},
        )
        publisher.publish([event(n) for n in range(4)])
        stub.assert_no_pending_responses()
    assert sleeps == [0.1]


def test_entries_still_refused_after_the_last_attempt_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = boto3.client("events", region_name="eu-west-2")
    sleeps = Sleeps()
    publisher = EventBridgePublisher(client, bus_name=BUS, attempts=3, sleep=sleeps)
    refused = {"ErrorCode": "InternalFailure", "ErrorMessage": "oops"}
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [refused]})
        with caplog.at_level(logging.WARNING), pytest.raises(PublishFailed):
            publisher.publish([event(1)])
        stub.assert_no_pending_responses()
    # Bounded: three attempts, with a doubling pause between them.
    assert sleeps == [0.1, 0.2]
    warnings = [record for record in caplog.records if record.message == "events refused"]
    assert len(warnings) == 3
    assert all(getattr(record, "fields")["codes"] == ["InternalFailure"] for record in warnings)  # noqa: B009


def test_a_failed_count_without_the_entries_sends_them_all_again() -> None:
    client = boto3.client("events", region_name="eu-west-2")
    publisher = EventBridgePublisher(client, bus_name=BUS, sleep=Sleeps())
    entries = [publisher.entry(event(n)) for n in range(2)]
    with Stubber(client) as stub:
        stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": []})
        stub.add_response(
            "put_events", {"FailedEntryCount": 0, "Entries": []}, {"Entries": entries}
        )
        publisher.publish([event(n) for n in range(2)])
        stub.assert_no_pending_responses()


def test_the_in_memory_twin_keeps_what_it_is_given() -> None:
    twin = InMemoryPublisher()
    twin.publish([event(1)])
    twin.publish([event(2), event(3)])
    assert [published.id for published in twin.published] == ["e-1", "e-2", "e-3"]


# The handler and its dependency


def test_without_a_bus_the_publisher_is_a_configuration_error() -> None:
    dependencies = app_module.Dependencies()
    dependencies.settings = Settings(table_name="t", jwt_secret_id="s")
    with pytest.raises(SettingsError, match="EVENT_BUS_NAME"):
        _ = dependencies.publisher


def test_the_handler_publishes_a_batchs_events_and_logs_counts_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dependencies = app_module.Dependencies()
    twin = InMemoryPublisher()
    dependencies.publisher = twin
    monkeypatch.setattr(app_module, "dependencies", dependencies)
    item: dict[str, Any] = {
        "pk": {"S": "USER#alice"},
        "sk": {"S": "ITEM#0190a1b2c3d40000000000000000"},
        "userId": {"S": "a" * 32},
        "owner": {"S": "alice"},
        "itemId": {"S": "0190a1b2c3d40000000000000000"},
        "name": {"S": "secret plans"},
        "data": {"M": {}},
        "status": {"S": "active"},
        "createdAt": {"S": "2026-01-01T00:00:00.000Z"},
        "updatedAt": {"S": "2026-01-01T00:00:00.000Z"},
        "version": {"N": "1"},
    }
    claim: dict[str, Any] = {
        "pk": {"S": "NAME#alice"},
        "sk": {"S": "NAME"},
        "userId": {"S": "a" * 32},
    }
    records = [
        {
            "eventID": event_id,
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-2",
            "dynamodb": {
                "ApproximateCreationDateTime": 1767225600,
                "Keys": {"pk": row["pk"], "sk": row["sk"]},
                "NewImage": row,
                "SequenceNumber": event_id,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        for event_id, row in [("1", item), ("2", claim)]
    ]
    with caplog.at_level(logging.INFO, logger="gatehouse"):
        app_module.on_table_change({"Records": records}, None)

    assert [(published.type, published.id) for published in twin.published] == [
        ("item.created", "1")
    ]
    (summary,) = [record for record in caplog.records if record.message.startswith("table")]
    assert getattr(summary, "fields") == {"records": 2, "events": 1}  # noqa: B009
    assert "secret plans" not in caplog.text
