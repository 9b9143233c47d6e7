"""What the API's Lambda functions run with, whichever way they are deployed.

The CDK app (``api.py``) and ``tools/chalice_prod.py`` (which writes ``.chalice/config.json``'s
``prod`` stage and ``.chalice/policy-prod*.json`` for ``chalice deploy --stage prod``) both read
their sizes, settings, names and grants from here, so the two deploy paths cannot drift apart.
No aws_cdk import: the generator runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chalicelib.eventroutes import ROUTES
from chalicelib.keys import CONNECTION, DONE, EMAIL, NAME, USER
from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.table import INDEXES

PROJECT = "gatehouse"
DEFAULT_ENVIRONMENT = "production"
STAGE = "api"  # the CloudFront behaviour /api/* maps straight onto this stage
ENDPOINT_TYPE = "REGIONAL"  # behind CloudFront an edge-optimised API would add a second hop
ARCHITECTURE = "arm64"
# scrypt at N=2^14, r=8, p=5 needs 16 MiB and is CPU-bound: a verify takes about 235 ms on one
# full core. Lambda's CPU share grows with memory, one full vCPU at 1,769 MB; at 1,024 MB (about
# 0.58 vCPU) the same verify takes 235 / 0.58 = about 405 ms. 1,769 MB keeps a login's hash at a
# quarter of a second (README, "Hashing") and costs the same GB-seconds per login (1.769 GB x
# 0.235 s = 0.42 against 1.0 x 0.405 = 0.41); only I/O-bound requests cost more per ms.
MEMORY_MB = 1769
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
AUTHORIZER_HANDLER = "bearer"
ROTATION_FUNCTION = "RotateSigningKey"
ROTATION_HANDLER = "rotate_signing_key"

# The event handlers (docs/EVENTS.md), each its own function with its own role.
# Where the WebSocket API's stage is: CloudFront's /ws behaviour passes the path on unchanged,
# so wss://<site>/ws reaches stage "ws" (chalice names it after the REST stage; the CDK app
# renames it).
WEBSOCKET_STAGE = "ws"
WEBSOCKET_PATH = f"/{WEBSOCKET_STAGE}"
# The nightly DynamoDB export lands under this prefix of the backups bucket.
BACKUP_EXPORT_PREFIX = "backups/database/"
# Lambda reads a queue while a message is invisible; AWS advises at least six times the timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
MAX_RECEIVE_COUNT = 3
# The stream's event source mapping: bounded retries, then the batch's coordinates go to the
# stream's dead-letter queue (the stream keeps the records 24 hours for a replay).
STREAM_MAX_RETRY_ATTEMPTS = 5
STREAM_MAX_RECORD_AGE_SECONDS = 6 * 3600


@dataclass(frozen=True)
class Handler:
    """An event handler: its name in app.py (Chalice's ``lambda_functions`` key), its function's
    logical id in the packaged template, its event source's id there, and its timeout."""

    name: str
    function: str
    timeout: int
    event: str = ""


# A batch of up to 100 records; a PutEvents call the bus keeps refusing is tried 4 times
# (chalicelib/publisher.py), each try retried once by botocore (app.BOTO_CONFIG): about 5 s of
# back-off at worst before the batch fails and Lambda retries and bisects it. 30 s leaves twice
# that.
STREAM_HANDLER = Handler("on_table_change", "OnTableChange", 30, "OnTableChangeDynamodbEventSource")
# One per chalicelib.eventroutes route: the worker that consumes the route's queue. A worker
# that times out leaves its events' idempotency marks claimed (chalicelib/workers.py), so those
# events are skipped, not redone: each timeout leaves room for every message of a batch of 10 to
# meet one throttled AWS call (botocore's standard retry backs off up to 1 s), and SES's
# sending rate (1 a second in the sandbox) throttles the mail worker first.
WORKER_HANDLERS = {
    "notify": Handler("notify_worker", "NotifyWorker", 30, "NotifyWorkerSqsEventSource"),
    "mail": Handler("mail_worker", "MailWorker", 60, "MailWorkerSqsEventSource"),
    "purge": Handler("purge_worker", "PurgeWorker", 60, "PurgeWorkerSqsEventSource"),
}
# Chalice names the WebSocket functions after the route, not after app.py's handlers.
WEBSOCKET_HANDLERS = (
    Handler("websocket_connect", "WebsocketConnect", TIMEOUT_SECONDS),
    Handler("websocket_disconnect", "WebsocketDisconnect", TIMEOUT_SECONDS),
    Handler("websocket_message", "WebsocketMessage", TIMEOUT_SECONDS),
)
BACKUP_HANDLER = Handler("nightly_backup", "NightlyBackup", 60, "NightlyBackupEvent")
SWEEP_HANDLER = Handler("upload_sweep", "UploadSweep", 120, "UploadSweepEvent")
JOB_HANDLERS = (BACKUP_HANDLER, SWEEP_HANDLER)
EVENT_HANDLERS = (
    STREAM_HANDLER,
    *WORKER_HANDLERS.values(),
    *WEBSOCKET_HANDLERS,
    *JOB_HANDLERS,
)
if set(WORKER_HANDLERS) != {route.worker for route in ROUTES}:
    raise RuntimeError("every route in chalicelib/eventroutes.py needs its worker here")

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
# What Lambda's event source mapping does on the stream (on the stream's ARN, not "*").
STREAM_READ_ACTIONS = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
)
# Actions IAM authorizes on no resource of their own: the Service Authorization Reference lists
# no resource type for them, so only "*" matches (CDK's Table.grantStreamRead grants ListStreams
# so too). Each lists ARNs (of streams, of exports), never data. Granted alone in a policy of
# their own, the only "*" resources of any role.
ANY_RESOURCE = "*"
LIST_STREAMS_ACTIONS = ("dynamodb:ListStreams",)
LIST_EXPORTS_ACTIONS = ("dynamodb:ListExports",)
UNSCOPED_ACTIONS = (*LIST_STREAMS_ACTIONS, *LIST_EXPORTS_ACTIONS)
PUT_EVENTS_ACTIONS = ("events:PutEvents",)
# The on-failure destination is sent to with the function's own role.
SEND_MESSAGE_ACTIONS = ("sqs:SendMessage",)
CONSUME_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
MANAGE_CONNECTIONS_ACTIONS = ("execute-api:ManageConnections",)
# The nightly backup (chalicelib/jobs.py): the table's ARN, the export, the exports before it.
EXPORT_ACTIONS = ("dynamodb:DescribeTable", "dynamodb:ExportTableToPointInTime")
DESCRIBE_EXPORT_ACTIONS = ("dynamodb:DescribeExport",)
# What DynamoDB's export does in the bucket with the caller's permissions.
EXPORT_WRITE_ACTIONS = ("s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl")
# The event handlers' item actions, each granted only where their code calls it. A transaction
# (TransactWriteItems) is authorized item by item: ConditionCheckItem, PutItem, ...
GET_ITEM = "dynamodb:GetItem"
QUERY = "dynamodb:Query"
PUT_ITEM = "dynamodb:PutItem"
DELETE_ITEM = "dynamodb:DeleteItem"
BATCH_WRITE_ITEM = "dynamodb:BatchWriteItem"
CONDITION_CHECK_ITEM = "dynamodb:ConditionCheckItem"
# The authorizer reads a profile and a session with one BatchGetItem (GetItem for a single row).
AUTHORIZER_TABLE_ACTIONS = ("dynamodb:BatchGetItem", "dynamodb:GetItem")
# DeleteObjects (the purge) is authorized as s3:DeleteObject on each key.
DELETE_OBJECT_ACTIONS = ("s3:DeleteObject",)
# Which rows a handler's item actions reach: DynamoDB's fine-grained access control matches
# every partition key a request names against these (chalicelib/keys.py's prefixes).
LEADING_KEYS = "dynamodb:LeadingKeys"
ACCOUNT_ROWS = USER  # a user's partition: profile, sessions, items, uploads, tickets, ...
CONNECTION_LOOKUPS = CONNECTION  # CONN#{id} / CONN: the owner of a connection, by its id
NAME_CLAIMS = NAME
EMAIL_CLAIMS = EMAIL
# The sweep finds pending uploads through the sparse index (chalicelib/uploads.py).
PENDING_INDEX = INDEXES[0].name


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


