"""The one mapping from domain and AWS errors to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from chalicelib.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unauthenticated
from chalicelib.items import VersionMismatch
from chalicelib.keys import ReadThrottled, error_code
from chalicelib.limits import TooManyAttempts
from chalicelib.web.gateway import UNAVAILABLE

logger = logging.getLogger("gatehouse")


class HttpError(Exception):
    """An error answer: status, message, extra body fields and headers."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers = headers or {}


# Each kind of domain error has one status; the error itself says what the caller reads.
_STATUS: dict[type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    DomainError: 400,
}
# AWS error codes that mean "not now" rather than "never": throttling and outages.
_UNAVAILABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalServerError",
        "InternalFailure",
        "InternalServiceError",
        # SES: sending paused or over quota, the account suspended, or (in the sandbox) an
        # unverified recipient: the operator's to fix, not the caller's.
        "LimitExceededException",
        "SendingPausedException",
        "AccountSuspendedException",
        "MessageRejected",
    }
)


def http_error(exc: Exception) -> HttpError | None:
    """The answer for ``exc``; None means a bug (a 500)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, VersionMismatch):
        return HttpError(
            412,
            "The item has changed since you read it",
            headers={"ETag": f'"{exc.current}"'},
            currentVersion=exc.current,
        )
    if isinstance(exc, TooManyAttempts):
        return HttpError(
            429,
            "Too many attempts; try again later",
            headers={"Retry-After": str(exc.retry_after)},
            retryAfter=exc.retry_after,
        )
    if isinstance(exc, DomainError):
        status = next(code for kind, code in _STATUS.items() if isinstance(exc, kind))
        return HttpError(status, exc.public_message)
    if aws_unavailable(exc):
        return HttpError(503, UNAVAILABLE, headers={"Retry-After": "1"})
    return None


def aws_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` is AWS throttling or an outage (logged), not a bug or a refusal."""
    unavailable = isinstance(exc, BotoConnectionError | HTTPClientError | ReadThrottled) or (
        isinstance(exc, ClientError) and error_code(exc) in _UNAVAILABLE_CODES
    )
    if unavailable:
        logger.warning(
            "aws unavailable", extra={"fields": {"error": type(exc).__name__, "detail": str(exc)}}
        )
    return unavailable
