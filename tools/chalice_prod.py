"""Writes what ``chalice deploy --stage prod`` reads, from the definitions the CDK app deploys.

The ``prod`` stage of ``.chalice/config.json`` (sizes, architecture, endpoint type, log retention,
settings) and its policies, ``.chalice/policy-prod.json`` (API handler),
``.chalice/policy-prod-authorizer.json`` (the ``bearer`` authorizer, read-only),
``.chalice/policy-prod-rotation.json`` (``rotate_signing_key``) and one
``.chalice/policy-prod-<handler>.json`` per event handler (``on-table-change``, ``notify-worker``,
...), all come from ``cdk/gatehouse_infra/runtime.py``; the rest of ``config.json`` (the ``dev``
stage) is kept as it is. ``make chalice-config`` runs it; ``tests/test_chalice_prod.py`` fails
when the committed files differ from what it writes.

    .venv/bin/python -m tools.chalice_prod            # write the three files
    .venv/bin/python -m tools.chalice_prod --check    # exit 1 if any of them is stale

For one deployment, ``--uploads-bucket`` (the Data stack's ``UploadsBucketName`` output) and
``--allowed-origins`` (the site's origin) fill in the two values only that deployment knows.
Without ``--uploads-bucket`` the stage names no bucket and uploads answer 503 "not configured":
bucket names are global, so a default name could belong to someone else's account.
``--mail-from`` and ``--site-url`` turn mail on (the committed stage has it off), sending from
that address's SES identity (or its domain's) with the ``gatehouse-production`` configuration set.
``--table-stream-arn`` (the table's ``LatestStreamArn``; required to deploy the stream handler),
``--backups-bucket`` (the ``BackupsBucketName`` output) and ``--websocket-url`` (the WebSocket URL
a first ``chalice deploy`` prints) fill in the event handlers' deploy-time values
(cdk/README.md, "The API alone").
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cdk"))  # gatehouse_infra, as cdk/app.py sees it

from gatehouse_infra import runtime  # noqa: E402

CHALICE_DIR = ROOT / ".chalice"
STAGE = "prod"
ENVIRONMENT = runtime.DEFAULT_ENVIRONMENT  # the stage's resources are gatehouse-production...
API_POLICY = "policy-prod.json"
ROTATION_POLICY = "policy-prod-rotation.json"
AUTHORIZER_POLICY = "policy-prod-authorizer.json"
# Chalice names the WebSocket API's stage after the REST API's: no CloudFront in front here.
WEBSOCKET_STAGE = runtime.STAGE
# Lambda creates the /aws/lambda/... group on first use when nothing else made it.
CREATE_LOG_GROUP = "logs:CreateLogGroup"


def handler_policy(handler: runtime.Handler) -> str:
    return f"policy-prod-{handler.name.replace('_', '-')}.json"


def prod_stage(
    *,
    uploads_bucket: str | None = None,
    allowed_origins: str = "",
    mail_from: str = "",
    site_url: str = "",
    table_stream_arn: str = "",
    backups_bucket: str = "",
    websocket_url: str = "",
) -> dict[str, Any]:
    """The stage: what the CDK app gives its functions, minus CloudFront.

    Without CloudFront in front, only API Gateway appends to X-Forwarded-For and there is no
    edge key (``EDGE_SECRET``) to tell CloudFront's requests apart, so the stage trusts API
    Gateway's entry alone; the CDK app adds CloudFront's hop. ``UPLOADS_BUCKET`` is there only
    when given: the CDK app's bucket ends in the account id, which only the deployer knows.
    """
    environment = runtime.environment_variables(
        table_name=runtime.prefix(ENVIRONMENT),
        signing_key_id=runtime.signing_key_name(ENVIRONMENT),
        uploads_bucket=uploads_bucket or "",
        allowed_origins=allowed_origins,
        proxy_hops=runtime.API_GATEWAY_HOPS,
        cors_allow_origin="",
        api_key_required=False,
        mail_from=mail_from,
        configuration_set=runtime.configuration_set_name(ENVIRONMENT),
        site_url=site_url,
    )
    if not uploads_bucket:
        del environment["UPLOADS_BUCKET"]
    environment.update(
        runtime.event_variables(
            ENVIRONMENT,
            stream_arn=table_stream_arn,
            websocket_url=websocket_url,
            # The same stage's @connections endpoint, over HTTPS.
            websocket_endpoint="https://" + websocket_url.removeprefix("wss://")
            if websocket_url
            else "",
            backups_bucket=backups_bucket,
        )
    )
    return {
        "api_gateway_stage": runtime.STAGE,
        "api_gateway_endpoint_type": runtime.ENDPOINT_TYPE,
        "lambda_architecture": runtime.ARCHITECTURE,
        "lambda_memory_size": runtime.MEMORY_MB,
        "lambda_timeout": runtime.TIMEOUT_SECONDS,
        "log_retention_in_days": runtime.LOG_RETENTION_DAYS,
        "autogen_policy": False,
        "iam_policy_file": API_POLICY,
        "lambda_functions": {
            # Chalice scopes an authorizer's settings by its name like any function's.
            runtime.AUTHORIZER_HANDLER: {"iam_policy_file": AUTHORIZER_POLICY},
            runtime.ROTATION_HANDLER: {
                "iam_policy_file": ROTATION_POLICY,
                "lambda_memory_size": runtime.ROTATION_MEMORY_MB,
                "lambda_timeout": runtime.ROTATION_TIMEOUT_SECONDS,
            },
            **{
                handler.name: {
                    "iam_policy_file": handler_policy(handler),
                    "lambda_timeout": handler.timeout,
                }
                for handler in runtime.EVENT_HANDLERS
            },
        },
        "environment_variables": environment,
    }


def api_policy(app_name: str, *, mail_from: str = "") -> dict[str, Any]:
    table = _arn("dynamodb", f"table/{runtime.prefix(ENVIRONMENT)}")
    # The stem with a wildcard: the CDK app's bucket appends the account id.
    bucket = f"arn:aws:s3:::{runtime.uploads_bucket_stem(ENVIRONMENT)}*"
    grants = runtime.api_grants(
        table_arn=table,
        signing_key_arn=_signing_key_arn(),
        uploads_bucket_arn=bucket,
        mail_arns=_mail_arns(mail_from),
    )
    return _document([*grants, _logs(app_name)])


def event_policies(
    app_name: str, *, mail_from: str = "", table_stream_arn: str = ""
) -> dict[str, dict[str, Any]]:
    """Each event handler's policy by file name: its grants on the production resources'
    names (chalice deploy does not create the bus, the queues or the WebSocket API's id)."""
    stem = runtime.prefix(ENVIRONMENT)
    table = _arn("dynamodb", f"table/{stem}")
    grants = runtime.event_grants(
        table_arn=table,
        stream_arn=table_stream_arn or f"{table}/stream/*",
        bus_arn=_arn("events", f"event-bus/{runtime.event_bus_name(ENVIRONMENT)}"),
        stream_failures_arn=_arn("sqs", f"{stem}-stream-dlq"),
        queue_arns={
            worker: _arn("sqs", runtime.queue_name(ENVIRONMENT, worker))
            for worker in runtime.WORKER_HANDLERS
        },
        # Any WebSocket API's stage of this name: its id exists only once deployed.
        connections_arn=_arn("execute-api", f"*/{WEBSOCKET_STAGE}"),
        uploads_bucket_arn=f"arn:aws:s3:::{runtime.uploads_bucket_stem(ENVIRONMENT)}*",
        backups_bucket_arn=f"arn:aws:s3:::{runtime.backups_bucket_stem(ENVIRONMENT)}*",
        mail_arns=_mail_arns(mail_from),
    )
    return {
        handler_policy(handler): _document([*grants[handler.function], _logs(app_name)])
        for handler in runtime.EVENT_HANDLERS
    }


def authorizer_policy(app_name: str) -> dict[str, Any]:
    table = _arn("dynamodb", f"table/{runtime.prefix(ENVIRONMENT)}")
    grants = runtime.authorizer_grants(table_arn=table, signing_key_arn=_signing_key_arn())
    return _document([*grants, _logs(app_name)])


def rotation_policy(app_name: str) -> dict[str, Any]:
    grants = runtime.rotation_grants(signing_key_arn=_signing_key_arn())
    return _document([*grants, _logs(app_name)])


def render(
    config_text: str,
    *,
    uploads_bucket: str | None = None,
    allowed_origins: str = "",
    mail_from: str = "",
    site_url: str = "",
    table_stream_arn: str = "",
    backups_bucket: str = "",
    websocket_url: str = "",
) -> dict[str, str]:
    """The files' contents, by name, given ``config.json`` as it is."""
    config = json.loads(config_text)
    config["stages"][STAGE] = prod_stage(
        uploads_bucket=uploads_bucket,
        allowed_origins=allowed_origins,
        mail_from=mail_from,
        site_url=site_url,
        table_stream_arn=table_stream_arn,
        backups_bucket=backups_bucket,
        websocket_url=websocket_url,
    )
    app_name = config["app_name"]
    events = event_policies(app_name, mail_from=mail_from, table_stream_arn=table_stream_arn)
    return {
        "config.json": _json(config),
        API_POLICY: _json(api_policy(app_name, mail_from=mail_from)),
        AUTHORIZER_POLICY: _json(authorizer_policy(app_name)),
        ROTATION_POLICY: _json(rotation_policy(app_name)),
        **{name: _json(document) for name, document in events.items()},
    }


def main(argv: Sequence[str] | None = None, *, chalice_dir: Path = CHALICE_DIR) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument("--uploads-bucket", help="the UploadsBucketName output")
    parser.add_argument("--allowed-origins", default="", help="the site's origins, comma-separated")
    parser.add_argument("--mail-from", default="", help="the sender, e.g. 'Name <a@example.com>'")
    parser.add_argument("--site-url", default="", help="the site's origin, for links in mail")
    parser.add_argument("--table-stream-arn", default="", help="the table's LatestStreamArn")
    parser.add_argument("--backups-bucket", default="", help="the BackupsBucketName output")
    parser.add_argument(
        "--websocket-url", default="", help="wss://<id>.execute-api.<region>.amazonaws.com/api"
    )
    args = parser.parse_args(argv)
    if bool(args.mail_from) != bool(args.site_url):
        parser.error("--mail-from and --site-url go together")
    stem = runtime.uploads_bucket_stem(ENVIRONMENT)
    if args.uploads_bucket is not None and not args.uploads_bucket.startswith(stem):
        parser.error(f"--uploads-bucket must start with {stem} (the policy grants no other)")
    stream = f"arn:aws:dynamodb:{{region}}:{{account}}:table/{runtime.prefix(ENVIRONMENT)}/stream/"
    if args.table_stream_arn and not re.match(
        r"^arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/"
        + re.escape(runtime.prefix(ENVIRONMENT))
        + r"/stream/\S+$",
        args.table_stream_arn,
    ):
        parser.error(f"--table-stream-arn must be {stream}<label>")
    backups = runtime.backups_bucket_stem(ENVIRONMENT)
    if args.backups_bucket and not args.backups_bucket.startswith(backups):
        parser.error(f"--backups-bucket must start with {backups} (the policy grants no other)")
    websocket = urlsplit(args.websocket_url)
    if args.websocket_url and (
        websocket.scheme != "wss" or websocket.path.strip("/") != WEBSOCKET_STAGE or websocket.query
    ):
        parser.error(f"--websocket-url must be wss://<host>/{WEBSOCKET_STAGE}")
    files = render(
        (chalice_dir / "config.json").read_text(),
        uploads_bucket=args.uploads_bucket,
        allowed_origins=args.allowed_origins,
        mail_from=args.mail_from,
        site_url=args.site_url,
        table_stream_arn=args.table_stream_arn,
        backups_bucket=args.backups_bucket,
        websocket_url=args.websocket_url.rstrip("/"),
    )
    stale = [name for name, text in files.items() if _read(chalice_dir / name) != text]
    if args.check:
        for name in stale:
            print(f".chalice/{name} is stale: run make chalice-config", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        (chalice_dir / name).write_text(files[name])
        print(f"wrote .chalice/{name}")
    return 0


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:*:*:{resource}"


def _mail_arns(mail_from: str) -> tuple[str, ...]:
    """The sender's SES identities (the address, or its domain: whichever was verified) and
    the configuration set; nothing while mail is off."""
    if not mail_from:
        return ()
    address = parseaddr(mail_from)[1]
    return (
        _arn("ses", f"identity/{address}"),
        _arn("ses", f"identity/{address.rpartition('@')[2]}"),
        _arn("ses", f"configuration-set/{runtime.configuration_set_name(ENVIRONMENT)}"),
    )


def _signing_key_arn() -> str:
    # Secrets Manager appends six random characters to a secret's name in its ARN.
    return _arn("secretsmanager", f"secret:{runtime.signing_key_name(ENVIRONMENT)}-*")


def _logs(app_name: str) -> runtime.Grant:
    """Chalice's functions log to Lambda's default groups, /aws/lambda/<app>-<stage>-<name>."""
    group = _arn("logs", f"log-group:/aws/lambda/{app_name}-{STAGE}*")
    return runtime.Grant("Logs", (CREATE_LOG_GROUP, *runtime.LOG_ACTIONS), (group, f"{group}:*"))


def _document(grants: Sequence[runtime.Grant]) -> dict[str, Any]:
    statements = []
    for grant in grants:
        statement: dict[str, Any] = {
            "Sid": grant.sid,
            "Effect": "Allow",
            "Action": list(grant.actions),
            "Resource": grant.resources[0] if len(grant.resources) == 1 else list(grant.resources),
        }
        if grant.conditions:
            statement["Condition"] = grant.conditions
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
