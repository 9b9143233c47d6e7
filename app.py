"""The HTTP edge and composition root: routes, the authorizer, dependencies, error mapping."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from chalice.app import AuthRequest, AuthResponse, Chalice, CORSConfig, Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib import logs
from chalicelib import responses as R
from chalicelib.accounts import (
    AccountDisabled,
    Accounts,
    InvalidCredentials,
    SessionNotFound,
    SignedIn,
    TokenRevoked,
)
from chalicelib.administration import Administration
from chalicelib.clock import Clock, ShiftedClock, iso, utc_now
from chalicelib.deletion import AccountPurge, DynamoDBPartitionRepository
from chalicelib.events import Client, DynamoDBSecurityEventRepository, SecurityEvents
from chalicelib.items import (
    STATUSES,
    DynamoDBItemRepository,
    Item,
    ItemNotFound,
    Items,
    VersionMismatch,
)
from chalicelib.keys import ConcurrentChange, OwnerMissing
from chalicelib.limits import (
    DynamoDBLimitRepository,
    IpRateLimiter,
    LoginThrottle,
    TooManyAttempts,
)
from chalicelib.openapi import Operation, document
from chalicelib.paging import InvalidCursor
from chalicelib.passwords import DEFAULT_COST, ScryptCost, ScryptHasher
from chalicelib.payloads import (
    ItemPatch,
    ItemWrite,
    LoginRequest,
    PasswordChangeRequest,
    PasswordConfirmation,
    Payload,
    RefreshRequest,
    SignupRequest,
    UploadStart,
    UserCreate,
    UserUpdate,
)
from chalicelib.policy import WeakPassword
from chalicelib.rotation import RotationError, SigningKeyRotation
from chalicelib.sessions import DynamoDBSessionRepository, InvalidRefreshToken, Sessions
from chalicelib.settings import (
    EDGE_HEADER,
    Settings,
    api_key_required,
    authorizer_ttl_seconds,
    cors_allow_origin,
)
from chalicelib.tokens import CachedKeys, InvalidToken, SecretsManagerKeySource, TokenService
from chalicelib.uploads import (
    DynamoDBUploadRepository,
    Upload,
    UploadIncomplete,
    UploadNotFound,
    UploadRejected,
    Uploads,
)
from chalicelib.users import (
    DynamoDBUserRepository,
    User,
    UsernameTaken,
    UserNotFound,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

app = Chalice(app_name="gatehouse", configure_logs=False)
logger = logging.getLogger("gatehouse")
logs.configure("INFO")  # the level is adjusted once settings are read

# API Gateway caches one authorizer answer per token for this long, so it bounds how long a
# revoked token keeps working. It is baked into the API definition when Chalice packages the
# app, which is why it is read here rather than from the runtime settings.
AUTHORIZER_TTL_SECONDS = authorizer_ttl_seconds(os.environ)
API_VERSION = "1.0.0"
# Room for an item's 32 KiB of data plus its other fields.
MAX_BODY_BYTES = 64 * 1024
UNSUPPORTED_MEDIA_TYPE = "Content-Type must be application/json"
REFRESH_COOKIE = "gatehouse_refresh"
NO_SESSION = "Session expired or revoked; please log in again"
# A header no cross-site form can send, and that makes any cross-origin fetch preflight.
CSRF_HEADER = "X-Requested-With"
# The site calls the API on its own origin (/api/*) and needs no CORS. Only the optional API
# domain (api.<domain>) answers scripts on the site's origin; also baked in at packaging time.
CORS_ALLOW_ORIGIN = cors_allow_origin(os.environ)
if CORS_ALLOW_ORIGIN is not None:
    app.api.cors = CORSConfig(
        allow_origin=CORS_ALLOW_ORIGIN,
        allow_headers=["If-Match", CSRF_HEADER],
        expose_headers=["ETag", "Retry-After", "X-Request-Id"],
        max_age=600,
    )
# Shapes of ids in paths, checked before they become keys (DynamoDB refuses keys over 1 KB).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")
ITEM_ID = re.compile(r"[0-9a-f]{28}")
MAX_USERNAME = 128
# botocore's own retries (standard mode) absorb brief throttling before we answer 503.
BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)
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


class Dependencies:
    """Everything the routes use, each built on first use and then kept for the container."""

    def __init__(
        self, *, clock: Clock | None = None, scrypt_cost: ScryptCost = DEFAULT_COST
    ) -> None:
        self._injected_clock = clock
        self._scrypt_cost = scrypt_cost

    @cached_property
    def _clock(self) -> Clock:
        if self._injected_clock is not None:
            return self._injected_clock
        offset_file = self.settings.clock_offset_file
        return utc_now if offset_file is None else ShiftedClock(Path(offset_file))

    @cached_property
    def settings(self) -> Settings:
        # Read at first use, not at import: chalice's test client swaps os.environ per request.
        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level)
        return settings

    @cached_property
    def table(self) -> Table:
        dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
        return dynamodb.Table(self.settings.table_name)

    # One repository per aggregate, each built once over the table.

    @cached_property
    def user_repository(self) -> DynamoDBUserRepository:
        return DynamoDBUserRepository(self.table)

    @cached_property
    def session_repository(self) -> DynamoDBSessionRepository:
        return DynamoDBSessionRepository(self.table)

    @cached_property
    def item_repository(self) -> DynamoDBItemRepository:
        return DynamoDBItemRepository(self.table)

    @cached_property
    def upload_repository(self) -> DynamoDBUploadRepository:
        return DynamoDBUploadRepository(self.table)

    @cached_property
    def event_repository(self) -> DynamoDBSecurityEventRepository:
        return DynamoDBSecurityEventRepository(self.table)

    @cached_property
    def limit_repository(self) -> DynamoDBLimitRepository:
        return DynamoDBLimitRepository(self.table)

    @cached_property
    def partition_repository(self) -> DynamoDBPartitionRepository:
        return DynamoDBPartitionRepository(self.table)

    @cached_property
    def secrets(self) -> SecretsManagerClient:
        return boto3.client("secretsmanager", config=BOTO_CONFIG)

    @cached_property
    def tokens(self) -> TokenService:
        settings = self.settings
        keys = CachedKeys(
            SecretsManagerKeySource(self.secrets, settings.jwt_secret_id),
            max_age=timedelta(seconds=settings.signing_key_cache_seconds),
            clock=self._clock,
        )
        return TokenService(
            keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
            clock=self._clock,
        )

    @cached_property
    def accounts(self) -> Accounts:
        settings = self.settings
        sessions = Sessions(
            self.session_repository,
            absolute=timedelta(seconds=settings.refresh_absolute_seconds),
            idle=timedelta(seconds=settings.refresh_idle_seconds),
            grace=timedelta(seconds=settings.refresh_grace_seconds),
            clock=self._clock,
        )
        throttle = LoginThrottle(
            self.limit_repository,
            free_failures=settings.login_free_failures,
            max_backoff=settings.login_max_backoff_seconds,
            window=settings.login_failure_window_seconds,
            clock=self._clock,
        )
        return Accounts(
            self.user_repository,
            hasher=ScryptHasher(self._scrypt_cost),
            tokens=self.tokens,
            sessions=sessions,
            throttle=throttle,
            events=self.events,
            purge=self.purge,
            clock=self._clock,
        )

    @cached_property
    def events(self) -> SecurityEvents:
        return SecurityEvents(self.event_repository, clock=self._clock)

    @cached_property
    def s3(self) -> S3Client:
        return boto3.client("s3", config=BOTO_CONFIG)

    @cached_property
    def purge(self) -> AccountPurge:
        bucket = self.settings.uploads_bucket
        return AccountPurge(
            self.partition_repository, s3=self.s3 if bucket else None, bucket=bucket
        )

    @cached_property
    def administration(self) -> Administration:
        return Administration(
            self.user_repository,
            accounts=self.accounts,
            purge=self.purge,
            events=self.events,
            clock=self._clock,
        )

    @cached_property
    def items(self) -> Items:
        return Items(self.item_repository, clock=self._clock)

    @cached_property
    def uploads(self) -> Uploads:
        bucket = self.settings.uploads_bucket
        if bucket is None:
            raise HttpError(503, "Uploads are not configured (UPLOADS_BUCKET)")
        return Uploads(self.upload_repository, self.s3, bucket=bucket, clock=self._clock)

    @cached_property
    def ip_limiter(self) -> IpRateLimiter:
        return IpRateLimiter(
            self.limit_repository,
            limit=self.settings.ip_rate_limit,
            window=self.settings.ip_rate_window_seconds,
            clock=self._clock,
        )


dependencies = Dependencies()
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # In Lambda, a missing or bad variable fails the cold start with its name in the error.
    dependencies.settings  # noqa: B018


class HttpError(Exception):
    """An error answer: status, message and optional headers."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


