"""The local AWS emulator: moto's server, made faithful where the app depends on it.

- moto does not serialise concurrent requests, so two conditional writes racing on one item can
  both succeed, which DynamoDB never allows (signup uniqueness and refresh rotation rely on it).
  One lock around the application restores that atomicity; a laptop does not need the
  concurrency it costs.
- moto accepts any browser upload (presigned POST) whatever its policy says; S3 enforces the
  policy's conditions and expiry, and the upload limits rely on that, so this checks them too
  (not the signature: local credentials are not secret).
- moto's server answers every cross-origin request with ``Access-Control-Allow-Origin: *``; S3
  answers only what the bucket's CORS rules allow, so that global header is turned off and the
  buckets' own rules apply (``tools/localaws.py`` allows the local site's origin). moto applies
  them to preflights and most requests but not to a browser's form POST, so this adds them there,
  as S3 does, or the browser could not read the answer to its upload.
- moto keeps mail sent through SES v2 (``GET /moto-api/data.json``, ``ses.Message``) with one
  body only, the HTML one when there are two, and without the time it was sent; it also accepts
  a ``ConfigurationSetName`` that does not exist, which SES refuses. So this keeps each accepted
  mail whole, listed oldest first at ``GET /_local/mail`` (what ``tools/mailviewer.py`` shows),
  and refuses an unknown configuration set as SES does.
- moto's DynamoDB export to S3 (``ExportTableToPointInTime``) writes one data file under a random
  folder, with no manifests and no ``_started`` marker, gives the export a malformed ARN and
  ignores the ``ClientToken``. ``install_table_exports`` replaces it with one that writes what
  DynamoDB writes, where DynamoDB writes it (``AwsLayoutExport``), and keeps the token's promise
  (the same request within 8 hours is the same export). The tests under moto install it too.
- moto's ``TransactWriteItems`` deep-copies every table it names, once per item, before each
  transaction, and puts the copy back if the transaction is cancelled. So a transaction cost
  time in proportion to the table's size times its items (95% of a six-item transaction's time
  at 40 rows, which also took a core from scrypt during a login); and the copy put back
  includes the table's stream, so after a cancelled transaction the stream's readers (the event
  runner's shard iterator) held a stream that no longer grew: every later change was lost to
  them, where DynamoDB's stream records every committed write and nothing of a cancelled
  transaction. And moto registers every model it creates, copies included, for its dashboard,
  so the emulator grew by megabytes a second. ``install_journaled_transactions`` replaces it as
  DynamoDB behaves: every condition is checked against the state before the transaction, then
  every write is applied, and a write that fails midway is undone from a journal of the items
  the transaction names (their prior state and where each stream ended), whatever the table's
  size; the tables stay the same objects. moto's dashboard registry of DynamoDB's items and
  stream records is turned off (the dashboard is not used).

Run: ``python -m tools.emulator --host 127.0.0.1 --port 5000``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import gzip
import hashlib
import io
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ERROR_TYPE_PREFIX,
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    PointInTimeRecoveryUnavailable,
    TableNotFoundException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import StreamRecord, StreamShard, Table
from moto.dynamodb.models.table_export import TableExport
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler
from moto.moto_server import werkzeug_app
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.exceptions import MissingBucket
from moto.s3.models import s3_backends
from moto.s3.utils import cors_matches_origin
from moto.ses.models import ses_backends
from werkzeug.formparser import parse_form_data
from werkzeug.serving import run_simple

from tools.mailviewer import MAILBOX_PATH

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PostPolicy:
    """WSGI middleware: refuse presigned POST uploads that break their policy, as S3 does."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        content_type = environ.get("CONTENT_TYPE", "")
        if environ["REQUEST_METHOD"] != "POST" or not content_type.startswith("multipart/"):
            return self._app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        _, form, files = parse_form_data({**environ, "wsgi.input": io.BytesIO(body)})
        environ["wsgi.input"] = io.BytesIO(body)
        fields = {name.lower(): value for name, value in form.items()}
        if "policy" in fields and "file" in files:
            refusal = _refusal(fields, len(files["file"].read()))
            if refusal is not None:
                status, code, message = refusal
                xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                start_response(status, [("Content-Type", "application/xml")])
                return [xml.encode()]
        return self._app(environ, start_response)


