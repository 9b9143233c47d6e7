"""The current request, read the way every route needs it: body, caller, client, parameters."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from chalice.app import Chalice, CORSConfig, Request, Response

from chalicelib import responses as R
from chalicelib.accounts import SignedIn
from chalicelib.administration import Administration, AdminRequired
from chalicelib.events import Client
from chalicelib.identity import Owner
from chalicelib.settings import EDGE_HEADER, Settings
from chalicelib.users import UserNotFound
from chalicelib.web.errors import HttpError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

# Room for an item's 32 KiB of data plus its other fields.
MAX_BODY_BYTES = 64 * 1024
UNSUPPORTED_MEDIA_TYPE = "Content-Type must be application/json"
# A header no cross-site form can send, and that makes any cross-origin fetch preflight.
CSRF_HEADER = "X-Requested-With"
REFRESH_COOKIE = "gatehouse_refresh"
# Marks a browser that has logged in to an account before (chalicelib/limits.py, KnownDevices).
DEVICE_COOKIE = "gatehouse_device"
DEVICE_COOKIE_MAX_AGE = 365 * 86400
# A browser stores a __Secure- cookie only with Secure, from an origin it trusts (HTTPS), so no
# plain-http page or injected response of a neighbouring host can plant or replace it.
SECURE_COOKIE_PREFIX = "__Secure-"
# The answer to a request that skipped CloudFront (and so its web ACL) where EDGE_REQUIRED is set.
EDGE_REQUIRED_MESSAGE = "Forbidden: call the API through the site or its API domain"
# What If-Match may hold: the strong or weak ETag of one version. "*" is not supported: every
# change names the version it is based on.
ETAG = re.compile(r'\s*(?:W/)?"(\d{1,18})"\s*')
# Shapes of ids in paths, checked before they become keys (DynamoDB refuses keys over 1 KB).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{22}")
RESOURCE_ID = re.compile(r"[0-9a-f]{28}")
MAX_USERNAME = 128
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

PayloadT = TypeVar("PayloadT", bound="BaseModel")


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who the authorizer let in: the profile it read and the session of the token."""

    username: str
    user_id: str
    role: str
    session_id: str
    profile: dict[str, str]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def owner(self) -> Owner:
        return Owner(self.username, self.user_id)


@dataclass(frozen=True)
class PageRequest:
    limit: int
    cursor: str | None