def event_bus_name(environment: str) -> str:
    return f"{prefix(environment)}-events"


def queue_name(environment: str, worker: str) -> str:
    """A worker's queue, as app.py names it when Chalice packages the app (NOTIFY_QUEUE...)."""
    return f"{prefix(environment)}-{worker}"


def queue_variable(worker: str) -> str:
    return f"{worker.upper()}_QUEUE"


def backups_bucket_stem(environment: str) -> str:
    """How CloudFormation's generated name for the data stack's backups bucket begins."""
    return f"{prefix(environment)}-data-backups"


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
        _table_grant(table_arn),
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


def event_grants(
    *,
    table_arn: str,
    stream_arn: str,
    bus_arn: str,
    stream_failures_arn: str,
    queue_arns: Mapping[str, str],
    connections_arn: str,
    uploads_bucket_arn: str,
    backups_bucket_arn: str,
    mail_arns: tuple[str, ...] = (),
) -> dict[str, list[Grant]]:
    """Each event handler's grants, by its function's logical id: what its code calls
    (``app.py``'s handlers and the ``chalicelib`` classes they run), on named resources, the
    table's items limited to the partitions the handler touches (``dynamodb:LeadingKeys``).

    ``queue_arns`` by worker; ``connections_arn`` is the WebSocket API's stage's
    ``.../{stage}`` execute-api ARN, under which each connection is ``{method}/@connections/{id}``.
    Logging is granted by each deploy path.
    """
    users_objects = f"{uploads_bucket_arn}/{UPLOAD_PREFIX}*"

    def rows(sid: str, actions: tuple[str, ...], *prefixes: str) -> Grant:
        return Grant(
            sid,
            actions,
            (table_arn,),
            {"ForAllValues:StringLike": {LEADING_KEYS: [f"{p}*" for p in prefixes]}},
        )

    def consume(worker: str) -> Grant:
        return Grant("ConsumeQueue", CONSUME_ACTIONS, (queue_arns[worker],))

    def marks(worker: str) -> Grant:
        # workers.Idempotency: a conditional put claims DONE#{worker}#{eventId}, a delete
        # releases it when the effect failed.
        return rows("IdempotencyMarks", (PUT_ITEM, DELETE_ITEM), f"{DONE}{worker}#")

    workers = WORKER_HANDLERS
    return {
        STREAM_HANDLER.function: [
            Grant("ReadStream", STREAM_READ_ACTIONS, (stream_arn,)),
            Grant("ListStreams", LIST_STREAMS_ACTIONS, (ANY_RESOURCE,)),
            Grant("PutEvents", PUT_EVENTS_ACTIONS, (bus_arn,)),
            Grant("StreamFailures", SEND_MESSAGE_ACTIONS, (stream_failures_arn,)),
        ],
        # realtime.Notifier: the owner's connections (a query of their partition), the push,
        # and both rows of a connection API Gateway reports gone (a batch write).
        workers["notify"].function: [
            consume("notify"),
            rows("ReadConnections", (QUERY,), ACCOUNT_ROWS),
            rows("DropConnections", (BATCH_WRITE_ITEM,), ACCOUNT_ROWS, CONNECTION_LOOKUPS),
            marks("notify"),
            Grant(
                "PostToConnections",
                MANAGE_CONNECTIONS_ACTIONS,
                (f"{connections_arn}/POST/@connections/*",),
            ),
        ],
        # notices.Notices: the account's profile, then the notice through SES.
        workers["mail"].function: [
            consume("mail"),
            rows("ReadProfiles", (GET_ITEM,), ACCOUNT_ROWS),
            marks("mail"),
            *([Grant("SendMail", MAIL_ACTIONS, mail_arns)] if mail_arns else []),
        ],
        # deletion.AccountPurge: the profile, the partition's rows (query, batch deletes), the
        # name's and the address's claims and the profile (conditional deletes), the objects
        # under the user's prefix (list, DeleteObjects).
        workers["purge"].function: [
            consume("purge"),
            rows("ReadAccount", (GET_ITEM, QUERY), ACCOUNT_ROWS),
            rows("DeleteRows", (BATCH_WRITE_ITEM,), ACCOUNT_ROWS),
            rows("DeleteProfileAndClaims", (DELETE_ITEM,), ACCOUNT_ROWS, NAME_CLAIMS, EMAIL_CLAIMS),
            Grant("DeleteObjects", DELETE_OBJECT_ACTIONS, (users_objects,)),
            Grant(
                "ListObjects",
                UPLOAD_LIST_ACTIONS,
                (uploads_bucket_arn,),
                {"StringLike": {"s3:prefix": [f"{UPLOAD_PREFIX}*"]}},
            ),
        ],
        # realtime.Connections.connect: the ticket's conditional delete, then one transaction
        # (the profile's condition check, the connection's two rows).
        WEBSOCKET_HANDLERS[0].function: [
            rows("ConsumeTicket", (DELETE_ITEM,), ACCOUNT_ROWS),
            rows("CheckOwner", (CONDITION_CHECK_ITEM,), ACCOUNT_ROWS),
            rows("AddConnection", (PUT_ITEM,), ACCOUNT_ROWS, CONNECTION_LOOKUPS),
        ],
        # realtime.Connections.disconnect: both rows of the connection.
        WEBSOCKET_HANDLERS[1].function: [
            rows("RemoveConnection", (DELETE_ITEM,), ACCOUNT_ROWS, CONNECTION_LOOKUPS),
        ],
        # ws_message answers the route and calls nothing: logging only.
        WEBSOCKET_HANDLERS[2].function: [],
        # jobs.TableBackup: the table's ARN, the export, the table's exports, the one that failed.
        BACKUP_HANDLER.function: [
            Grant("ExportTable", EXPORT_ACTIONS, (table_arn,)),
            Grant("ListExports", LIST_EXPORTS_ACTIONS, (ANY_RESOURCE,)),
            Grant("DescribeExport", DESCRIBE_EXPORT_ACTIONS, (f"{table_arn}/export/*",)),
            Grant(
                "WriteExport",
                EXPORT_WRITE_ACTIONS,
                (f"{backups_bucket_arn}/{BACKUP_EXPORT_PREFIX}*",),
            ),
        ],
        # jobs.UploadSweep: the pending uploads through the index, each record read again and
        # deleted after its object.
        SWEEP_HANDLER.function: [
            Grant("FindExpired", (QUERY,), (f"{table_arn}/index/{PENDING_INDEX}",)),
            rows("Uploads", (GET_ITEM, DELETE_ITEM), ACCOUNT_ROWS),
            Grant("DeleteObjects", DELETE_OBJECT_ACTIONS, (users_objects,)),
        ],
    }


