"""What the API's Lambda functions run with, whichever way they are deployed.

The CDK app (``api.py``) and ``tools/chalice_prod.py`` (which writes ``.chalice/config.json``'s
``prod`` stage and ``.chalice/policy-prod*.json`` for ``chalice deploy --stage prod``) both read
their sizes, settings, names and grants from here, so the two deploy paths cannot drift apart.
No aws_cdk import: the generator runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.table import INDEXES

PROJECT = "gatehouse"
DEFAULT_ENVIRONMENT = "production"
STAGE = "api"  # the CloudFront behaviour /api/* maps straight onto this stage
ENDPOINT_TYPE = "REGIONAL"  # behind CloudFront an edge-optimised API would add a second hop
ARCHITECTURE = "arm64"
# scrypt at N=2^14, r=8, p=5 needs 16 MiB and is CPU-bound: Lambda's CPU share grows with memory,
# and 1024 MB (about 0.6 vCPU) keeps a login near a quarter of a second (README, "Hashing").
MEMORY_MB = 1024
TIMEOUT_SECONDS = 10
ROTATION_MEMORY_MB = 256
ROTATION_TIMEOUT_SECONDS = 30
LOG_RETENTION_DAYS = 7
LOG_LEVEL = "INFO"
# Read by app.py when Chalice packages it (API Gateway caches the authorizer's answer this long).
AUTHORIZER_TTL_SECONDS = 60
# Set by the site's CloudFront function on /api/* to the origin the browser used.
SITE_ORIGIN_HEADER = "x-gatehouse-site-origin"
# Each proxy in front of the functions appends the address it saw to X-Forwarded-For: API Gateway
# always, and CloudFront too when the CDK app puts it in front. The client is that many entries
# from the right; entries further left were written by the client.
API_GATEWAY_HOPS = 1
CLOUDFRONT_HOPS = 1

# The functions as ``chalice package`` names them (logical ids) and as app.py names them.
API_FUNCTION = "APIHandler"
AUTHORIZER_FUNCTION = "Bearer"
ROTATION_FUNCTION = "RotateSigningKey"
ROTATION_HANDLER = "rotate_signing_key"

# Item-level actions only: no table management, no streams.
TABLE_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
)
SIGNING_KEY_READ_ACTIONS = ("secretsmanager:GetSecretValue",)
SIGNING_KEY_ROTATION_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)
UPLOAD_OBJECT_ACTIONS = ("s3:PutObject", "s3:GetObject", "s3:DeleteObject")
UPLOAD_LIST_ACTIONS = ("s3:ListBucket",)
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
# SES v2's SendEmail; SES checks it on the sending identity and on the configuration set named.
MAIL_ACTIONS = ("ses:SendEmail",)


@dataclass(frozen=True)
class Grant:
    """One IAM statement: CDK turns it into a PolicyStatement, the generator into JSON."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, list[str]]] = field(default_factory=dict)


def prefix(environment: str) -> str:
    """The stem of every name: ``gatehouse-production``; also the table's name."""
    return f"{PROJECT}-{environment}"


def secret_name(environment: str, name: str) -> str:
    return f"{PROJECT}/{environment}/{name}"


def signing_key_name(environment: str) -> str:
    return secret_name(environment, "jwt-signing-key")


def uploads_bucket_stem(environment: str) -> str:
    """The CDK app appends the account id (bucket names are global)."""
    return f"{prefix(environment)}-uploads"


def configuration_set_name(environment: str) -> str:
    """The SES configuration set the API's mail names."""
    return prefix(environment)


def log_group_name(environment: str, function: str) -> str:
    """The log group the CDK app creates for a function (Chalice alone uses /aws/lambda/...)."""
    return f"/{PROJECT}/{environment}/{function}"


def api_grants(
    *,
    table_arn: str,
    signing_key_arn: str,
    uploads_bucket_arn: str,
    mail_arns: tuple[str, ...] = (),
) -> list[Grant]:
    """The API handler and the authorizer: the table and its indexes, the signing key (read),
    the users' prefix of the uploads bucket and, when mail is on, sending from its SES identity
    with its configuration set (``mail_arns``). Logging is granted by each deploy path."""
    mail = [Grant("SendMail", MAIL_ACTIONS, mail_arns)] if mail_arns else []
    return [
        Grant(
            "Table",
            TABLE_ACTIONS,
            (table_arn, *(f"{table_arn}/index/{index.name}" for index in INDEXES)),
        ),
        Grant("SigningKey", SIGNING_KEY_READ_ACTIONS, (signing_key_arn,)),
        Grant("UploadObjects", UPLOAD_OBJECT_ACTIONS, (f"{uploads_bucket_arn}/{UPLOAD_PREFIX}*",)),
        Grant(
            "UploadListing",
            UPLOAD_LIST_ACTIONS,
            (uploads_bucket_arn,),
            {"StringLike": {"s3:prefix": [f"{UPLOAD_PREFIX}*"]}},
        ),
        *mail,
    ]


def rotation_grants(*, signing_key_arn: str) -> list[Grant]:
    """The rotation function: read, put and re-stage versions of the signing key, nothing else."""
    return [Grant("RotateSigningKey", SIGNING_KEY_ROTATION_ACTIONS, (signing_key_arn,))]


def environment_variables(
    *,
    table_name: str,
    signing_key_id: str,
    uploads_bucket: str,
    allowed_origins: str,
    proxy_hops: int,
    cors_allow_origin: str,
    api_key_required: bool,
    mail_from: str = "",
    configuration_set: str = "",
    site_url: str = "",
) -> dict[str, str]:
    """The functions' settings. CORS_ALLOW_ORIGIN, API_KEY_REQUIRED and AUTHORIZER_TTL_SECONDS
    shape the API definition: Chalice applies a stage's variables before it imports app.py to
    package it, so they take effect there, with nothing set in the packaging process. An empty
    MAIL_FROM turns mail off."""
    return {
        "TABLE_NAME": table_name,
        "JWT_SECRET_ID": signing_key_id,
        "UPLOADS_BUCKET": uploads_bucket,
        "ALLOWED_ORIGINS": allowed_origins,
        "TRUSTED_PROXY_HOPS": str(proxy_hops),
        "AUTHORIZER_TTL_SECONDS": str(AUTHORIZER_TTL_SECONDS),
        "CORS_ALLOW_ORIGIN": cors_allow_origin,
        "API_KEY_REQUIRED": "true" if api_key_required else "false",
        "LOG_LEVEL": LOG_LEVEL,
        "MAIL_FROM": mail_from,
        "SES_CONFIGURATION_SET": configuration_set if mail_from else "",
        "SITE_URL": site_url,
    }