def _refusal(fields: dict[str, str], size: int) -> tuple[str, str, str] | None:
    policy = json.loads(base64.b64decode(fields["policy"]))
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    if expires <= datetime.now(UTC):
        return "403 Forbidden", "AccessDenied", "Invalid according to Policy: Policy expired."
    for condition in policy.get("conditions", []):
        if isinstance(condition, dict):
            condition = ["eq", *next(iter(condition.items()))]
            condition[1] = "$" + condition[1]
        operator = str(condition[0]).lower()
        if operator == "content-length-range":
            if size > int(condition[2]):
                return (
                    "400 Bad Request",
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size",
                )
            if size < int(condition[1]):
                return (
                    "400 Bad Request",
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                )
            continue
        name = str(condition[1]).lstrip("$").lower()
        if name == "bucket":
            continue
        value = fields.get(name, "")
        expected = str(condition[2])
        if (operator == "eq" and value != expected) or (
            operator == "starts-with" and not value.startswith(expected)
        ):
            return (
                "403 Forbidden",
                "AccessDenied",
                f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}",
            )
    return None


class PostCors:
    """WSGI middleware: a browser's POST to a bucket gets the CORS headers its rules allow."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN")
        if environ["REQUEST_METHOD"] != "POST" or not origin:
            return self._app(environ, start_response)
        bucket = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
        if not _bucket_allows(bucket, origin, "POST"):
            return self._app(environ, start_response)

        def start(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            if not any(name.lower() == "access-control-allow-origin" for name, _ in headers):
                headers = [*headers, ("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
            return start_response(status, headers, *rest)

        return self._app(environ, start)


def _bucket_allows(bucket: str, origin: str, method: str) -> bool:
    try:
        rules = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket).cors
    except MissingBucket:
        return False
    return any(
        method in (rule.allowed_methods or []) and cors_matches_origin(origin, rule.allowed_origins)
        for rule in rules
    )


# SES v2's SendEmail. The mailbox's listing (MAILBOX_PATH) is on a path no AWS API, nor a bucket
# name, can have.
SEND_EMAIL_PATH = "/v2/email/outbound-emails"
RESET_PATH = "/moto-api/reset"
_REGION_IN_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")


class Mailbox:
    """WSGI middleware: keeps every mail SES v2 accepted, with both bodies and the time sent."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []

    def messages(self) -> list[dict[str, Any]]:
        """Oldest first."""
        with self._lock:
            return list(self._messages)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        if (method, path) == ("GET", MAILBOX_PATH):
            return _json_answer(start_response, "200 OK", self.messages())
        if (method, path) == ("POST", RESET_PATH):
            with self._lock:
                self._messages.clear()
        if (method, path) != ("POST", SEND_EMAIL_PATH):
            return self._app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        request = json.loads(body or b"{}")
        region = _region(environ)
        configuration_set = request.get("ConfigurationSetName")
        if configuration_set is not None and not _configuration_set_exists(
            region, configuration_set
        ):
            error = {"message": f"Configuration set <{configuration_set}> does not exist."}
            headers = [("x-amzn-ErrorType", "NotFoundException")]
            return _json_answer(start_response, "404 Not Found", error, headers)
        status: list[str] = []

        def start(code: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            status.append(code)
            return start_response(code, headers, *rest)

        answer = list(self._app(environ, start))
        if status and status[0].startswith("200") and "Simple" in request.get("Content", {}):
            self._keep(json.loads(b"".join(answer))["MessageId"], request)
        return answer

    def _keep(self, message_id: str, request: dict[str, Any]) -> None:
        simple = request["Content"]["Simple"]
        body = simple.get("Body", {})
        message = {
            "id": message_id,
            "from": request.get("FromEmailAddress", ""),
            "to": list(request.get("Destination", {}).get("ToAddresses", [])),
            "subject": simple.get("Subject", {}).get("Data", ""),
            "text": body.get("Text", {}).get("Data"),
            "html": body.get("Html", {}).get("Data"),
            "sentAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        with self._lock:
            self._messages.append(message)


def _region(environ: dict[str, Any]) -> str:
    found = _REGION_IN_CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else "us-east-1"


def _configuration_set_exists(region: str, name: str) -> bool:
    return name in ses_backends[DEFAULT_ACCOUNT_ID][region].config_sets


def _json_answer(
    start_response: Callable[..., Any],
    status: str,
    value: Any,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    body = json.dumps(value).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


# DynamoDB honours an export's client token for this long after the first request.
EXPORT_TOKEN_LIFETIME = timedelta(hours=8)


class ExportConflict(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__(ERROR_TYPE_PREFIX + "ExportConflictException", message)


class InvalidExportTime(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__(ERROR_TYPE_PREFIX + "InvalidExportTimeException", message)


class AwsLayoutExport(TableExport):
    """A full export in DynamoDB JSON, laid out in S3 as DynamoDB lays it out::

        <prefix>/AWSDynamoDB/<exportId>/_started
        <prefix>/AWSDynamoDB/<exportId>/data/<name>.json.gz       one {"Item": ...} per line
        <prefix>/AWSDynamoDB/<exportId>/manifest-files.json       one line per data file
        <prefix>/AWSDynamoDB/<exportId>/manifest-summary.json     written last
        (and a .checksum beside each manifest: its MD5, hex)

    The export id starts with the start time in milliseconds, as DynamoDB's do. moto keeps no
    history, so the data is the table as it is when the export runs, whatever ``ExportTime``
    says; it runs within the request (one file: DynamoDB writes one or more per partition), and
    the request's answer still says ``IN_PROGRESS``, as DynamoDB's always does.
    """

    def __init__(
        self, *, table: Table, request: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        super().__init__(
            s3_bucket=request["S3Bucket"],
            s3_prefix=request.get("S3Prefix") or "",
            region_name=region_name,
            account_id=account_id,
            table=table,
            export_format=request.get("ExportFormat", "DYNAMODB_JSON"),
            export_type=request.get("ExportType", "FULL_EXPORT"),
        )
        self.start_time = datetime.now(UTC)
        self.export_id = f"{int(self.start_time.timestamp() * 1000):014d}-{secrets.token_hex(4)}"
        self.arn = f"{table.table_arn}/export/{self.export_id}"
        self.client_token: str | None = request.get("ClientToken")
        self.request = _export_parameters(request)
        self.export_time: datetime = _timestamp(request.get("ExportTime")) or self.start_time
        self.end_time: datetime | None = None
        self.folder = "/".join(
            part for part in (self.s3_prefix.rstrip("/"), "AWSDynamoDB", self.export_id) if part
        )

    def run(self) -> None:
        s3 = s3_backends[self.account_id][self.partition]
        if self.s3_bucket not in s3.buckets:
            self._finish("FAILED", "S3NoSuchBucket", "The specified bucket does not exist")
            return
        s3.put_object(self.s3_bucket, f"{self.folder}/_started", b"")
        lines = [
            dynamo_json_dump(item.to_json(root_attr_name="Item")) + "\n"
            for item in self.table.all_items()
        ]
        data = gzip.compress("".join(lines).encode())
        data_key = f"{self.folder}/data/{_data_file_name()}.json.gz"
        written = s3.put_object(self.s3_bucket, data_key, data)
        self.item_count = len(lines)
        self.processed_bytes = sum(len(line) for line in lines)
        files = {
            "itemCount": self.item_count,
            "md5Checksum": base64.b64encode(
                hashlib.md5(data, usedforsecurity=False).digest()
            ).decode(),
            "etag": written.etag.strip('"'),
            "dataFileS3Key": data_key,
        }
        self._put_manifest(s3, "manifest-files", json.dumps(files) + "\n")
        self._finish("COMPLETED", None, None)
        summary = {
            "version": "2020-06-30",
            "exportArn": self.arn,
            "startTime": _iso(self.start_time),
            "endTime": _iso(self.end_time or self.start_time),
            "tableArn": self.table.table_arn,
            "tableId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.table.table_arn)),
            "exportTime": _iso(self.export_time),
            "s3Bucket": self.s3_bucket,
            "s3Prefix": self.s3_prefix or None,
            "s3SseAlgorithm": "AES256",
            "s3SseKmsKeyId": None,
            "manifestFilesS3Key": f"{self.folder}/manifest-files.json",
            "billedSizeBytes": self.processed_bytes,
            "itemCount": self.item_count,
            "outputFormat": self.export_format,
        }
        self._put_manifest(s3, "manifest-summary", json.dumps(summary))

    def _put_manifest(self, s3: Any, name: str, text: str) -> None:
        body = text.encode()
        s3.put_object(self.s3_bucket, f"{self.folder}/{name}.json", body)
        checksum = hashlib.md5(body, usedforsecurity=False).hexdigest().encode()
        s3.put_object(self.s3_bucket, f"{self.folder}/{name}.checksum", checksum)

    def _finish(self, status: str, code: str | None, message: str | None) -> None:
        self.status, self.failure_code, self.failure_message = status, code, message
        self.end_time = datetime.now(UTC)

    def response(self) -> dict[str, Any]:
        answer = {
            **super().response(),
            "ExportManifest": f"{self.folder}/manifest-summary.json",
            "StartTime": self.start_time,
            "EndTime": self.end_time,
            "ExportTime": self.export_time,
            "ClientToken": self.client_token,
        }
        return {name: value for name, value in answer.items() if value is not None}


def export_table_to_point_in_time(handler: DynamoHandler) -> ActionResult:
    """DynamoDB's ExportTableToPointInTime, in place of moto's (``DynamoHandler``'s method)."""
    request = dict(handler.body)
    backend = handler.dynamodb_backend
    table = next((t for t in backend.tables.values() if t.table_arn == request["TableArn"]), None)
    if table is None:
        raise TableNotFoundException(name=request["TableArn"])
    pitr = table.continuous_backups["PointInTimeRecoveryDescription"]
    if pitr["PointInTimeRecoveryStatus"] != "ENABLED":
        raise PointInTimeRecoveryUnavailable(name=table.name)
    if request.get("ExportFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
        raise MockValidationException("the emulator exports DYNAMODB_JSON only")
    if request.get("ExportType", "FULL_EXPORT") != "FULL_EXPORT":
        raise MockValidationException("the emulator makes full exports only")
    export_time = _timestamp(request.get("ExportTime"))
    if export_time is not None and export_time > datetime.now(UTC):
        raise InvalidExportTime("ExportTime cannot be in the future")
    token = request.get("ClientToken")
    if token:
        earlier = _export_of_token(backend.table_exports.values(), token)
        if earlier is not None:
            if earlier.request != _export_parameters(request):
                raise ExportConflict(
                    f"An export with client token {token} has different parameters"
                )
            return ActionResult({"ExportDescription": earlier.response()})
    export = AwsLayoutExport(
        table=table,
        request=request,
        account_id=request.get("S3BucketOwner") or backend.account_id,
        region_name=backend.region_name,
    )
    backend.table_exports[export.arn] = export
    answer = export.response()
    # Run it now, under the emulator's lock (Serialised): a consistent snapshot.
    export.run()
    return ActionResult({"ExportDescription": answer})


def install_table_exports() -> None:
    """Make moto's DynamoDB (server or ``mock_aws``) export tables as DynamoDB does."""
    DynamoHandler.export_table_to_point_in_time = export_table_to_point_in_time  # type: ignore[method-assign,assignment]


class _Untracked(list[Any]):
    """An ``instances_tracked`` list that keeps nothing (moto's dashboard registry)."""

    def append(self, _: Any) -> None:
        return None


class _Write:
    """One item of a ``TransactWriteItems`` request: its operation, table and key."""

    def __init__(self, backend: DynamoDBBackend, entry: dict[str, Any]) -> None:
        if len(entry) != 1:
            raise TransactWriteSingleOpException()
        [(self.kind, self.op)] = entry.items()
        if self.kind not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise MockValidationException(f"Unsupported transaction operation {self.kind}")
        self.table = backend.get_table(self.op["TableName"])
        if self.kind == "Put":
            attributes = self.op["Item"]
            names = [self.table.hash_key_attr, self.table.range_key_attr]
            missing = [name for name in names if name is not None and name not in attributes]
            if missing:
                raise MockValidationException(
                    f"One or more parameter values were invalid: Missing the key {missing[0]}"
                    " in the item"
                )
            self.key = {name: attributes[name] for name in names if name is not None}
        else:
            self.key = self.op["Key"]
        self.hash_key, self.range_key = backend.get_keys_value(self.table, self.key)

    @property
    def identity(self) -> tuple[str, DynamoType, DynamoType | None]:
        return self.table.name, self.hash_key, self.range_key

    def current(self) -> Item | None:
        return self.table.get_item(self.hash_key, self.range_key)

    def refusal(self) -> tuple[str | None, str | None, dict[str, Any] | None]:
        """A cancellation reason: moto's ``(code, message, item)``, all ``None`` when the
        condition holds."""
        condition = self.op.get("ConditionExpression")
        if condition is None:
            return None, None, None
        current = self.current()
        met = get_filter_expression(
            condition,
            self.op.get("ExpressionAttributeNames"),
            self.op.get("ExpressionAttributeValues"),
        ).expr(current)
        if met:
            return None, None, None
        old = self.op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
        item = current.to_json()["Attributes"] if old and current is not None else None
        return "ConditionalCheckFailed", ConditionalCheckFailed().message, item

    def apply(self, backend: DynamoDBBackend) -> None:
        name = self.table.name
        if self.kind == "Put":
            backend.put_item(name, self.op["Item"])
        elif self.kind == "Delete":
            backend.delete_item(name, self.key)
        elif self.kind == "Update":
            backend.update_item(
                name,
                self.key,
                update_expression=self.op["UpdateExpression"],
                # As moto's UpdateItem handler passes them: undefined names are then refused as
                # DynamoDB refuses them (a ValidationException), not a TypeError.
                expression_attribute_names=self.op.get("ExpressionAttributeNames", {}),
                expression_attribute_values=self.op.get("ExpressionAttributeValues", {}),
            )


class _Journal:
    """What undoing a transaction's writes needs: each item it names as it was before (a copy:
    moto updates items in place), and where each table's stream ended."""

    def __init__(self) -> None:
        self._before: list[tuple[_Write, Item | None]] = []
        self._streams: dict[int, tuple[StreamShard, int]] = {}

    def keep(self, write: _Write) -> None:
        self._before.append((write, copy.deepcopy(write.current())))
        shard = write.table.stream_shard
        if shard is not None:
            self._streams.setdefault(id(shard), (shard, len(shard.items)))

    def undo(self) -> None:
        for write, item in reversed(self._before):
            # moto keeps items by hash key, or by hash key then range key.
            items: dict[DynamoType, Any] = write.table.items
            key = write.hash_key
            if write.range_key is not None:
                items, key = items[write.hash_key], write.range_key
            if item is None:
                items.pop(key, None)
            else:
                items[key] = item
        for shard, length in self._streams.values():
            del shard.items[length:]


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """DynamoDB's ``TransactWriteItems``: every condition against the state before it, then every
    write, or none of them."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    writes = [_Write(self, entry) for entry in transact_items]
    if len({write.identity for write in writes}) < len(writes):
        raise MultipleTransactionsException()
    reasons = [write.refusal() for write in writes]
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    journal = _Journal()
    for index, write in enumerate(writes):
        journal.keep(write)
        try:
            write.apply(self)
        except MockValidationException:
            journal.undo()
            raise
        except Exception as exc:
            journal.undo()
            reasons[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(reasons) from exc


def install_journaled_transactions() -> None:
    """Make moto's transactions cost what the items they name cost, and leave the table's stream
    as DynamoDB does (see the module's docstring)."""
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    Item.instances_tracked = _Untracked()  # type: ignore[attr-defined]
    StreamRecord.instances_tracked = _Untracked()  # type: ignore[attr-defined]


def _export_of_token(exports: Iterable[Any], token: str) -> AwsLayoutExport | None:
    now = datetime.now(UTC)
    for export in exports:
        if (
            isinstance(export, AwsLayoutExport)
            and export.client_token == token
            and now - export.start_time < EXPORT_TOKEN_LIFETIME
        ):
            return export
    return None


def _export_parameters(request: dict[str, Any]) -> dict[str, Any]:
    """What a repeated request with the same client token must repeat."""
    return {name: value for name, value in request.items() if name != "ClientToken"}


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _data_file_name() -> str:
    """Like DynamoDB's: 26 characters of lower-case base32."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


class Serialised:
    """WSGI middleware: requests reach ``app`` one at a time, responses fully produced."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    # What MOTO_DISABLE_GLOBAL_CORS does, read when moto's backends are created (on first use).
    werkzeug_app.DISABLE_GLOBAL_CORS = True  # type: ignore[attr-defined]
    install_table_exports()
    install_journaled_transactions()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        PostCors(PostPolicy(Mailbox(Serialised(app)))),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
