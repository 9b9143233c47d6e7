"""Creates, if absent, what the app needs in an AWS account: the table, the signing secret, the
uploads bucket and, when mail is on, the SES sender identity and configuration set.

Used by ``make dev`` against the emulator, by the tests under moto, and by the benchmark.
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

from chalicelib.keys import error_code
from chalicelib.table import TTL_ATTRIBUTE, create_table_request

if TYPE_CHECKING:
    import boto3

CHALICE_CONFIG = Path(__file__).resolve().parent.parent / ".chalice" / "config.json"


@dataclass(frozen=True)
class Resources:
    table_name: str
    jwt_secret_id: str
    uploads_bucket: str

    @classmethod
    def for_stage(cls, stage: str) -> Resources:
        """The names a Chalice stage's environment points at, so set-up and app agree."""
        env = json.loads(CHALICE_CONFIG.read_text())["stages"][stage]["environment_variables"]
        return cls(
            table_name=env["TABLE_NAME"],
            jwt_secret_id=env["JWT_SECRET_ID"],
            uploads_bucket=env["UPLOADS_BUCKET"],
        )


def provision(
    session: boto3.Session, resources: Resources, *, site_origins: Sequence[str] = ()
) -> None:
    ensure_table(session, resources.table_name)
    ensure_secret(session, resources.jwt_secret_id)
    ensure_bucket(session, resources.uploads_bucket, site_origins=site_origins)


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


def ensure_secret(session: boto3.Session, secret_id: str) -> None:
    client = session.client("secretsmanager")
    try:
        client.create_secret(Name=secret_id, SecretString=secrets.token_urlsafe(48))
    except ClientError as exc:
        if error_code(exc) != "ResourceExistsException":
            raise
