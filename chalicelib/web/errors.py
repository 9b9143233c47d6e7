"""The one mapping from domain and AWS errors to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from chalicelib.accounts import AccountDisabled, InvalidCredentials, SessionNotFound
from chalicelib.items import ItemNotFound, VersionMismatch
from chalicelib.keys import ConcurrentChange, OwnerMissing, error_code
from chalicelib.limits import TooManyAttempts
from chalicelib.paging import InvalidCursor
from chalicelib.policy import WeakPassword
from chalicelib.sessions import InvalidRefreshToken
from chalicelib.uploads import UploadIncomplete, UploadNotFound, UploadRejected
from chalicelib.users import UsernameTaken, UserNotFound
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


# Errors whose answer is fixed.
_FIXED: dict[type[Exception], tuple[int, str]] = {
    UsernameTaken: (409, "Username is already taken"),
    InvalidCredentials: (401, "Invalid username or password"),
    AccountDisabled: (403, "Account is disabled"),
    InvalidRefreshToken: (401, "Session expired or revoked; please log in again"),
    UserNotFound: (404, "User not found"),
    SessionNotFound: (404, "Session not found"),
    InvalidCursor: (400, "Invalid pagination cursor"),
    ItemNotFound: (404, "Item not found"),
    OwnerMissing: (401, "Account no longer exists"),
    ConcurrentChange: (409, "A simultaneous change got in the way; please retry"),
    UploadNotFound: (404, "Upload not found"),
}
# Errors whose own words are the message.
_WORDED: dict[type[Exception], int] = {
    UploadRejected: 400,
    WeakPassword: 400,
    UploadIncomplete: 409,
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
    for kind, (status, message) in _FIXED.items():
        if isinstance(exc, kind):
            return HttpError(status, message)
    for kind, status in _WORDED.items():
        if isinstance(exc, kind):
            return HttpError(status, str(exc))
    if aws_unavailable(exc):
        return HttpError(503, UNAVAILABLE, headers={"Retry-After": "1"})
    return None


def aws_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` is AWS throttling or an outage (logged), not a bug or a refusal."""
    unavailable = isinstance(exc, BotoConnectionError | HTTPClientError) or (
        isinstance(exc, ClientError) and error_code(exc) in _UNAVAILABLE_CODES
    )
    if unavailable:
        logger.warning(
            "aws unavailable", extra={"fields": {"error": type(exc).__name__, "detail": str(exc)}}
        )
    return unavailable
