"""The events unit: the custom EventBridge bus, a rule and an SQS queue (with its dead-letter
queue) per route of ``chalicelib/eventroutes.py``, and the dead-letter queue of the table's
stream.

The stream handler puts domain events on the bus; each rule sends the events its worker wants to
that worker's queue. Everything is named (``gatehouse-<env>-events``, ``gatehouse-<env>-notify``,
...) because app.py reads the queues' names when Chalice packages it.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from chalicelib.eventroutes import ROUTES
from gatehouse_infra import runtime
from gatehouse_infra.encryption import encrypt_queue
from gatehouse_infra.nag import acknowledge

# The longest SQS keeps a message: time to look at a dead letter before it goes.
DEAD_LETTER_RETENTION = cdk.Duration.days(14)


def queue(
    scope: Construct,
    id: str,
    *,
    queue_name: str,
    retention_period: cdk.Duration | None = None,
    visibility_timeout: cdk.Duration | None = None,
    dead_letter_queue: sqs.DeadLetterQueue | None = None,
    key: kms.IKey | None = None,
) -> sqs.Queue:
    """Encrypted with SQS's own key (EventBridge cannot send to a queue under the AWS-managed
    KMS key), or with ``key`` (kmsKey: its policy lets EventBridge send), TLS only."""
    created = sqs.Queue(
        scope,
        id,
        queue_name=queue_name,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=retention_period,
        visibility_timeout=visibility_timeout,
        dead_letter_queue=dead_letter_queue,
    )
    if key is not None:
        encrypt_queue(created, key)
    return created


class Events(Construct):
    """The bus, one rule -> queue -> worker per route, every queue with its dead-letter queue."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        environment: str,
        worker_timeouts: Mapping[str, int],
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=runtime.event_bus_name(environment))
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letters: dict[str, sqs.Queue] = {}
        # By name, literal: the alarms in the monitoring stack need no export.
        self.queue_names: dict[str, str] = {}
        self.dead_letter_names: list[str] = []
        for route in ROUTES:
            name = runtime.queue_name(environment, route.worker)
            title = route.worker.capitalize()
            dead_letters = queue(
                self,
                f"{title}DeadLetters",
                queue_name=f"{name}-dlq",
                retention_period=DEAD_LETTER_RETENTION,
                key=key,
            )
            work = queue(
                self,
                f"{title}Queue",
                queue_name=name,
                visibility_timeout=cdk.Duration.seconds(
                    runtime.VISIBILITY_TIMEOUT_FACTOR * worker_timeouts[route.worker]
                ),
                dead_letter_queue=sqs.DeadLetterQueue(
                    queue=dead_letters, max_receive_count=runtime.MAX_RECEIVE_COUNT
                ),
                key=key,
            )
            events.Rule(
                self,
                f"{title}Rule",
                rule_name=name,
                description=f"Gatehouse events for the {route.worker} worker",
                event_bus=self.bus,
                event_pattern=_pattern(route.pattern()),
                # An event EventBridge cannot deliver lands beside the ones the worker gave up.
                targets=[targets.SqsQueue(work, dead_letter_queue=dead_letters)],
            )
            self.queues[route.worker] = work
            self.dead_letters[route.worker] = dead_letters
            self.queue_names[route.worker] = name
            self.dead_letter_names.append(f"{name}-dlq")
        stream_failures = f"{runtime.prefix(environment)}-stream-dlq"
        self.stream_failures = queue(
            self,
            "StreamFailures",
            queue_name=stream_failures,
            retention_period=DEAD_LETTER_RETENTION,
            key=key,
        )
        self.dead_letter_names.append(stream_failures)
        acknowledge(
            self.stream_failures,
            {
                "SQS3": "This is a dead-letter queue: the on-failure destination of the table "
                "stream's event source mapping (Lambda sends it each failed batch's coordinates).",
            },
        )


def _pattern(pattern: Mapping[str, list[str]]) -> events.EventPattern:
    """chalicelib.eventroutes' pattern as CDK's type: ``source`` and ``detail-type`` only."""
    known = {"source", "detail-type"}
    if set(pattern) - known:
        raise ValueError(f"unsupported keys in an event pattern: {set(pattern) - known}")
    return events.EventPattern(source=pattern["source"], detail_type=pattern.get("detail-type"))