def _table_grant(table_arn: str) -> Grant:
    return Grant(
        "Table",
        TABLE_ACTIONS,
        (table_arn, *(f"{table_arn}/index/{index.name}" for index in INDEXES)),
    )


def authorizer_grants(*, table_arn: str, signing_key_arn: str) -> list[Grant]:
    """The ``bearer`` authorizer, read-only: the signing key, and one batch read of a user's
    profile and session (``sessions.SessionRepository.with_profile``) in their partition."""
    return [
        Grant("SigningKey", SIGNING_KEY_READ_ACTIONS, (signing_key_arn,)),
        Grant(
            "ReadProfileAndSession",
            AUTHORIZER_TABLE_ACTIONS,
            (table_arn,),
            {"ForAllValues:StringLike": {LEADING_KEYS: [f"{ACCOUNT_ROWS}*"]}},
        ),
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


def edge_variables(*, required: bool, exempt_domain: str | None) -> dict[str, str]:
    """With WAF on (``enableWaf``): the API refuses requests without CloudFront's edge key, so
    WAF's rules cannot be skipped by calling the execute-api URL, except those arriving on
    ``exempt_domain`` (api.<domain>, inspected by a web ACL of its own)."""
    if not required:
        return {}
    variables = {"EDGE_REQUIRED": "true"}
    if exempt_domain:
        variables["EDGE_EXEMPT_DOMAIN"] = exempt_domain
    return variables


def event_variables(
    environment: str,
    *,
    stream_arn: str = "",
    websocket_url: str = "",
    websocket_endpoint: str = "",
    backups_bucket: str = "",
) -> dict[str, str]:
    """The event handlers' settings: the bus, the queues (by name: app.py reads them when
    Chalice packages it), the stream, the WebSocket API's public URL and @connections endpoint,
    the backups bucket. A value not known is left out (an empty one would be refused), and
    that part is off."""
    known = {
        "TABLE_STREAM_ARN": stream_arn,
        "WEBSOCKET_URL": websocket_url,
        "WEBSOCKET_ENDPOINT": websocket_endpoint,
        "BACKUPS_BUCKET": backups_bucket,
    }
    return {
        "EVENT_BUS_NAME": event_bus_name(environment),
        **{queue_variable(worker): queue_name(environment, worker) for worker in WORKER_HANDLERS},
        **{name: value for name, value in known.items() if value},
    }


def websocket_url(site_origin: str) -> str:
    """``https://example.com`` -> ``wss://example.com/ws``: the site's origin, CloudFront's /ws."""
    return "wss://" + site_origin.removeprefix("https://") + WEBSOCKET_PATH