def cors_config(origin: str) -> CORSConfig:
    """Cross-origin calls from ``origin`` only (the site, calling the API's own domain)."""
    return CORSConfig(
        allow_origin=origin,
        allow_headers=["If-Match", CSRF_HEADER],
        expose_headers=["ETag", "Retry-After", "X-Request-Id"],
        max_age=600,
    )


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str | list[str]] | None = None
) -> Response:
    return Response(
        body=json.dumps(body),
        status_code=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class Http:
    """Reads the current request of ``app``; ``settings`` is called when a reading needs them,
    ``admins`` when an admin's role must be checked against the table."""

    def __init__(
        self,
        app: Chalice,
        *,
        settings: Callable[[], Settings],
        admins: Callable[[], Administration],
    ) -> None:
        self._app = app
        self._settings = settings
        self._admins = admins

    @property
    def request(self) -> Request:
        request = self._app.current_request
        if request is None:
            raise RuntimeError("no current request outside a route")
        return request

    def body(self, model: type[PayloadT]) -> PayloadT:
        """The JSON body validated against ``model``, or a 4xx ``HttpError``."""
        request = self.request
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
        # Here, not at the top: pydantic loads with the first body, not at every cold start.
        from pydantic import ValidationError

        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from None

    def has_body(self) -> bool:
        return bool(self.request.raw_body)

    def caller(self) -> Caller:
        """The authorizer's context: the profile (username, role, createdAt, ...), sessionId."""
        context = self.request.context.get("authorizer") or {}
        if "username" not in context or "userId" not in context:
            raise HttpError(401, "Unauthorized")
        fields = {key: str(value) for key, value in context.items()}
        return Caller(
            username=fields["username"],
            user_id=fields["userId"],
            role=fields.get("role", "user"),
            session_id=fields.get("sessionId", ""),
            profile=fields,
        )

    def admin(self) -> Caller:
        """The caller, an administrator in the authorizer's context and in the table now.

        API Gateway reuses the authorizer's answer for a token for up to its TTL, long enough
        for a demoted or disabled admin to act (make another admin, say): one consistent read.
        """
        caller = self.caller()
        if not caller.is_admin:
            raise AdminRequired(caller.username)
        self._admins().require_admin(caller.owner)
        return caller

    def client(self) -> Client:
        """The caller's address (its rate-limit key) and user agent."""
        request = self.request
        address = str((request.context.get("identity") or {}).get("sourceIp") or "unknown")
        hops = self._settings().trusted_proxy_hops
        if hops and self.through_edge():
            # Behind N trusted proxies (CloudFront), the client is the Nth address from the
            # right; anything further left was written by the client and cannot be trusted.
            forwarded = request.headers.get("x-forwarded-for", "").split(",")
            forwarded = [part.strip() for part in forwarded if part.strip()]
            if len(forwarded) >= hops:
                address = forwarded[-hops]
        user_agent = request.headers.get("user-agent", "")[:200]
        return Client(ip=_rate_key(address), user_agent=user_agent)

    def through_edge(self) -> bool:
        """Whether the request came through our CDN, which alone may vouch for forwarded headers.

        With ``EDGE_SECRET`` set, CloudFront adds it as ``EDGE_HEADER``; a caller of the API
        Gateway endpoint itself lacks it, so its ``X-Forwarded-For`` cannot pick its rate key.
        """
        return presents_edge_key(self._settings(), self.request.headers)

    def require_edge(self, event: Request, get_response: Callable[[Request], Response]) -> Response:
        """Middleware: with ``EDGE_REQUIRED``, a request that did not come through CloudFront
        (or arrive on ``EDGE_EXEMPT_DOMAIN``) is answered 403 before any route runs."""
        domain = (event.context or {}).get("domainName")
        if edge_refused(self._settings(), event.headers, domain):
            return json_response(403, {"message": EDGE_REQUIRED_MESSAGE})
        return get_response(event)

    def refresh_cookie_name(self) -> str:
        """The name follows ``Secure``: prefixed wherever the stage is served over HTTPS."""
        return self._cookie_name(REFRESH_COOKIE)

    def device_cookie_name(self) -> str:
        """Named like the refresh cookie: ``__Secure-`` wherever the stage is served over HTTPS
        (not ``__Host-``, which would demand ``Path=/``)."""
        return self._cookie_name(DEVICE_COOKIE)

    def _cookie_name(self, name: str) -> str:
        secure = self._settings().refresh_cookie_secure
        return f"{SECURE_COOKIE_PREFIX}{name}" if secure else name

    def refresh_cookie(self) -> str | None:
        """The refresh cookie under the one name this stage sets; any other is ignored."""
        return self._cookie(self.refresh_cookie_name())

    def device_cookie(self) -> str | None:
        """The known-device cookie under the one name this stage sets."""
        return self._cookie(self.device_cookie_name())

    def _cookie(self, wanted: str) -> str | None:
        # Split by hand: SimpleCookie gives up on the whole header over one odd cookie of a
        # neighbouring app, which would make refresh impossible in that browser.
        for pair in self.request.headers.get("cookie", "").split(";"):
            name, _, value = pair.strip().partition("=")
            if name == wanted and value:
                return str(value)
        return None

    def set_refresh_cookie(self, value: str, max_age: int) -> dict[str, str]:
        """The ``Set-Cookie`` header that stores (or, with ``max_age`` 0, clears) the cookie."""
        return {"Set-Cookie": self._set_cookie(self.refresh_cookie_name(), value, max_age)}

    def _set_cookie(self, name: str, value: str, max_age: int) -> str:
        settings = self._settings()
        parts = [
            f"{name}={value}",
            f"Path={settings.refresh_cookie_path}",
            f"Max-Age={max_age}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        # Only the local dev stage, served over plain http, turns Secure off.
        if settings.refresh_cookie_secure:
            parts.append("Secure")
        return "; ".join(parts)

    def clear_refresh_cookie(self) -> dict[str, str]:
        return self.set_refresh_cookie("", 0)

    def signed_in(self, result: SignedIn, *, message: str, delivery: str) -> Response:
        """The tokens: the refresh token in the body if asked, else as an HttpOnly cookie; a
        login's known-device cookie goes with the cookie delivery (browsers) only."""
        body = R.signed_in(result, message=message, refresh_in_body=delivery == "body")
        cookies: list[str] = []
        if result.refresh is not None and delivery == "cookie":
            name, value = self.refresh_cookie_name(), result.refresh.encode()
            cookies.append(self._set_cookie(name, value, result.refresh_expires_in))
        if result.device is not None and delivery == "cookie":
            name = self.device_cookie_name()
            cookies.append(self._set_cookie(name, result.device, DEVICE_COOKIE_MAX_AGE))
        headers: dict[str, str | list[str]] = {}
        if cookies:
            headers["Set-Cookie"] = cookies[0] if len(cookies) == 1 else cookies
        return json_response(200, body, headers)

    def refuse_cross_site(self) -> None:
        """Cookie-borne requests must come from an allowed origin and carry our header."""
        request = self.request
        settings = self._settings()
        origin = request.headers.get("origin", "").rstrip("/")
        allowed = settings.allowed_origins
        if settings.site_origin_header and self.through_edge():
            # Set by our CloudFront function to the origin the browser used, whatever it sent;
            # it names the site's origin where that is not known before deployment.
            stated = request.headers.get(settings.site_origin_header, "").rstrip("/")
            allowed = allowed | {stated} - {""}
        if origin not in allowed:
            raise HttpError(403, "Cross-site request refused: origin not allowed")
        if not request.headers.get(CSRF_HEADER):
            raise HttpError(403, f"Cross-site request refused: {CSRF_HEADER} header required")

    def if_match(self) -> int | None:
        """The version the client's change is based on, from its If-Match ETag."""
        raw = self.request.headers.get("if-match")
        if raw is None:
            return None
        match = ETAG.fullmatch(raw)
        if match is None:
            raise HttpError(412, "If-Match does not match the item's current ETag")
        return int(match.group(1))

    def required_if_match(self) -> int:
        version = self.if_match()
        if version is None:
            raise HttpError(428, "If-Match header required: send the ETag of the item you read")
        return version

    def page(self) -> PageRequest:
        """``limit`` and ``cursor``; an empty cursor, like none, asks for the first page."""
        params = self.query()
        raw = params.get("limit") or str(DEFAULT_PAGE_SIZE)
        try:
            limit = int(raw)
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise HttpError(400, f"limit must be between 1 and {MAX_PAGE_SIZE}")
        return PageRequest(limit, params.get("cursor") or None)

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        """An optional query parameter limited to ``choices``; empty counts as absent."""
        value: str | None = self.query().get(name) or None
        if value is not None and value not in choices:
            raise HttpError(400, f"{name} must be one of {', '.join(choices)}")
        return value

    def required_choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.choice(name, choices)
        if value is None:
            raise HttpError(400, f"{name} is required: one of {', '.join(choices)}")
        return value

    def query(self) -> Mapping[str, str]:
        return self.request.query_params or {}


def presents_edge_key(settings: Settings, headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` (names in lower case, or a case-insensitive mapping) carry the edge
    key; true when there is none to carry. Compared in constant time."""
    secret = settings.edge_secret
    if secret is None:
        return True
    presented = headers.get(EDGE_HEADER, "")
    return hmac.compare_digest(presented.encode("utf-8"), secret.encode("utf-8"))


def edge_refused(settings: Settings, headers: Mapping[str, str], domain: str | None) -> bool:
    """With ``EDGE_REQUIRED``: whether a request skipped both CloudFront (no edge key) and the
    exempt domain. ``domain`` is API Gateway's ``requestContext.domainName``, the host the
    request was routed by, which a caller cannot choose apart from the host it calls."""
    if not settings.edge_required:
        return False
    exempt = settings.edge_exempt_domain
    if exempt is not None and (domain or "").lower() == exempt:
        return False
    return not presents_edge_key(settings, headers)


def path_id(raw: str, shape: re.Pattern[str], missing: type[Exception]) -> str:
    """A path id of the right shape; any other is a resource that does not exist."""
    if not shape.fullmatch(raw):
        raise missing(raw)
    return raw


def username_param(raw: str) -> str:
    """A user name from a path, where names of the original system may be percent-encoded."""
    username = unquote(raw)
    if len(username) > MAX_USERNAME:
        raise UserNotFound(username)
    return username


def _invalid(exc: ValidationError) -> HttpError:
    # Field names and reasons only: never echo the input, which may be a password.
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "reason": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    summary = "; ".join(f"{error['field']}: {error['reason']}" for error in errors)
    return HttpError(400, f"Invalid request: {summary}", errors=errors)


def _rate_key(address: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64, which one subscriber usually holds."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return "unknown"
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
