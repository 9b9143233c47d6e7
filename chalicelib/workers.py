"""What every SQS worker shares: reading a batch of EventBridge events and reporting the messages
that failed (a partial batch response), and the mark that gives an event one effect however
often it is delivered.

A worker's queue holds EventBridge events whose ``detail`` is the envelope of
``chalicelib/eventroutes.py``. ``handle_batch`` hands each envelope to the worker's service and
answers ``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}`` for those that raised,
so one bad message never redoes the batch: only the failed ones return to the queue, and after
its receive limit the dead-letter queue keeps them.

SQS delivers at least once. ``Idempotency`` claims ``DONE#{worker}#{eventId}`` with a conditional
put before the effect, for a lease of ``LEASE`` (longer than any worker's timeout, shorter than
its queue's visibility timeout), and marks it done after the effect; a failed effect releases
the claim. So a duplicate of a done event does nothing, a retry redoes a failed effect, and a
worker that dies mid-effect (a Lambda timeout) leaves a claim whose lease has run out by the
time SQS delivers the message again, which then redoes the effect.
``DynamoDBMarkRepository`` stores the marks; ``InMemoryMarkRepository`` is its twin
(``tests/test_workers.py`` runs one contract on both).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from chalicelib.clock import Clock, utc_now
from chalicelib.keys import done_key, is_condition_failure
from chalicelib.table import PARTITION_KEY, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

logger = logging.getLogger(__name__)
# Longer than any redelivery: a failed message is received at most 3 times, minutes apart.
MARK_TTL = timedelta(days=1)
_MARK_SECONDS = int(MARK_TTL.total_seconds())
# Workers time out after at most a minute; their queues redeliver after three minutes or more.
LEASE = timedelta(minutes=2)
_MAX_EVENT_ID = 200
_LEASE = "leaseUntil"

Envelope = dict[str, Any]


class MalformedMessage(Exception):
    """The message is not an EventBridge event carrying an envelope."""


class HasDict(Protocol):
    """A record as Chalice hands it over (``chalice.app.SQSRecord``)."""

    def to_dict(self) -> dict[str, Any]: ...


Record = Mapping[str, Any] | HasDict


def handle_batch(
    records: Iterable[Record], handle_one: Callable[[Envelope], object]
) -> dict[str, Any]:
    """Call ``handle_one`` with the envelope of each SQS record (Lambda's record dicts, or
    Chalice's ``SQSEvent`` itself); the partial batch response names the messages that failed."""
    failures: list[dict[str, str]] = []
    for record in records:
        raw = record.to_dict() if hasattr(record, "to_dict") else record
        message_id = str(raw.get("messageId", ""))
        try:
            envelope = envelope_of(raw.get("body"))
        except MalformedMessage as exc:
            # Never the body: a malformed message may hold anything.
            logger.warning(
                "malformed message",
                extra={"fields": {"messageId": message_id, "error": str(exc)}},
            )
            failures.append({"itemIdentifier": message_id})
            continue
        fields = {"messageId": message_id, "eventId": envelope["id"], "type": envelope["type"]}
        try:
            handle_one(envelope)
        except Exception:
            # Whatever failed, only this message goes back to the queue (and on to its DLQ).
            logger.exception("event not handled", extra={"fields": fields})
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}


def envelope_of(body: object) -> Envelope:
    """The envelope in an SQS message's body (an EventBridge event); ``MalformedMessage``."""
    if not isinstance(body, str):
        raise MalformedMessage("no body")
    try:
        event = json.loads(body)
    except ValueError:
        raise MalformedMessage("not JSON") from None
    detail = event.get("detail") if isinstance(event, dict) else None
    if not isinstance(detail, dict):
        raise MalformedMessage("no detail")
    event_id, kind = detail.get("id"), detail.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_EVENT_ID:
        raise MalformedMessage("no event id")
    if not isinstance(kind, str) or not kind:
        raise MalformedMessage("no event type")
    return detail


class MarkRepository(Protocol):
    def claim(self, worker: str, event_id: str, *, now: int, lease: int) -> bool:
        """Take the event for ``worker`` until ``lease`` (epoch seconds; ``now`` is the time);
        False if it is done, or taken by a lease that has not run out."""

    def finish(self, worker: str, event_id: str, *, now: int) -> None:
        """Mark the event done for ``MARK_TTL`` from ``now``."""

    def release(self, worker: str, event_id: str) -> None:
        """Remove the mark, so the event is handled again."""


class DynamoDBMarkRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def claim(self, worker: str, event_id: str, *, now: int, lease: int) -> bool:
        try:
            self._table.put_item(
                Item={**done_key(worker, event_id), _LEASE: lease, TTL_ATTRIBUTE: lease},
                # TTL removes a row late: a mark past its time no longer counts; a lease past
                # its time is a worker that died before it could finish or release.
                ConditionExpression="attribute_not_exists(#pk) OR #ttl <= :now OR #lease <= :now",
                ExpressionAttributeNames={
                    "#pk": PARTITION_KEY,
                    "#ttl": TTL_ATTRIBUTE,
                    "#lease": _LEASE,
                },
                ExpressionAttributeValues={":now": now},
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True

    def finish(self, worker: str, event_id: str, *, now: int) -> None:
        self._table.put_item(
            Item={**done_key(worker, event_id), TTL_ATTRIBUTE: now + _MARK_SECONDS}
        )

    def release(self, worker: str, event_id: str) -> None:
        self._table.delete_item(Key=done_key(worker, event_id))


class InMemoryMarkRepository:
    """The DynamoDB repository's twin."""

    def __init__(self) -> None:
        # (worker, event id) -> (until when it counts, whether it is only a lease)
        self._marks: dict[tuple[str, str], tuple[int, bool]] = {}
        self._lock = threading.Lock()

    def claim(self, worker: str, event_id: str, *, now: int, lease: int) -> bool:
        with self._lock:
            held = self._marks.get((worker, event_id))
            if held is not None and held[0] > now:
                return False
            self._marks[(worker, event_id)] = (lease, True)
            return True

    def finish(self, worker: str, event_id: str, *, now: int) -> None:
        with self._lock:
            self._marks[(worker, event_id)] = (now + _MARK_SECONDS, False)

    def release(self, worker: str, event_id: str) -> None:
        with self._lock:
            self._marks.pop((worker, event_id), None)


class Idempotency:
    """One effect per event for one worker."""

    def __init__(self, marks: MarkRepository, *, worker: str, clock: Clock = utc_now) -> None:
        self._marks = marks
        self._worker = worker
        self._clock = clock

    def once(self, event_id: str, effect: Callable[[], None]) -> bool:
        """Run ``effect`` unless this event already had it; whether it ran. A failed effect
        releases its claim and raises, so the event's next delivery tries again."""
        now = int(self._clock().timestamp())
        lease = now + int(LEASE.total_seconds())
        if not self._marks.claim(self._worker, event_id, now=now, lease=lease):
            logger.info(
                "event already handled",
                extra={"fields": {"worker": self._worker, "eventId": event_id}},
            )
            return False
        try:
            effect()
        except BaseException:
            self._marks.release(self._worker, event_id)
            raise
        self._marks.finish(self._worker, event_id, now=int(self._clock().timestamp()))
        return True