def _error_for(exc: Exception) -> HttpError | None:
    """The one mapping from domain and AWS errors to HTTP answers; None means a bug (500)."""
    simple: dict[type[Exception], tuple[int, str]] = {
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
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, VersionMismatch):
        error = HttpError(412, "The item has changed since you read it", currentVersion=exc.current)
        error.headers["ETag"] = f'"{exc.current}"'
        return error
    if isinstance(exc, UploadRejected):
        return HttpError(400, str(exc))
    if isinstance(exc, UploadIncomplete):
        return HttpError(409, str(exc))
    if isinstance(exc, WeakPassword):
        return HttpError(400, str(exc))
    if isinstance(exc, TooManyAttempts):
        error = HttpError(429, "Too many attempts; try again later", retryAfter=exc.retry_after)
        error.headers["Retry-After"] = str(exc.retry_after)
        return error
    for kind, (status, message) in simple.items():
        if isinstance(exc, kind):
            return HttpError(status, message)
    unavailable = isinstance(exc, BotoConnectionError | HTTPClientError) or (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code") in _UNAVAILABLE_CODES
    )
    if unavailable:
        logger.warning(
            "aws unavailable", extra={"fields": {"error": type(exc).__name__, "detail": str(exc)}}
        )
        error = HttpError(503, "Service temporarily unavailable, please retry")
        error.headers["Retry-After"] = "1"
        return error
    return None


