"""The local event source mappings: the table's stream and the workers' queues drive the app's
``on_dynamodb_record`` and ``on_sqs_message`` handlers, in-process, with the events Lambda sends.

``chalice local`` runs no event sources, and moto invokes Lambda functions only with Docker, so
its event source mappings never fire. This polls the emulator instead and calls the very same
handlers (``app.handler_map``), found from the Chalice app's ``event_sources``:

- **The stream.** Every ``on_dynamodb_record`` handler reads the local table's stream (the project
  has one table; the ARN the app names exists only once deployed), from its start, or from the
  checkpoint a previous run left for the same stream. moto's records lack ``eventSourceARN`` and
  say ``awsRegion: us-east-1``, and botocore hands over binary attributes decoded and the
  creation time as a datetime; each is put back the way Lambda's event has it. A batch whose
  handler raises is split in two and each half delivered again (``BisectBatchOnFunctionError``);
  a single record that still fails is retried ``stream_retries`` times, then described on the
  stream's dead-letter queue in the shape of Lambda's on-failure destination, and skipped.
- **The queues.** Each ``on_sqs_message`` handler gets its queue's messages in Lambda's SQS event
  shape. The messages it handled are deleted; those it names in ``batchItemFailures`` (partial
  batch response), or all when it raises or answers something Lambda would not accept, are left
  to come back after the visibility timeout, so the queue's redrive policy moves a poison message
  to the dead-letter queue after 3 receives, as deployed.

Long polling is not used: the emulator (``tools/emulator.py``) applies one request at a time, and
a ``WaitTimeSeconds`` receive would hold every other request for its whole wait.

In tests: ``EventRunner(app, session, ...).drain()`` runs until the stream and the queues are
quiet. In ``make dev``: ``python -m tools.eventrunner`` (``tools/devstack.py`` starts it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from chalice.app import Chalice, DynamoDBEventConfig, SQSEventConfig
from chalice.local import LambdaContext

from chalicelib.keys import error_code

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

ROOT = Path(__file__).resolve().parent.parent
LOG = logging.getLogger("gatehouse.eventrunner")
# A failing stream record is tried 1 + STREAM_RETRIES times before it goes to the stream's DLQ.
STREAM_RETRIES = 2
POLL_INTERVAL = 0.2
SQS_MAX_MESSAGES = 10
# botocore's account-based endpoints for DynamoDB Streams (https://{account}.streams-ddb...) are
# not routed by moto's in-process mock; the regional endpoint works with AWS and with both mocks.
_STREAMS_CONFIG = Config(account_id_endpoint_mode="disabled")

_NO_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}

Handler = Callable[[dict[str, Any], Any], Any]


def lambda_context(app: Chalice, name: str, *, stage: str) -> Any:
    """What Lambda passes as ``context`` to the function Chalice deploys for handler ``name``."""
    return LambdaContext(function_name=f"{app.app_name}-{stage}-{name}", memory_size=1024)


@dataclass
class _Shard:
    shard_id: str
    # The last sequence number handed to the handler (and settled), None before the first.
    position: str | None = None
    iterator: str | None = None


@dataclass
class _StreamConsumer:
    name: str
    handler: Handler
    batch_size: int
    shards: list[_Shard] = field(default_factory=list)


@dataclass
class _QueueConsumer:
    name: str
    handler: Handler
    batch_size: int
    url: str
    arn: str


class EventRunner:
    """Feeds the app's stream and queue handlers from the emulator (or moto's mock)."""

    def __init__(
        self,
        app: Chalice,
        session: boto3.Session,
        *,
        table_name: str,
        stream_dlq: str | None = None,
        stage: str = "dev",
        stream_retries: int = STREAM_RETRIES,
        checkpoint: Path | None = None,
    ) -> None:
        self._app = app
        self._stage = stage
        self._retries = stream_retries
        self._checkpoint = checkpoint
        self._streams: DynamoDBStreamsClient = session.client(
            "dynamodbstreams", config=_STREAMS_CONFIG
        )
        self._sqs: SQSClient = session.client("sqs")
        self._region = session.region_name or "us-east-1"
        table = session.client("dynamodb").describe_table(TableName=table_name)["Table"]
        self._stream_arn = table.get("LatestStreamArn", "")
        self._stream_dlq = (
            self._sqs.get_queue_url(QueueName=stream_dlq)["QueueUrl"] if stream_dlq else None
        )
        self._stream_consumers: list[_StreamConsumer] = []
        self._queue_consumers: list[_QueueConsumer] = []
        saved = self._load_checkpoint()
        for config in app.event_sources:
            if isinstance(config, DynamoDBEventConfig):
                if not self._stream_arn:
                    raise RuntimeError(f"table {table_name} has no stream for {config.name}")
                consumer = _StreamConsumer(
                    config.name, app.handler_map[config.name], config.batch_size
                )
                for shard in self._describe_shards():
                    position = saved.get(config.name, {}).get(shard)
                    consumer.shards.append(_Shard(shard, position))
                self._stream_consumers.append(consumer)
            elif isinstance(config, SQSEventConfig):
                self._queue_consumers.append(self._queue_consumer(config))

    @property
    def stream_arn(self) -> str:
        return self._stream_arn

    @property
    def queue_urls(self) -> dict[str, str]:
        """Handler name -> the URL of the queue it consumes."""
        return {consumer.name: consumer.url for consumer in self._queue_consumers}

    def _queue_consumer(self, config: SQSEventConfig) -> _QueueConsumer:
        name = config.queue or str(config.queue_arn).rsplit(":", 1)[-1]
        try:
            url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if error_code(exc) not in {
                "AWS.SimpleQueueService.NonExistentQueue",
                "QueueDoesNotExist",
            }:
                raise
            raise RuntimeError(f"queue {name} of handler {config.name} does not exist") from exc
        arn = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return _QueueConsumer(
            config.name,
            self._app.handler_map[config.name],
            min(config.batch_size, SQS_MAX_MESSAGES),
            url,
            arn["Attributes"]["QueueArn"],
        )

    def _describe_shards(self) -> list[str]:
        described = self._streams.describe_stream(StreamArn=self._stream_arn)
        return [shard["ShardId"] for shard in described["StreamDescription"].get("Shards", [])]

    # Polling

    def poll_once(self) -> int:
        """One round over the stream, then the queues; how many records and messages it handed
        to handlers (failed ones included)."""
        handled = 0
        for stream in self._stream_consumers:
            for shard in stream.shards:
                handled += self._poll_shard(stream, shard)
        for queue in self._queue_consumers:
            handled += self._poll_queue(queue)
        return handled

    def drain(self, *, timeout: float = 30.0) -> None:
        """Poll until the stream has nothing new and every consumed queue is empty, messages
        waiting out a visibility timeout included; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            handled = self.poll_once()
            if not handled and self._queues_empty():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stream and the queues were still busy after {timeout} s")
            if not handled:
                time.sleep(POLL_INTERVAL)

    def run(self, stop: threading.Event, *, interval: float = POLL_INTERVAL) -> None:
        """Poll until ``stop`` is set; a busy round is followed at once by the next."""
        while not stop.is_set():
            try:
                handled = self.poll_once()
            except (BotoCoreError, ClientError) as exc:
                # The emulator unreachable or refusing: report and keep polling.
                LOG.warning("event runner: %s", exc)
                handled = 0
            if not handled:
                stop.wait(interval)

    def _queues_empty(self) -> bool:
        for queue in self._queue_consumers:
            found = self._sqs.get_queue_attributes(
                QueueUrl=queue.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if any(int(count) for count in found.values()):
                return False
        return True

    # The stream

    def _poll_shard(self, stream: _StreamConsumer, shard: _Shard) -> int:
        if shard.iterator is None:
            shard.iterator = self._shard_iterator(shard)
        try:
            answer = self._streams.get_records(
                ShardIterator=shard.iterator, Limit=stream.batch_size
            )
        except ClientError as exc:
            if error_code(exc) != "ExpiredIteratorException":
                raise
            shard.iterator = None
            return 0
        shard.iterator = answer.get("NextShardIterator")
        records = [self._lambda_record(dict(record)) for record in answer.get("Records", [])]
        if not records:
            return 0
        self._deliver_records(stream, shard, records)
        shard.position = records[-1]["dynamodb"]["SequenceNumber"]
        self._save_checkpoint()
        return len(records)

    def _shard_iterator(self, shard: _Shard) -> str:
        if shard.position is None:
            found = self._streams.get_shard_iterator(
                StreamArn=self._stream_arn, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
            )
        else:
            found = self._streams.get_shard_iterator(
                StreamArn=self._stream_arn,
                ShardId=shard.shard_id,
                ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                SequenceNumber=shard.position,
            )
        return found["ShardIterator"]

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        change = dict(record["dynamodb"])
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            change["ApproximateCreationDateTime"] = int(created.timestamp())
        for image in ("Keys", "NewImage", "OldImage"):
            if image in change:
                change[image] = {name: _wire(value) for name, value in change[image].items()}
        shaped = {
            "eventID": record["eventID"],
            "eventName": record["eventName"],
            "eventVersion": record.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": self._stream_arn.split(":")[3],
            "dynamodb": change,
            "eventSourceARN": self._stream_arn,
        }
        if "userIdentity" in record:
            shaped["userIdentity"] = dict(record["userIdentity"])
        return shaped

    def _deliver_records(
        self, stream: _StreamConsumer, shard: _Shard, records: list[dict[str, Any]]
    ) -> None:
        if self._invoke(stream, records):
            return
        if len(records) > 1:
            middle = len(records) // 2
            self._deliver_records(stream, shard, records[:middle])
            self._deliver_records(stream, shard, records[middle:])
            return
        for _ in range(self._retries):
            if self._invoke(stream, records):
                return
        self._give_up(stream, shard, records, invocations=1 + self._retries)

    def _invoke(self, stream: _StreamConsumer, records: list[dict[str, Any]]) -> bool:
        try:
            stream.handler({"Records": records}, self._context(stream.name))
        except Exception:  # noqa: BLE001 (any error fails the invocation, as in Lambda)
            LOG.error("%s failed on %d stream record(s):\n%s", stream.name, len(records), _trace())
            return False
        return True

    def _give_up(
        self,
        stream: _StreamConsumer,
        shard: _Shard,
        records: Sequence[dict[str, Any]],
        *,
        invocations: int,
    ) -> None:
        """Describe the batch on the stream's DLQ as Lambda's on-failure destination does."""
        first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
        account = self._stream_arn.split(":")[4]
        description = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{self._region}:{account}:function:"
                f"{self._app.app_name}-{self._stage}-{stream.name}",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": invocations,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": _iso(datetime.now(UTC)),
            "DDBStreamBatchInfo": {
                "shardId": shard.shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso_epoch(first["ApproximateCreationDateTime"]),
                "approximateArrivalOfLastRecord": _iso_epoch(last["ApproximateCreationDateTime"]),
                "batchSize": len(records),
                "streamArn": self._stream_arn,
            },
        }
        LOG.error(
            "%s: %d stream record(s) failed %d times; described on the stream's dead-letter queue",
            stream.name,
            len(records),
            invocations,
        )
        if self._stream_dlq is not None:
            self._sqs.send_message(QueueUrl=self._stream_dlq, MessageBody=json.dumps(description))

    # The queues

    def _poll_queue(self, queue: _QueueConsumer) -> int:
        messages = self._sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=queue.batch_size,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        records = [self._sqs_record(queue, dict(message)) for message in messages]
        failed = self._invoke_sqs(queue, records)
        done: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
            for index, record in enumerate(records)
            if record["messageId"] not in failed
        ]
        for start in range(0, len(done), SQS_MAX_MESSAGES):
            self._sqs.delete_message_batch(
                QueueUrl=queue.url,
                Entries=done[start : start + SQS_MAX_MESSAGES],
            )
        return len(records)

    def _invoke_sqs(self, queue: _QueueConsumer, records: list[dict[str, Any]]) -> set[str]:
        """The ids of the messages that stay on the queue, as Lambda's partial batch response."""
        every = {record["messageId"] for record in records}
        try:
            answer = queue.handler({"Records": records}, self._context(queue.name))
        except Exception:  # noqa: BLE001 (any error fails the invocation, as in Lambda)
            LOG.error("%s failed on %d message(s):\n%s", queue.name, len(records), _trace())
            return every
        failed = _batch_item_failures(answer, every)
        if failed is None:
            LOG.error("%s answered an invalid batch response: %.200r", queue.name, answer)
            return every
        return failed

    def _sqs_record(self, queue: _QueueConsumer, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue.arn,
            "awsRegion": queue.arn.split(":")[3],
        }

    def _context(self, name: str) -> Any:
        return lambda_context(self._app, name, stage=self._stage)

    # The checkpoint

    def _load_checkpoint(self) -> dict[str, dict[str, str]]:
        if self._checkpoint is None or not self._checkpoint.exists():
            return {}
        with contextlib.suppress(ValueError, OSError):
            saved = json.loads(self._checkpoint.read_text())
            if saved.get("streamArn") == self._stream_arn:
                return dict(saved["positions"])
        return {}

    def _save_checkpoint(self) -> None:
        if self._checkpoint is None:
            return
        positions = {
            stream.name: {
                shard.shard_id: shard.position
                for shard in stream.shards
                if shard.position is not None
            }
            for stream in self._stream_consumers
        }
        temporary = self._checkpoint.with_suffix(".tmp")
        temporary.write_text(json.dumps({"streamArn": self._stream_arn, "positions": positions}))
        temporary.replace(self._checkpoint)


