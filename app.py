"""The HTTP edge and composition root: routes, the authorizer, dependencies, error mapping."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from chalice.app import AuthRequest, AuthResponse, Chalice, Request, Response
from pydantic import ValidationError

from chalicelib import logs
from chalicelib.accounts import Accounts, InvalidCredentials, UserNotFound
from chalicelib.clock import Clock, utc_now
from chalicelib.passwords import DEFAULT_COST, ScryptCost, ScryptHasher
from chalicelib.payloads import LoginRequest, Payload, SignupRequest
from chalicelib.settings import Settings
from chalicelib.tokens import CachedKeys, InvalidToken, SecretsManagerKeySource, TokenService
from chalicelib.users import DynamoDBUserRepository, User, UsernameTaken

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

app = Chalice(app_name="gatehouse", configure_logs=False)
logger = logging.getLogger("gatehouse")
logs.configure("INFO")  # the level is adjusted once settings are read

# API Gateway caches one authorizer answer per token for this long, so it bounds how long a
# revoked token keeps working. It is baked into the API definition when Chalice packages the
# app, which is why it is read here rather than from the runtime settings.
AUTHORIZER_TTL_SECONDS = int(os.environ.get("AUTHORIZER_TTL_SECONDS", "60"))
MAX_BODY_BYTES = 16 * 1024
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
        self,
        env: Mapping[str, str] | None = None,
        *,
        clock: Clock = utc_now,
        scrypt_cost: ScryptCost = DEFAULT_COST,
    ) -> None:
        self._env = env
        self._clock = clock
        self._scrypt_cost = scrypt_cost

    @cached_property
    def settings(self) -> Settings:
        # Read at first use, not at import: chalice's test client swaps os.environ per request.
        settings = Settings.from_env(os.environ if self._env is None else self._env)
        logs.configure(settings.log_level)
        return settings

    @cached_property
    def table(self) -> Table:
        dynamodb = boto3.resource("dynamodb", config=BOTO_CONFIG)
        return dynamodb.Table(self.settings.table_name)

    @cached_property
    def tokens(self) -> TokenService:
        settings = self.settings
        source = SecretsManagerKeySource(
            boto3.client("secretsmanager", config=BOTO_CONFIG), settings.jwt_secret_id
        )
        keys = CachedKeys(
            source, max_age=timedelta(seconds=settings.signing_key_cache_seconds), clock=self._clock
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
        return Accounts(
            DynamoDBUserRepository(self.table),
            hasher=ScryptHasher(self._scrypt_cost),
            tokens=self.tokens,
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
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, UsernameTaken):
        return HttpError(409, "Username is already taken")
    if isinstance(exc, InvalidCredentials):
        return HttpError(401, "Invalid username or password")
    if isinstance(exc, UserNotFound):
        return HttpError(404, "User not found")
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
        raise HttpError(415, "Content-Type must be application/json")
    raw = request.raw_body
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HttpError(400, "Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise HttpError(400, "Request body must be a JSON object")
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


def _profile(user: User) -> dict[str, Any]:
    profile = {"username": user.username, "createdAt": user.created_at, "role": user.role}
    if user.updated_at is not None:
        profile["updatedAt"] = user.updated_at
    return profile


@app.authorizer(ttl_seconds=AUTHORIZER_TTL_SECONDS)
def bearer(auth_request: AuthRequest) -> AuthResponse:
    scheme, _, token = (auth_request.token or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return AuthResponse(routes=[], principal_id="anonymous")
    try:
        claims = dependencies.tokens.verify(token.strip())
    except InvalidToken:
        return AuthResponse(routes=[], principal_id="anonymous")
    except Exception:
        # Never raise from an authorizer: API Gateway would answer 500 for every route.
        logger.exception("authorizer failed")
        return AuthResponse(routes=[], principal_id="anonymous")
    # One policy for every route: API Gateway caches it per token and reuses it everywhere.
    return AuthResponse(
        routes=["*"],
        principal_id=claims.username,
        context={"username": claims.username, "role": claims.role},
    )


def _request() -> Request:
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request outside a route")
    return request


def _caller() -> str:
    return str(_request().context["authorizer"]["username"])


@app.route("/health", methods=["GET"])
@endpoint
def health() -> Response:
    return _json(200, {"status": "ok"})


@app.route("/auth/signup", methods=["POST"])
@endpoint
def signup() -> Response:
    body = parse(SignupRequest)
    user = dependencies.accounts.register(body.username, body.password)
    return _json(201, {"message": "User created successfully", "username": user.username})


@app.route("/auth/login", methods=["POST"])
@endpoint
def login() -> Response:
    body = parse(LoginRequest)
    result = dependencies.accounts.login(body.username, body.password)
    return _json(
        200,
        {
            "message": "Login successful",
            "token": result.token.token,
            "username": result.user.username,
            "expiresIn": result.token.expires_in,
        },
    )


@app.route("/auth/user", methods=["GET"], authorizer=bearer)
@endpoint
def current_user() -> Response:
    return _json(200, _profile(dependencies.accounts.profile(_caller())))


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
        message = "Internal server error" if response.status_code >= 500 else str(body["Message"])
        return _json(response.status_code, {"message": message}, response.headers)
    return response