View = TypeVar("View", bound=Callable[..., Response])
# With usage plans (cdk context apiKeys), API Gateway answers 403 to any request without a key:
# CloudFront sends the site's own, machine clients each have theirs. Fixed at packaging time.
API_KEY_REQUIRED = api_key_required(os.environ)


def route(path: str, **options: Any) -> Callable[[View], View]:
    """``app.route`` with the deployment's API-key requirement."""
    register: Callable[[View], View] = app.route(path, api_key_required=API_KEY_REQUIRED, **options)
    return register


# What each view promises, for the generated OpenAPI document; keyed by view name.
_DOCS: dict[str, dict[str, Any]] = {}


def doc(
    summary: str,
    response: type[BaseModel],
    *,
    status: int = 200,
    request: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    admin: bool = False,
    query: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
) -> Callable[[View], View]:
    def register(view: View) -> View:
        _DOCS[view.__name__] = {
            "summary": summary,
            "response": response,
            "status": status,
            "request": request,
            "errors": errors + ((403,) if admin else ()),
            "admin": admin,
            "query": query,
            "headers": headers,
        }
        return view

    return register


def endpoint(view: View) -> View:
    """Turn exceptions a view raises into JSON error answers (unknown ones stay 500s)."""

    @functools.wraps(view)
    def handle(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except Exception as exc:
            error = _error_for(exc)
            if error is None:
                raise
            return _json(error.status, {"message": error.message, **error.extra}, error.headers)

    return handle  # type: ignore[return-value]


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str | list[str]] | None = None
) -> Response:
    return Response(
        body=json.dumps(body),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


PayloadT = TypeVar("PayloadT", bound=Payload)


def parse(model: type[PayloadT]) -> PayloadT:
    """Validate the current request's JSON body against ``model`` or raise a 4xx ``HttpError``."""
    request = _request()
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HttpError(415, UNSUPPORTED_MEDIA_TYPE)
    raw = request.raw_body
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: a few kilobytes of "[[[[..." nest deeper than the parser allows.
        raise HttpError(400, "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "Request body must be a JSON object")
    try:
        # JSON may spell lone surrogates ("\\ud800"), which DynamoDB cannot store.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, "Request body contains invalid Unicode") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Field names and reasons only: never echo the input, which may be a password.
        errors = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or "body",
                "reason": error["msg"],
            }
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        summary = "; ".join(f"{error['field']}: {error['reason']}" for error in errors)
        raise HttpError(400, f"Invalid request: {summary}", errors=errors) from None


PROFILE_FIELDS = ("username", "createdAt", "role", "updatedAt")


def _profile(user: User) -> dict[str, str]:
    profile = {"username": user.username, "createdAt": user.created_at, "role": user.role}
    if user.updated_at is not None:
        profile["updatedAt"] = user.updated_at
    return profile


def _deny(auth_request: AuthRequest) -> dict[str, Any]:
    # An explicit Deny: Chalice's AuthResponse(routes=[]) is an Allow on no resources.
    return {
        "principalId": "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Deny",
                    "Resource": auth_request.method_arn,
                }
            ],
        },
    }