def _batch_item_failures(answer: Any, every: set[str]) -> set[str] | None:
    """The failed ids of a partial batch response; None when Lambda would call it invalid."""
    if answer is None or answer == {}:
        return set()
    if not isinstance(answer, dict):
        return None
    failures = answer.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in every:
            return None
        failed.add(identifier)
    return failed


def _wire(value: Any) -> Any:
    """An AttributeValue as JSON carries it: botocore decoded binary values to bytes."""
    if not isinstance(value, dict):
        return value
    shaped: dict[str, Any] = {}
    for kind, inner in value.items():
        if kind == "B":
            shaped[kind] = base64.b64encode(inner).decode()
        elif kind == "BS":
            shaped[kind] = [base64.b64encode(item).decode() for item in inner]
        elif kind == "M":
            shaped[kind] = {name: _wire(item) for name, item in inner.items()}
        elif kind == "L":
            shaped[kind] = [_wire(item) for item in inner]
        else:
            shaped[kind] = inner
    return shaped


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "dataType": value["DataType"],
        "stringListValues": [],
        "binaryListValues": [],
    }
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return shaped


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _trace() -> str:
    return "".join(traceback.format_exc()).rstrip()


def load_app(stage: str) -> Chalice:
    """Import ``app.py`` with the stage's environment from ``.chalice/config.json`` applied over
    this process's, as ``chalice local`` does, and the running site's origins allowed as
    ``tools/localapi.py`` allows them."""
    from chalice.cli.factory import CLIFactory

    from tools.localapi import OVERRIDE

    factory = CLIFactory(str(ROOT), environ=os.environ)
    environment = dict(factory.create_config_obj(chalice_stage_name=stage).environment_variables)
    if os.environ.get(OVERRIDE):
        environment["ALLOWED_ORIGINS"] = os.environ[OVERRIDE]
    app: Chalice = factory.load_chalice_app(environment)
    return app


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT, for a loop to end on."""
    stop = threading.Event()

    def _set(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _set) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    import boto3

    from tools.localaws import Resources

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", default="dev")
    parser.add_argument(
        "--checkpoint", type=Path, help="a file keeping the stream position across restarts"
    )
    parser.add_argument("--aws", help="the AWS endpoint, the emulator (default: AWS_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    if args.aws:
        os.environ["AWS_ENDPOINT_URL"] = args.aws
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    # The app's log lines, as `chalice local` shows them; not botocore's chatter.
    logging.getLogger("botocore").setLevel(logging.WARNING)
    app = load_app(args.stage)
    resources = Resources.for_stage(args.stage)
    runner = EventRunner(
        app,
        boto3.Session(),
        table_name=resources.table_name,
        stream_dlq=resources.stream_dlq,
        stage=args.stage,
        checkpoint=args.checkpoint,
    )
    with stopped_by_signals() as stop:
        print("event runner: polling the table's stream and the workers' queues", flush=True)
        runner.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
