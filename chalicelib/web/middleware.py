"""What every answer gets: ``{message}`` errors, security headers and one log line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from chalice.app import Request, Response

from chalicelib.web.http import UNSUPPORTED_MEDIA_TYPE, json_response

logger = logging.getLogger("gatehouse")


def request_log(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """Normalise Chalice's own errors to ``{message}``, add headers, write one log line."""
    started = time.perf_counter()
    response = _normalised(get_response(event))
    context = event.context or {}
    request_id = context.get("requestId") or uuid.uuid4().hex
    response.headers.update(
        {
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "X-Request-Id": request_id,
        }
    )
    fields = {
        "requestId": request_id,
        "method": event.method,
        "route": context.get("resourcePath"),
        "status": response.status_code,
        "latencyMs": round((time.perf_counter() - started) * 1000, 1),
        "username": (context.get("authorizer") or {}).get("username"),
    }
    logger.info("request", extra={"fields": fields})
    return response


def _normalised(response: Response) -> Response:
    body = response.body
    if isinstance(body, dict) and set(body) == {"Code", "Message"}:
        # Chalice's own answers (405, 415, 500) use {"Code", "Message"}; ours use {"message"}.
        fixed = {415: UNSUPPORTED_MEDIA_TYPE, 500: "Internal server error"}
        message = fixed.get(response.status_code, str(body["Message"]))
        return json_response(response.status_code, {"message": message}, response.headers)
    return response