@app.authorizer(ttl_seconds=AUTHORIZER_TTL_SECONDS)
def bearer(auth_request: AuthRequest) -> AuthResponse | dict[str, Any]:
    scheme, _, token = (auth_request.token or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _deny(auth_request)
    try:
        claims = dependencies.tokens.verify(token.strip())
        # One profile read: a logout-everywhere, password change or disable revokes at once.
        user = dependencies.accounts.authorize(claims)
    except (InvalidToken, TokenRevoked):
        return _deny(auth_request)
    except Exception:
        # Never raise from an authorizer: API Gateway would answer 500 for every route.
        logger.exception("authorizer failed")
        return _deny(auth_request)
    # One policy for every route: API Gateway caches it per token and reuses it everywhere.
    # The profile rides along in the context, so routes need not read it again.
    return AuthResponse(
        routes=["*"],
        principal_id=user.username,
        context={**_profile(user), "sessionId": claims.session_id},
    )


def _request() -> Request:
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request outside a route")
    return request


def _caller() -> dict[str, str]:
    """The authorizer's context: the profile (username, role, createdAt, ...) and sessionId."""
    context = _request().context.get("authorizer") or {}
    if "username" not in context:
        raise HttpError(401, "Unauthorized")
    return {key: str(value) for key, value in context.items()}


def _client() -> Client:
    request = _request()
    address = str((request.context.get("identity") or {}).get("sourceIp") or "unknown")
    hops = dependencies.settings.trusted_proxy_hops
    if hops and _through_edge(request):
        # Behind N trusted proxies (CloudFront), the client is the Nth address from the right;
        # anything further left was written by the client and cannot be trusted.
        forwarded = request.headers.get("x-forwarded-for", "").split(",")
        forwarded = [part.strip() for part in forwarded if part.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return Client(ip=_rate_key(address), user_agent=request.headers.get("user-agent", "")[:200])


def _through_edge(request: Request) -> bool:
    """Whether the request came through our CDN, which alone may vouch for forwarded headers.

    With ``EDGE_SECRET`` set, CloudFront adds it as ``EDGE_HEADER``; a caller of the API
    Gateway endpoint itself lacks it, so its ``X-Forwarded-For`` cannot pick its rate-limit key.
    """
    secret = dependencies.settings.edge_secret
    if secret is None:
        return True
    presented = request.headers.get(EDGE_HEADER, "")
    return hmac.compare_digest(presented.encode("utf-8"), secret.encode("utf-8"))


def _rate_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64, which one subscriber usually holds."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _limited() -> Client:
    """The caller, after counting the request against the per-IP limit of the auth routes."""
    client = _client()
    dependencies.ip_limiter.hit(client.ip)
    return client


def _refresh_cookie(value: str, max_age: int) -> str:
    settings = dependencies.settings
    parts = [
        f"{REFRESH_COOKIE}={value}",
        f"Path={settings.refresh_cookie_path}",
        f"Max-Age={max_age}",
        "HttpOnly",
        "SameSite=Strict",
    ]
    # Only the local dev stage, served over plain http, turns Secure off.
    if settings.refresh_cookie_secure:
        parts.append("Secure")
    return "; ".join(parts)


def _cookie_token() -> str | None:
    # Split by hand: SimpleCookie gives up on the whole header over one odd cookie of a
    # neighbouring app, which would make refresh impossible in that browser.
    for pair in _request().headers.get("cookie", "").split(";"):
        name, _, value = pair.strip().partition("=")
        if name == REFRESH_COOKIE and value:
            return str(value)
    return None


def _refuse_cross_site() -> None:
    """Cookie-borne requests must come from an allowed origin and carry our custom header."""
    request = _request()
    origin = request.headers.get("origin", "").rstrip("/")
    allowed = dependencies.settings.allowed_origins
    edge_header = dependencies.settings.site_origin_header
    if edge_header and _through_edge(request):
        # Set by our CloudFront function to the origin the browser used, whatever it sent; it
        # names the site's origin where that is not known before deployment (no custom domain).
        allowed = allowed | {request.headers.get(edge_header, "").rstrip("/")} - {""}
    if origin not in allowed:
        raise HttpError(403, "Cross-site request refused: origin not allowed")
    if not request.headers.get(CSRF_HEADER):
        raise HttpError(403, f"Cross-site request refused: {CSRF_HEADER} header required")


def _signed_in(signed_in: SignedIn, *, status: int, message: str, delivery: str) -> Response:
    body: dict[str, Any] = {
        "message": message,
        "token": signed_in.access.token,
        "username": signed_in.user.username,
        "expiresIn": signed_in.access.expires_in,
        "sessionId": signed_in.session.session_id,
    }
    headers: dict[str, str] = {}
    if signed_in.refresh is not None:
        lifetime = signed_in.refresh_expires_in
        if delivery == "body":
            body["refreshToken"] = signed_in.refresh.encode()
            body["refreshExpiresIn"] = lifetime
        else:
            headers["Set-Cookie"] = _refresh_cookie(signed_in.refresh.encode(), lifetime)
    return _json(status, body, headers)


def _page_limit() -> tuple[int, str | None]:
    params: Mapping[str, str] = _request().query_params or {}
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        raise HttpError(400, "limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise HttpError(400, "limit must be between 1 and 100")
    return limit, params.get("cursor")


def _events_page(username: str) -> Response:
    limit, cursor = _page_limit()
    page = dependencies.accounts.events(username, limit=limit, cursor=cursor)
    events = [
        {
            "type": event.kind,
            "at": event.at,
            "ip": event.ip,
            "userAgent": event.user_agent,
            "details": event.details,
        }
        for event in page.events
    ]
    return _json(200, {"events": events, "nextCursor": page.cursor})


@route("/health", methods=["GET"])
@doc("Liveness check", R.Health)
@endpoint
def health() -> Response:
    return _json(200, {"status": "ok"})


@route("/auth/signup", methods=["POST"])
@doc("Create an account", R.SignedUp, status=201, request=SignupRequest, errors=(409, 429))
@endpoint
def signup() -> Response:
    client = _limited()
    body = parse(SignupRequest)
    user = dependencies.accounts.register(body.username, body.password, client)
    return _json(201, {"message": "User created successfully", "username": user.username})


@route("/auth/login", methods=["POST"])
@doc(
    "Log in: an access token and a session (refresh token as cookie or in the body)",
    R.SignedIn,
    request=LoginRequest,
    errors=(401, 403, 429),
)
@endpoint
def login() -> Response:
    client = _limited()
    body = parse(LoginRequest)
    signed_in = dependencies.accounts.login(body.username, body.password, client)
    return _signed_in(
        signed_in, status=200, message="Login successful", delivery=body.refreshTokenDelivery
    )


@route("/auth/refresh", methods=["POST"])
@doc(
    "Rotate the refresh token (cookie with Origin and X-Requested-With, or body)",
    R.SignedIn,
    request=RefreshRequest,
    errors=(401, 403, 429),
)
@endpoint
def refresh() -> Response:
    client = _limited()
    cookie = _cookie_token()
    if cookie is not None:
        _refuse_cross_site()
        raw, delivery = cookie, "cookie"
    elif not _request().raw_body:
        # No cookie and no body: a browser that holds no session (or whose cookie expired).
        raise HttpError(401, NO_SESSION)
    else:
        raw, delivery = parse(RefreshRequest).refreshToken, "body"
    try:
        signed_in = dependencies.accounts.refresh(raw, client)
    except InvalidRefreshToken:
        response = _json(401, {"message": NO_SESSION})
        if delivery == "cookie":
            response.headers["Set-Cookie"] = _refresh_cookie("", 0)
        return response
    return _signed_in(signed_in, status=200, message="Token refreshed", delivery=delivery)


@route("/auth/logout", methods=["POST"], authorizer=bearer)
@doc("End this session", R.Message)
@endpoint
def logout() -> Response:
    caller = _caller()
    dependencies.accounts.logout(caller["username"], caller["sessionId"])
    return _json(200, {"message": "Logged out"}, {"Set-Cookie": _refresh_cookie("", 0)})


@route("/auth/logout-all", methods=["POST"], authorizer=bearer)
@doc("End every session and revoke every access token", R.Message)
@endpoint
def logout_all() -> Response:
    caller = _caller()
    dependencies.accounts.logout_all(caller["username"], _client())
    return _json(200, {"message": "Logged out everywhere"}, {"Set-Cookie": _refresh_cookie("", 0)})


@route("/auth/user", methods=["GET"], authorizer=bearer)
@doc("The caller's profile", R.Profile)
@endpoint
def current_user() -> Response:
    caller = _caller()
    # As fresh as the authorizer's answer: read at most AUTHORIZER_TTL_SECONDS ago.
    return _json(200, {key: caller[key] for key in PROFILE_FIELDS if key in caller})


@route("/auth/password", methods=["POST"], authorizer=bearer)
@doc(
    "Change the password; other sessions end",
    R.SignedIn,
    request=PasswordChangeRequest,
    errors=(429,),
)
@endpoint
def change_password() -> Response:
    caller = _caller()
    body = parse(PasswordChangeRequest)
    signed_in = dependencies.accounts.change_password(
        caller["username"], body.currentPassword, body.newPassword, _limited()
    )
    # The caller's old refresh token died with its session: hand over the new session's one.
    return _signed_in(
        signed_in, status=200, message="Password changed", delivery=body.refreshTokenDelivery
    )


@route("/auth/sessions", methods=["GET"], authorizer=bearer)
@doc("The caller's live sessions", R.SessionList)
@endpoint
def list_sessions() -> Response:
    caller = _caller()
    sessions = [
        {
            "id": session.session_id,
            "createdAt": iso(datetime.fromtimestamp(session.created_at, UTC)),
            "lastUsedAt": iso(datetime.fromtimestamp(session.last_used_at, UTC)),
            "expiresAt": iso(
                datetime.fromtimestamp(min(session.expires_at, session.idle_expires_at), UTC)
            ),
            "userAgent": session.user_agent,
            "current": session.session_id == caller["sessionId"],
        }
        for session in dependencies.accounts.list_sessions(caller["username"])
    ]
    return _json(200, {"sessions": sessions})


@route("/auth/sessions/{session_id}", methods=["DELETE"], authorizer=bearer)
@doc("End one of the caller's sessions", R.Message, errors=(404,))
@endpoint
def end_session(session_id: str) -> Response:
    if not SESSION_ID.fullmatch(session_id):
        raise SessionNotFound(session_id)
    dependencies.accounts.end_session(_caller()["username"], session_id)
    return _json(200, {"message": "Session ended"})


@route("/auth/events", methods=["GET"], authorizer=bearer)
@doc(
    "The caller's security events, newest first",
    R.EventList,
    errors=(400,),
    query=("limit", "cursor"),
)
@endpoint
def own_events() -> Response:
    return _events_page(_caller()["username"])


@route("/users/{username}/events", methods=["GET"], authorizer=bearer)
@doc(
    "Anyone's security events",
    R.EventList,
    errors=(400, 404),
    admin=True,
    query=("limit", "cursor"),
)
@endpoint
def user_events(username: str) -> Response:
    _require_admin()
    return _events_page(_username_param(username))


def _item_json(item: Item) -> dict[str, Any]:
    return {
        "id": item.item_id,
        "name": item.name,
        "data": item.data,
        "status": item.status,
        "createdAt": item.created_at,
        "updatedAt": item.updated_at,
        "version": item.version,
    }


def _item_response(item: Item, status: int = 200) -> Response:
    return _json(status, _item_json(item), {"ETag": f'"{item.version}"'})


def _if_match() -> int | None:
    """The version the client's change is based on, from its If-Match ETag."""
    raw = _request().headers.get("if-match")
    if raw is None:
        return None
    match = re.fullmatch(r'\s*(?:W/)?"(\d{1,18})"\s*', raw)
    if match is None:
        raise HttpError(412, "If-Match does not match the item's current ETag")
    return int(match.group(1))


def _required_if_match() -> int:
    version = _if_match()
    if version is None:
        raise HttpError(428, "If-Match header required: send the ETag of the item you read")
    return version


def _item_id(raw: str) -> str:
    if not ITEM_ID.fullmatch(raw):
        raise ItemNotFound(raw)
    return raw


def _status_param() -> str | None:
    params: Mapping[str, str] = _request().query_params or {}
    status = params.get("status")
    if status is not None and status not in STATUSES:
        raise HttpError(400, f"status must be one of {', '.join(STATUSES)}")
    return status


def _require_admin() -> dict[str, str]:
    caller = _caller()
    if caller.get("role") != "admin":
        raise HttpError(403, "Administrator role required")
    return caller


@route("/items", methods=["POST"], authorizer=bearer)
@doc("Create an item", R.ItemView, status=201, request=ItemWrite)
@endpoint
def create_item() -> Response:
    body = parse(ItemWrite)
    item = dependencies.items.create(
        _caller()["username"], name=body.name, data=body.data, status=body.status
    )
    response = _item_response(item, 201)
    response.headers["Location"] = f"/items/{item.item_id}"
    return response


@route("/items", methods=["GET"], authorizer=bearer)
@doc(
    "The caller's items, newest first",
    R.ItemList,
    errors=(400,),
    query=("status", "limit", "cursor"),
)
@endpoint
def list_items() -> Response:
    limit, cursor = _page_limit()
    status = _status_param()
    page = dependencies.items.list(_caller()["username"], status=status, limit=limit, cursor=cursor)
    return _json(200, {"items": [_item_json(i) for i in page.items], "nextCursor": page.cursor})


@route("/items/{item_id}", methods=["GET"], authorizer=bearer)
@doc("One item (with its ETag)", R.ItemView, errors=(404,))
@endpoint
def get_item(item_id: str) -> Response:
    item_id = _item_id(item_id)
    return _item_response(dependencies.items.get(_caller()["username"], item_id))


@route("/items/{item_id}", methods=["PUT"], authorizer=bearer)
@doc(
    "Replace an item (If-Match required)",
    R.ItemView,
    request=ItemWrite,
    errors=(404, 412, 428),
    headers=("If-Match",),
)
@endpoint
def replace_item(item_id: str) -> Response:
    item_id = _item_id(item_id)
    version = _required_if_match()
    body = parse(ItemWrite)
    item = dependencies.items.replace(
        _caller()["username"],
        item_id,
        expected_version=version,
        name=body.name,
        data=body.data,
        status=body.status,
    )
    return _item_response(item)


@route("/items/{item_id}", methods=["PATCH"], authorizer=bearer)
@doc(
    "Change some fields of an item (If-Match required)",
    R.ItemView,
    request=ItemPatch,
    errors=(404, 412, 428),
    headers=("If-Match",),
)
@endpoint
def patch_item(item_id: str) -> Response:
    item_id = _item_id(item_id)
    version = _required_if_match()
    body = parse(ItemPatch)
    item = dependencies.items.patch(
        _caller()["username"],
        item_id,
        expected_version=version,
        name=body.name,
        data=body.data,
        status=body.status,
    )
    return _item_response(item)


@route("/items/{item_id}", methods=["DELETE"], authorizer=bearer)
@doc("Delete an item (If-Match optional)", R.Message, errors=(404, 412), headers=("If-Match",))
@endpoint
def delete_item(item_id: str) -> Response:
    item_id = _item_id(item_id)
    version = _if_match()
    dependencies.items.delete(_caller()["username"], item_id, expected_version=version)
    return _json(200, {"message": "Item deleted"})


@route("/admin/items", methods=["GET"], authorizer=bearer)
@doc(
    "Everyone's items with a status, newest first",
    R.ItemList,
    errors=(400,),
    admin=True,
    query=("status", "limit", "cursor"),
)
@endpoint
def admin_items() -> Response:
    _require_admin()
    limit, cursor = _page_limit()
    status = _status_param()
    if status is None:
        raise HttpError(400, f"status is required: one of {', '.join(STATUSES)}")
    page = dependencies.items.by_status(status, limit=limit, cursor=cursor)
    items = [{**_item_json(i), "owner": i.owner} for i in page.items]
    return _json(200, {"items": items, "nextCursor": page.cursor})


def _admin_user_json(user: User) -> dict[str, Any]:
    return {**_profile(user), "disabled": user.disabled}


def _username_param(raw: str) -> str:
    username = unquote(raw)
    if len(username) > MAX_USERNAME:
        raise UserNotFound(username)
    return username


@route("/auth/user", methods=["DELETE"], authorizer=bearer)
@doc(
    "Delete the caller's account and everything in it",
    R.Message,
    request=PasswordConfirmation,
    errors=(429,),
)
@endpoint
def delete_own_account() -> Response:
    body = parse(PasswordConfirmation)
    dependencies.accounts.delete_account(_caller()["username"], body.password, _limited())
    return _json(200, {"message": "Account deleted"}, {"Set-Cookie": _refresh_cookie("", 0)})


@route("/users", methods=["GET"], authorizer=bearer)
@doc("Every user", R.UserList, errors=(400,), admin=True, query=("limit", "cursor"))
@endpoint
def list_users() -> Response:
    _require_admin()
    limit, cursor = _page_limit()
    page = dependencies.administration.list_users(limit=limit, cursor=cursor)
    users = [_admin_user_json(user) for user in page.users]
    return _json(200, {"users": users, "nextCursor": page.cursor})


@route("/users", methods=["POST"], authorizer=bearer)
@doc(
    "Create a user with a role",
    R.AdminUser,
    status=201,
    request=UserCreate,
    errors=(409,),
    admin=True,
)
@endpoint
def create_user() -> Response:
    admin = _require_admin()
    body = parse(UserCreate)
    user = dependencies.administration.create_user(
        body.username, body.password, role=body.role, admin=admin["username"], client=_client()
    )
    return _json(201, _admin_user_json(user))


@route("/users/{username}", methods=["GET"], authorizer=bearer)
@doc("One user", R.AdminUser, errors=(404,), admin=True)
@endpoint
def get_user(username: str) -> Response:
    _require_admin()
    return _json(200, _admin_user_json(dependencies.administration.get(_username_param(username))))


@route("/users/{username}", methods=["PUT", "PATCH"], authorizer=bearer)
@doc(
    "Change a user's role or disabled flag (PUT: both)",
    R.AdminUser,
    request=UserUpdate,
    errors=(404,),
    admin=True,
)
@endpoint
def update_user(username: str) -> Response:
    admin = _require_admin()
    body = parse(UserUpdate)
    if _request().method == "PUT" and (body.role is None or body.disabled is None):
        raise HttpError(400, "PUT needs both role and disabled; use PATCH to change one")
    user = dependencies.administration.update_user(
        _username_param(username),
        role=body.role,
        disabled=body.disabled,
        admin=admin["username"],
        client=_client(),
    )
    return _json(200, _admin_user_json(user))


@route("/users/{username}", methods=["DELETE"], authorizer=bearer)
@doc("Delete a user and everything they own (idempotent)", R.Message, admin=True)
@endpoint
def delete_user(username: str) -> Response:
    admin = _require_admin()
    dependencies.administration.delete_user(
        _username_param(username), admin=admin["username"], client=_client()
    )
    # Idempotent: deleting an account that is already gone is the same success.
    return _json(200, {"message": "User deleted"})


def _upload_json(upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.upload_id,
        "kind": upload.kind,
        "filename": upload.filename,
        "contentType": upload.content_type,
        "size": upload.size,
        "status": upload.status,
        "createdAt": upload.created_at,
    }


def _upload_id(raw: str) -> str:
    if not ITEM_ID.fullmatch(raw):
        raise UploadNotFound(raw)
    return raw


@route("/uploads", methods=["POST"], authorizer=bearer)
@doc(
    "Start an upload: a presigned POST for the file",
    R.UploadStarted,
    status=201,
    request=UploadStart,
)
@endpoint
def start_upload() -> Response:
    body = parse(UploadStart)
    upload, post = dependencies.uploads.start(
        _caller()["username"],
        filename=body.filename,
        content_type=body.contentType,
        size=body.size,
        kind=body.kind,
    )
    return _json(201, {"upload": _upload_json(upload), "post": post})


@route("/uploads/{upload_id}/complete", methods=["POST"], authorizer=bearer)
@doc("Check the uploaded object and mark the upload ready", R.UploadView, errors=(404, 409))
@endpoint
def complete_upload(upload_id: str) -> Response:
    upload = dependencies.uploads.complete(_caller()["username"], _upload_id(upload_id))
    return _json(200, _upload_json(upload))


@route("/uploads", methods=["GET"], authorizer=bearer)
@doc("The caller's uploads, newest first", R.UploadList, errors=(400,), query=("limit", "cursor"))
@endpoint
def list_uploads() -> Response:
    limit, cursor = _page_limit()
    page = dependencies.uploads.list(_caller()["username"], limit=limit, cursor=cursor)
    uploads = [_upload_json(upload) for upload in page.uploads]
    return _json(200, {"uploads": uploads, "nextCursor": page.cursor})


@route("/uploads/{upload_id}", methods=["GET"], authorizer=bearer)
@doc("One upload, with a short-lived download URL when ready", R.UploadView, errors=(404,))
@endpoint
def get_upload(upload_id: str) -> Response:
    upload = dependencies.uploads.get(_caller()["username"], _upload_id(upload_id))
    body = _upload_json(upload)
    if upload.status == "ready":
        body["downloadUrl"] = dependencies.uploads.download_url(upload)
    return _json(200, body)


@route("/uploads/{upload_id}", methods=["DELETE"], authorizer=bearer)
@doc("Delete an upload and its object", R.Message, errors=(404,))
@endpoint
def delete_upload(upload_id: str) -> Response:
    dependencies.uploads.delete(_caller()["username"], _upload_id(upload_id))
    return _json(200, {"message": "Upload deleted"})


def api_operations() -> list[Operation]:
    """Every route of the route table with what its view promises (KeyError: undocumented)."""
    return [
        Operation(
            method=method,
            path=path,
            bearer=entry.authorizer is not None,
            **_DOCS[entry.view_name],
        )
        for path, methods in app.routes.items()
        for method, entry in methods.items()
    ]


@route("/openapi.json", methods=["GET"])
@doc("This document", R.Answer)
@endpoint
def openapi() -> Response:
    return _json(200, document(api_operations(), title="Gatehouse API", version=API_VERSION))


@app.lambda_function(name="rotate_signing_key")
def rotate_signing_key(event: dict[str, Any], context: Any) -> None:
    """Secrets Manager's rotation function for the JWT signing key (scheduled by the infra)."""
    if event["SecretId"] not in {dependencies.settings.jwt_secret_id}:
        # ARN or name: Secrets Manager sends the ARN; accept only the configured secret.
        description = dependencies.secrets.describe_secret(SecretId=event["SecretId"])
        if dependencies.settings.jwt_secret_id not in {description["ARN"], description["Name"]}:
            raise RotationError("this function rotates only the configured signing key")
    SigningKeyRotation(dependencies.secrets).run(
        step=event["Step"], secret_id=event["SecretId"], token=event["ClientRequestToken"]
    )


@app.middleware("http")
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
        return _json(response.status_code, {"message": message}, response.headers)
    return response
