"""The local event runner drives a Chalice app's stream and queue handlers from moto, in-process,
with the events Lambda sends, and leaves failures to the redrive as deployed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Chalice, CloudWatchEvent, DynamoDBRecord, Rate, SQSEvent

from chalicelib.eventroutes import SOURCE
from tools import job
from tools.eventrunner import EventRunner
from tools.localaws import MAX_RECEIVE_COUNT, Resources, ensure_table, provision

# Handlers of the tiny app below record what they were given; each test starts them afresh.
SEEN: dict[str, list[Any]] = {"stream": [], "notify": [], "mail": [], "hourly": []}
# Stream records whose new image has this name fail; so do queue messages with this body.
POISON = "poison"

tiny = Chalice(app_name="tiny")


@tiny.on_dynamodb_record(stream_arn="arn:aws:dynamodb:eu-west-2:1:table/t/stream/x", batch_size=10)
def on_change(event: Any) -> None:
    records = [record.to_dict() for record in event]
    SEEN["stream"].append(records)
    for record in event:
        if (record.new_image or {}).get("name", {}).get("S") == POISON:
            raise ValueError("a record this handler cannot take")


@tiny.on_sqs_message(queue="gatehouse-dev-notify", batch_size=10)
def notify(event: SQSEvent) -> dict[str, Any]:
    records = [record.to_dict() for record in event]
    SEEN["notify"].append(records)
    return {
        "batchItemFailures": [
            {"itemIdentifier": record["messageId"]}
            for record in records
            if record["body"] == POISON
        ]
    }


@tiny.on_sqs_message(queue="gatehouse-dev-mail")
def mail(event: SQSEvent) -> None:
    SEEN["mail"].append([record.to_dict() for record in event])
    raise RuntimeError("the mail service is down")


@tiny.schedule(Rate(1, unit=Rate.HOURS))
def hourly(event: CloudWatchEvent) -> None:
    SEEN["hourly"].append(event.to_dict())


@pytest.fixture
def env(aws: boto3.Session, resources: Resources) -> boto3.Session:
    for seen in SEEN.values():
        seen.clear()
    # One second of visibility: a failed message is back (and redriven) quickly.
    provision(aws, resources, visibility_timeout=1)
    return aws


def runner(session: boto3.Session, resources: Resources, **options: Any) -> EventRunner:
    return EventRunner(
        tiny,
        session,
        table_name=resources.table_name,
        stream_dlq=resources.stream_dlq,
        **options,
    )


def put(session: boto3.Session, resources: Resources, name: str, **extra: Any) -> None:
    item = {"pk": {"S": "USER#alice"}, "sk": {"S": f"ITEM#{name}"}, "name": {"S": name}, **extra}
    session.client("dynamodb").put_item(TableName=resources.table_name, Item=item)


def name_of(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["NewImage"]["name"]["S"])


def queue_messages(session: boto3.Session, queue: str) -> list[str]:
    sqs = session.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [message["Body"] for message in found.get("Messages", [])]


def test_stream_records_reach_the_handler_as_lambda_sends_them(
    env: boto3.Session, resources: Resources
) -> None:
    table = env.client("dynamodb").describe_table(TableName=resources.table_name)["Table"]
    before = int(datetime.now(UTC).timestamp())
    put(env, resources, "first", blob={"B": b"\x00\x01"}, tags={"L": [{"B": b"\xff"}]})
    put(env, resources, "first", changed={"S": "yes"})

    runner(env, resources).drain()

    [[created, modified]] = SEEN["stream"]
    assert created["eventName"] == "INSERT"
    assert modified["eventName"] == "MODIFY"
    assert created["eventSource"] == "aws:dynamodb"
    assert created["eventSourceARN"] == table["LatestStreamArn"]
    assert created["awsRegion"] == "eu-west-2"
    change = created["dynamodb"]
    assert change["Keys"] == {"pk": {"S": "USER#alice"}, "sk": {"S": "ITEM#first"}}
    # Binary values are base64 text in Lambda's JSON event, at any depth.
    assert change["NewImage"]["blob"] == {"B": "AAE="}
    assert change["NewImage"]["tags"] == {"L": [{"B": "/w=="}]}
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(change["ApproximateCreationDateTime"], int)
    assert change["ApproximateCreationDateTime"] >= before - 1
    assert modified["dynamodb"]["OldImage"]["name"] == {"S": "first"}
    # Chalice's own record class reads it as in Lambda.
    record = DynamoDBRecord(created, None)
    assert record.table_name == resources.table_name
    assert record.sequence_number < DynamoDBRecord(modified, None).sequence_number
    json.dumps(SEEN["stream"])  # the event is plain JSON, as Lambda's is


def test_a_failing_stream_record_is_bisected_retried_then_described_on_the_dlq(
    env: boto3.Session, resources: Resources
) -> None:
    for name in ("a", POISON, "b", "c"):
        put(env, resources, name)

    events = runner(env, resources, stream_retries=2)
    events.drain()

    delivered = [
        [r["dynamodb"]["NewImage"]["name"]["S"] for r in batch] for batch in SEEN["stream"]
    ]
    # The batch fails, is split, the half with the poison is split again; the poison alone is
    # tried three times in all; every other record is delivered.
    assert delivered == [
        ["a", POISON, "b", "c"],
        ["a", POISON],
        ["a"],
        [POISON],
        [POISON],
        [POISON],
        ["b", "c"],
    ]
    [body] = queue_messages(env, resources.stream_dlq)
    failure = json.loads(body)
    assert failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert failure["requestContext"]["approximateInvokeCount"] == 3
    assert failure["requestContext"]["functionArn"].endswith(":function:tiny-dev-on_change")
    info = failure["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"] == events.stream_arn
    # The poison was skipped, not retried for ever.
    SEEN["stream"].clear()
    events.drain()
    assert SEEN["stream"] == []


def test_the_bus_routes_events_to_the_workers_queue_and_handled_messages_are_deleted(
    env: boto3.Session, resources: Resources
) -> None:
    detail = {"type": "item.created", "version": 1, "id": "e1", "data": {"id": "i1"}}
    env.client("events").put_events(
        Entries=[
            {
                "EventBusName": resources.event_bus,
                "Source": SOURCE,
                "DetailType": "item.created",
                "Detail": json.dumps(detail),
            }
        ]
    )
    events = runner(env, resources)
    events.drain()

    [[record]] = SEEN["notify"]
    assert json.loads(record["body"])["detail"] == detail
    assert json.loads(record["body"])["detail-type"] == "item.created"
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":gatehouse-dev-notify")
    assert record["awsRegion"] == "eu-west-2"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["receiptHandle"]
    assert record["md5OfBody"]
    # Not a notice: the mail worker's rule does not match it.
    assert SEEN["mail"] == []
    assert queue_messages(env, "gatehouse-dev-notify") == []


def test_partial_batch_failures_leave_only_the_failed_message_which_reaches_the_dlq(
    env: boto3.Session, resources: Resources
) -> None:
    sqs = env.client("sqs")
    url = sqs.get_queue_url(QueueName="gatehouse-dev-notify")["QueueUrl"]
    for body in ("one", POISON, "two"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    events = runner(env, resources)

    assert events.poll_once() == 3
    [first] = SEEN["notify"]
    assert sorted(record["body"] for record in first) == sorted(["one", POISON, "two"])
    # The two it handled are gone; the poison waits out its visibility timeout.
    counts = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert counts == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "1",
    }

    events.drain()

    later = [[record["body"] for record in batch] for batch in SEEN["notify"][1:]]
    assert later == [[POISON]] * (MAX_RECEIVE_COUNT - 1)
    assert [record["attributes"]["ApproximateReceiveCount"] for [record] in SEEN["notify"][1:]] == [
        "2",
        "3",
    ]
    assert queue_messages(env, resources.dlq("notify")) == [POISON]
    assert queue_messages(env, "gatehouse-dev-notify") == []


def test_a_handler_that_raises_leaves_the_whole_batch_to_the_redrive(
    env: boto3.Session, resources: Resources
) -> None:
    sqs = env.client("sqs")
    url = sqs.get_queue_url(QueueName="gatehouse-dev-mail")["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody="notice",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "password_change"}},
    )

    runner(env, resources).drain()

    assert len(SEEN["mail"]) == MAX_RECEIVE_COUNT
    assert SEEN["mail"][0][0]["messageAttributes"]["kind"] == {
        "dataType": "String",
        "stringValue": "password_change",
        "stringListValues": [],
        "binaryListValues": [],
    }
    assert queue_messages(env, resources.dlq("mail")) == ["notice"]


def test_a_checkpoint_resumes_after_what_was_handled(
    env: boto3.Session, resources: Resources, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint.json"
    put(env, resources, "before")
    runner(env, resources, checkpoint=checkpoint).drain()
    put(env, resources, "after")

    runner(env, resources, checkpoint=checkpoint).drain()

    names = [[name_of(record) for record in batch] for batch in SEEN["stream"]]
    assert names == [["before"], ["after"]]


def test_a_missing_queue_is_named(aws: boto3.Session) -> None:
    ensure_table(aws, Resources.for_stage("dev").table_name)
    with pytest.raises(RuntimeError, match="queue gatehouse-dev-notify of handler notify"):
        EventRunner(tiny, aws, table_name=Resources.for_stage("dev").table_name)


def test_a_job_runs_its_scheduled_handler_with_the_schedules_event() -> None:
    SEEN["hourly"].clear()
    job.run_job(tiny, "hourly", region="eu-west-2")
    [event] = SEEN["hourly"]
    assert (event["source"], event["detail-type"], event["detail"]) == (
        "aws.events",
        "Scheduled Event",
        {},
    )
    assert event["resources"] == ["arn:aws:events:eu-west-2:123456789012:rule/tiny-dev-hourly"]
    assert event["time"].endswith("Z")
    with pytest.raises(LookupError, match="no scheduled handler notify"):
        job.run_job(tiny, "notify", region="eu-west-2")


def test_make_job_names_the_jobs_it_knows(capsys: pytest.CaptureFixture[str]) -> None:
    assert job.main(["restore"]) == 2
    assert job.main([]) == 2
    assert capsys.readouterr().err.splitlines() == ["usage: make job NAME=backup|sweep"] * 2
