"""Creates, if absent, what the app needs in an AWS account: the table, the signing secret, the
uploads bucket, the event bus with a rule per worker into its queue (each with a dead-letter
queue), the stream handler's dead-letter queue, the backups bucket and, when mail is on, the SES
sender identity and configuration set.

Used by ``make dev`` against the emulator, by the tests under moto, and by the benchmark. Deployed,
the CDK app creates the same resources (with encryption, alarms and longer timeouts).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from chalicelib.eventroutes import ROUTES, Route
from chalicelib.keys import error_code
from chalicelib.table import TTL_ATTRIBUTE, create_table_request

if TYPE_CHECKING:
    import boto3
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

CHALICE_CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"
# A failed message is received again once its visibility timeout ends, and moves to its queue's
# dead-letter queue on the receive after the third. Deployed the timeout is six times the
# worker's; locally a short one lets a poison message reach the DLQ in seconds.
LOCAL_VISIBILITY_TIMEOUT = 2
MAX_RECEIVE_COUNT = 3


@dataclass(frozen=True)
class Resources:
    table_name: str
    jwt_secret_id: str
    uploads_bucket: str
    event_bus: str
    # Worker name (chalicelib/eventroutes.py) -> its queue's name.
    queues: dict[str, str]
    backups_bucket: str

    @classmethod
    def for_stage(cls, stage: str) -> Resources:
        """The names a Chalice stage's environment points at, so set-up and app agree."""
        env = json.loads(CHALICE_CONFIG.read_text())["stages"][stage]["environment_variables"]
        return cls(
            table_name=env["TABLE_NAME"],
            jwt_secret_id=env["JWT_SECRET_ID"],
            uploads_bucket=env["UPLOADS_BUCKET"],
            event_bus=env["EVENT_BUS_NAME"],
            queues={route.worker: env[f"{route.worker.upper()}_QUEUE"] for route in ROUTES},
            backups_bucket=env["BACKUPS_BUCKET"],
        )

    @property
    def stream_dlq(self) -> str:
        """Where batches of stream records the handler keeps failing on are described."""
        return f"{self.table_name}-stream-dlq"

    def dlq(self, worker: str) -> str:
        return f"{self.queues[worker]}-dlq"


def provision(
    session: boto3.Session,
    resources: Resources,
    *,
    site_origins: Sequence[str] = (),
    visibility_timeout: int = LOCAL_VISIBILITY_TIMEOUT,
) -> None:
    ensure_table(session, resources.table_name)
    ensure_secret(session, resources.jwt_secret_id)
    ensure_bucket(session, resources.uploads_bucket, site_origins=site_origins)
    ensure_bucket(session, resources.backups_bucket)
    ensure_event_routes(session, resources, visibility_timeout=visibility_timeout)


def ensure_event_routes(
    session: boto3.Session, resources: Resources, *, visibility_timeout: int
) -> None:
    """The bus; per route of ``chalicelib/eventroutes.py`` a rule into the worker's queue, which
    has a dead-letter queue; the stream handler's dead-letter queue."""
    events, sqs = session.client("events"), session.client("sqs")
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=resources.event_bus)
    ensure_queue(sqs, resources.stream_dlq)
    for route in ROUTES:
        dlq_arn = ensure_queue(sqs, resources.dlq(route.worker))
        queue_arn = ensure_queue(
            sqs,
            resources.queues[route.worker],
            VisibilityTimeout=str(visibility_timeout),
            RedrivePolicy=json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
            ),
        )
        ensure_rule(events, resources.event_bus, route, queue_arn)


def ensure_rule(events: EventBridgeClient, bus: str, route: Route, queue_arn: str) -> None:
    """Put (or overwrite) the rule sending ``route``'s events to its queue; idempotent."""
    name = f"{bus}-{route.worker}"
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(route.pattern()))
    events.put_targets(
        Rule=name, EventBusName=bus, Targets=[{"Id": route.worker, "Arn": queue_arn}]
    )


def ensure_queue(sqs: SQSClient, name: str, **attributes: str) -> str:
    """The queue ``name`` with ``attributes`` (set again when it exists); its ARN."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    if attributes:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return found["Attributes"]["QueueArn"]


def ensure_bucket(session: boto3.Session, bucket: str, *, site_origins: Sequence[str] = ()) -> None:
    """The uploads bucket; browsers on ``site_origins`` may POST files to it (CORS)."""
    client = session.client("s3")
    with contextlib.suppress(
        client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
    ):
        client.create_bucket(
            Bucket=bucket,
            CreateBucketConfiguration={"LocationConstraint": session.region_name},  # type: ignore[typeddict-item]
        )
    if site_origins:
        # The site posts files straight to the bucket with XMLHttpRequest (for its progress
        # events), which needs a preflight: only the site's own origins get an answer.
        client.put_bucket_cors(
            Bucket=bucket,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": list(site_origins),
                        "AllowedMethods": ["POST"],
                        "AllowedHeaders": ["*"],
                        "MaxAgeSeconds": 600,
                    }
                ]
            },
        )


def ensure_sender(
    session: boto3.Session, sender: str, *, configuration_set: str | None = None
) -> None:
    """The SES identity ``sender`` sends from (its address, as a deploy verifies it), and the
    configuration set its mail names. The emulator counts an identity as verified at once."""
    client = session.client("sesv2")
    _, address = parseaddr(sender)
    with _unless_exists():
        client.create_email_identity(EmailIdentity=address)
    if configuration_set is not None:
        with _unless_exists():
            client.create_configuration_set(ConfigurationSetName=configuration_set)


@contextlib.contextmanager
def _unless_exists() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        # SES v2 says AlreadyExistsException; moto, for a configuration set, a code of its own.
        if error_code(exc) not in {
            "AlreadyExistsException",
            "ConfigurationSetAlreadyExistsException",
        }:
            raise


def ensure_table(session: boto3.Session, table_name: str) -> None:
    client = session.client("dynamodb")
    try:
        client.create_table(**create_table_request(table_name))
    except client.exceptions.ResourceInUseException:
        return
    client.get_waiter("table_exists").wait(TableName=table_name)
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    # As deployed (the CDK table has it on): the nightly backup exports to a point in time.
    client.update_continuous_backups(
        TableName=table_name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )


def ensure_secret(session: boto3.Session, secret_id: str) -> None:
    client = session.client("secretsmanager")
    try:
        client.create_secret(Name=secret_id, SecretString=secrets.token_urlsafe(48))
    except ClientError as exc:
        if error_code(exc) != "ResourceExistsException":
            raise
