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

Run: ``python -m tools.emulator --host 127.0.0.1 --port 5000``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
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
