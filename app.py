"""The HTTP edge and composition root: the Chalice app, its dependencies, the authorizer, routes."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from chalice.app import (
    AuthRequest,
    AuthResponse,
    Chalice,
    CloudWatchEvent,
    Cron,
    DynamoDBEvent,
    Rate,
    Response,
    SQSEvent,
    WebsocketEvent,
)

from chalicelib import logs
from chalicelib import responses as R
from chalicelib.accounts import Accounts, MfaChallenge, SessionNotFound, TokenRevoked
from chalicelib.administration import Administration
from chalicelib.changes import events_of
from chalicelib.clock import Clock, ShiftedClock, utc_now
from chalicelib.deferred import Deferred
from chalicelib.deletion import AccountPurge, purge_deleted
from chalicelib.events import Client, Page, SecurityEvents
from chalicelib.items import STATUSES, Item, ItemNotFound, Items
from chalicelib.jobs import Jobs, TableBackup, UploadSweep
from chalicelib.limits import IpRateLimiter, KnownDevices, LoginThrottle, RateHit
from chalicelib.mail import Mailer, SesMailer
from chalicelib.metrics import Metrics
from chalicelib.mfa import Mfa
from chalicelib.notices import Notices
from chalicelib.passwords import DEFAULT_COST, ScryptCost, ScryptHasher
from chalicelib.publisher import EventBridgePublisher, Publisher
from chalicelib.realtime import Connections, Notifier, TicketRefused, Tickets
from chalicelib.recovery import Recovery, RecoveryLimits
from chalicelib.rotation import SigningKeyRotation
from chalicelib.sessions import InvalidRefreshToken, Sessions
from chalicelib.settings import (
    Settings,
    SettingsError,
    api_key_required,
    authorizer_ttl_seconds,
    cors_allow_origin,
    event_sources,
)
from chalicelib.stores import Stores
from chalicelib.tokens import CachedKeys, InvalidToken, SecretsManagerKeySource, TokenService
from chalicelib.uploads import UploadLimits, UploadNotFound, Uploads
from chalicelib.web.auth import Unauthorized, bearer_token, deny
from chalicelib.web.errors import HttpError, aws_unavailable
from chalicelib.web.gateway import TOKEN_REVOKED
from chalicelib.web.http import (
    DEVICE_COOKIE_MAX_AGE,
    RESOURCE_ID,
    SESSION_ID,
    Http,
    cors_config,
    edge_refused,
    json_response,
    path_id,
    username_param,
)
from chalicelib.web.middleware import request_log
from chalicelib.web.openapi import document
from chalicelib.web.routing import Routes
from chalicelib.workers import Idempotency, handle_batch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from chalicelib import payloads as P
else:
    # The request models (and pydantic) load with the first body (chalicelib/deferred.py).
    P = Deferred("chalicelib.payloads")

app = Chalice(app_name="gatehouse", configure_logs=False)
# Chalice 1.34 still counts its WebSocket support as experimental: without this opt-in, loading
# the app for `chalice local`, `package` or `deploy` fails (chalice/deploy/validate.py).
app.experimental_feature_flags.update(["WEBSOCKETS"])
logger = logging.getLogger("gatehouse")
logs.configure("INFO")  # the level is adjusted once settings are read

# API Gateway caches one authorizer answer per token for this long, so it bounds how long a
# revoked token keeps working. It is baked into the API definition when Chalice packages the
# app, which is why it is read here rather than from the runtime settings.
AUTHORIZER_TTL_SECONDS = authorizer_ttl_seconds(os.environ)
API_VERSION = "1.0.0"
FORGOT_ANSWER = "If the account has a verified email address, a reset link is on its way"
DELETED_ANSWER = "Account deleted; its data is being removed"
# The site calls the API on its own origin (/api/*) and needs no CORS. Only the optional API
# domain (api.<domain>) answers scripts on the site's origin; also baked in at packaging time.
CORS_ALLOW_ORIGIN = cors_allow_origin(os.environ)
if CORS_ALLOW_ORIGIN is not None:
    app.api.cors = cors_config(CORS_ALLOW_ORIGIN)
# The table's stream and the workers' queues the event handlers consume (docs/EVENTS.md); also
# read at packaging time, the CDK app puts the deployed ARNs over them.
EVENT_SOURCES = event_sources(os.environ)
# botocore's own retries (standard mode) absorb brief throttling before we answer 503, and a
# call that hangs ends well inside the API functions' 10 s timeout, so the app answers its own
# 503, not a Lambda timeout: at worst 2 attempts x (1 s connect + 2 s read) + one back-off of at
# most 1 s (standard mode: random up to 2^0 s) = 7 s (cdk/README.md, "Timeouts").
BOTO_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=1, read_timeout=2
)


class Dependencies:
    """Everything the routes use, each built on first use and then kept for the container."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        scrypt_cost: ScryptCost = DEFAULT_COST,
        mailer: Mailer | None = None,
    ) -> None:
        self._injected_clock = clock
        self._scrypt_cost = scrypt_cost
        self._injected_mailer = mailer

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

    @cached_property
    def stores(self) -> Stores:
        """One repository per aggregate, over the table."""
        return Stores.dynamodb(self.table, status_shards=self.settings.status_index_shards)

    @cached_property
    def secrets(self) -> SecretsManagerClient:
        return boto3.client("secretsmanager", config=BOTO_CONFIG)

    @cached_property
    def signing_keys(self) -> CachedKeys:
        settings = self.settings
        return CachedKeys(
            SecretsManagerKeySource(self.secrets, settings.jwt_secret_id),
            max_age=timedelta(seconds=settings.signing_key_cache_seconds),
            clock=self._clock,
        )

    @cached_property
    def tokens(self) -> TokenService:
        settings = self.settings
        return TokenService(
            self.signing_keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
            clock=self._clock,
        )

    @cached_property
    def accounts(self) -> Accounts:
        settings = self.settings
        sessions = Sessions(
            self.stores.sessions,
            absolute=timedelta(seconds=settings.refresh_absolute_seconds),
            idle=timedelta(seconds=settings.refresh_idle_seconds),
            grace=timedelta(seconds=settings.refresh_grace_seconds),
            clock=self._clock,
        )
        throttle = LoginThrottle(
            self.stores.limits,
            free_failures=settings.login_free_failures,
            max_backoff=settings.login_max_backoff_seconds,
            window=settings.login_failure_window_seconds,
            account_free_failures=settings.account_free_failures,
            clock=self._clock,
        )
        return Accounts(
            self.stores.users,
            hasher=ScryptHasher(self._scrypt_cost),
            tokens=self.tokens,
            sessions=sessions,
            throttle=throttle,
            events=self.events,
            mfa=self.mfa,
            devices=KnownDevices(
                self.signing_keys, max_age=DEVICE_COOKIE_MAX_AGE, clock=self._clock
            ),
            clock=self._clock,
        )

    @cached_property
    def mailer(self) -> Mailer | None:
        """SES, when MAIL_FROM is set; None: mail is off."""
        settings = self.settings
        if self._injected_mailer is not None:
            return self._injected_mailer
        if settings.mail_from is None:
            return None
        client = boto3.client("sesv2", config=BOTO_CONFIG)
        return SesMailer(
            client, sender=settings.mail_from, configuration_set=settings.ses_configuration_set
        )

    @cached_property
    def recovery(self) -> Recovery:
        settings, mailer = self.settings, self.mailer
        if mailer is None:
            raise HttpError(503, "Mail is not configured (MAIL_FROM)")
        return Recovery(
            self.stores.users,
            self.stores.links,
            accounts=self.accounts,
            events=self.events,
            mailer=mailer,
            # Settings refuse MAIL_FROM without SITE_URL, and the mailer needs MAIL_FROM.
            site_url=settings.site_url or "",
            counters=self.stores.limits,
            limits=RecoveryLimits(
                per_account=settings.recovery_rate_limit,
                per_address=settings.recovery_ip_rate_limit,
                window=settings.recovery_rate_window_seconds,
            ),
            clock=self._clock,
            answer_after=settings.recovery_answer_ms / 1000,
        )

    @cached_property
    def mfa(self) -> Mfa:
        return Mfa(self.stores.mfa, issuer="Gatehouse", clock=self._clock)

    @cached_property
    def events(self) -> SecurityEvents:
        return SecurityEvents(
            self.stores.events,
            clock=self._clock,
            metrics=Metrics(self.settings.environment, clock=self._clock),
        )

    @cached_property
    def publisher(self) -> Publisher:
        """The custom EventBridge bus the table's changes go to (docs/EVENTS.md)."""
        bus_name = self.settings.event_bus_name
        if bus_name is None:
            raise SettingsError("environment variable EVENT_BUS_NAME is required for events")
        return EventBridgePublisher(boto3.client("events", config=BOTO_CONFIG), bus_name=bus_name)

    @cached_property
    def s3(self) -> S3Client:
        # SigV4 everywhere: botocore presigns with SigV2 in the regions that still accept it
        # (eu-west-1, us-east-1, ...), and S3 refuses SigV2 for objects under SSE-KMS (kmsKey).
        return boto3.client("s3", config=BOTO_CONFIG.merge(Config(signature_version="s3v4")))

    @cached_property
    def purge(self) -> AccountPurge:
        bucket = self.settings.uploads_bucket
        return AccountPurge(
            self.stores.users,
            self.stores.partitions,
            s3=self.s3 if bucket else None,
            bucket=bucket,
        )

    @cached_property
    def administration(self) -> Administration:
        return Administration(
            self.stores.users,
            accounts=self.accounts,
            events=self.events,
            clock=self._clock,
        )

    @cached_property
    def items(self) -> Items:
        return Items(self.stores.items, clock=self._clock)

    @cached_property
    def uploads(self) -> Uploads:
        bucket = self.settings.uploads_bucket
        if bucket is None:
            raise HttpError(503, "Uploads are not configured (UPLOADS_BUCKET)")
        return Uploads(
            self.stores.uploads,
            self.s3,
            bucket=bucket,
            limits=UploadLimits.of(self.settings),
            counters=self.stores.limits,
            clock=self._clock,
        )

    @cached_property
    def jobs(self) -> Jobs:
        """The scheduled jobs (chalicelib/jobs.py), over the routes' table, S3 client and clock."""
        settings, clock = self.settings, self._clock
        backups, uploads = settings.backups_bucket, settings.uploads_bucket
        return Jobs(
            backup=None
            if backups is None
            else TableBackup(
                self.table.meta.client, table_name=settings.table_name, bucket=backups, clock=clock
            ),
            sweep=None
            if uploads is None
            else UploadSweep(self.stores.uploads, self.s3, bucket=uploads, clock=clock),
        )

    @cached_property
    def ip_limiter(self) -> IpRateLimiter:
        return IpRateLimiter(
            self.stores.limits,
            limit=self.settings.ip_rate_limit,
            window=self.settings.ip_rate_window_seconds,
            clock=self._clock,
        )

    @cached_property
    def tickets(self) -> Tickets:
        return Tickets(self.stores.tickets, clock=self._clock)

    @cached_property
    def connections(self) -> Connections:
        return Connections(self.stores.connections, tickets=self.tickets, clock=self._clock)

    @cached_property
    def notifier(self) -> Notifier:
        endpoint = self.settings.websocket_endpoint
        api = None
        if endpoint is not None:
            api = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, config=BOTO_CONFIG)
        once = Idempotency(self.stores.marks, worker="notify", clock=self._clock)
        return Notifier(self.stores.connections, api=api, once=once)

    @cached_property
    def notices(self) -> Notices:
        once = Idempotency(self.stores.marks, worker="mail", clock=self._clock)
        return Notices(self.stores.users, mailer=self.mailer, once=once)


dependencies = Dependencies()
if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # In Lambda, a missing or bad variable fails the cold start with its name in the error.
    dependencies.settings  # noqa: B018

http = Http(app, settings=lambda: dependencies.settings, admins=lambda: dependencies.administration)


@app.authorizer(ttl_seconds=AUTHORIZER_TTL_SECONDS)
def bearer(auth_request: AuthRequest) -> AuthResponse | dict[str, Any]:
    """401 for no valid token, a cached Deny (403) for a refused one, an error for "not now"."""
    token = bearer_token(auth_request)
    if token is None:
        raise Unauthorized
    try:
        claims = dependencies.tokens.verify(token)
        # One profile read: a logout-everywhere, password change or disable revokes at once.
        user = dependencies.accounts.authorize(claims)
    except InvalidToken:
        raise Unauthorized from None
    except TokenRevoked:
        return deny(auth_request, TOKEN_REVOKED)
    except Exception as exc:
        # Not a Deny, which API Gateway would cache for the TTL: failing is answered 503 and
        # the next request is authorized afresh.
        if not aws_unavailable(exc):
            logger.exception("authorizer failed")
        raise
    # One policy for every route: API Gateway caches it per token and reuses it everywhere.
    # The profile rides along in the context, so routes need not read it again.
    return AuthResponse(
        routes=["*"],
        principal_id=user.username,
        context={**R.profile(user), "sessionId": claims.session_id},
    )


route = Routes(app, http, authorizer=bearer, api_key_required=api_key_required(os.environ))


def limited() -> Client:
    """The caller, after counting the request against the per-IP limit of the auth routes."""
    client = http.client()
    dependencies.ip_limiter.hit(client.ip)
    return client


def rated() -> tuple[Client, RateHit]:
    """The caller, and the request's hit on the per-IP limit of the auth routes, for a service
    that counts it inside its own write (no round trip of its own)."""
    client = http.client()
    return client, dependencies.ip_limiter.ticket(client.ip)


@route("GET /health", "Health", public=True)
def health() -> Response:
    """Liveness check."""
    return json_response(200, {"status": "ok"})


@route(
    "POST /auth/signup",
    "SignedUp",
    public=True,
    status=201,
    request="SignupRequest",
    errors=(409, 429),
)
def signup() -> Response:
    """Create an account."""
    client, rate = rated()
    body = http.body(P.SignupRequest)
    if body.email is None:
        user = dependencies.accounts.register(body.username, body.password, client, rate=rate)
    else:
        rate.apply()
        user = dependencies.recovery.register(body.username, body.password, body.email, client)
    return json_response(201, {"message": "User created successfully", "username": user.username})


@route(
    "POST /auth/login", "LoginAnswer", public=True, request="LoginRequest", errors=(401, 403, 429)
)
def login() -> Response:
    """Log in: tokens and a session, or a challenge for POST /auth/login/mfa if MFA is on."""
    client, rate = rated()
    body = http.body(P.LoginRequest)
    result = dependencies.accounts.login(
        body.username, body.password, client, rate=rate, device=http.device_cookie()
    )
    if isinstance(result, MfaChallenge):
        return json_response(200, R.mfa_required(result, message="Two-factor code required"))
    return http.signed_in(result, message="Login successful", delivery=body.refreshTokenDelivery)


@route(
    "POST /auth/login/mfa",
    "SignedIn",
    public=True,
    request="MfaLoginRequest",
    errors=(401, 403, 429),
)
def login_mfa() -> Response:
    """Log in, second step: a TOTP or recovery code for the challenge of POST /auth/login."""
    client = limited()
    body = http.body(P.MfaLoginRequest)
    result = dependencies.accounts.login_mfa(body.challenge, body.code, client)
    return http.signed_in(result, message="Login successful", delivery=body.refreshTokenDelivery)


@route("POST /auth/mfa/totp", "MfaEnrolment", errors=(409,))
def begin_mfa() -> Response:
    """Start setting up an authenticator app: its secret, shown only now."""
    enrolment = dependencies.mfa.begin(http.caller().owner)
    shown = {"secret": enrolment.secret, "uri": enrolment.uri, "qrSvg": enrolment.qr_svg}
    return json_response(200, shown)


@route("POST /auth/mfa/totp/confirm", "MfaEnabled", request="MfaConfirmRequest", errors=(409,))
def confirm_mfa() -> Response:
    """Turn two-factor authentication on with a first code; other sessions end."""
    body = http.body(P.MfaConfirmRequest)
    caller = http.caller()
    codes = dependencies.accounts.enable_mfa(
        caller.owner, body.code, http.client(), keep=caller.session_id
    )
    return json_response(
        200, {"message": "Two-factor authentication enabled", "recoveryCodes": codes}
    )


@route("DELETE /auth/mfa/totp", "Message", request="MfaDisableRequest", errors=(409, 429))
def disable_mfa() -> Response:
    """Turn two-factor authentication off (password and a code); other sessions end."""
    body = http.body(P.MfaDisableRequest)
    caller = http.caller()
    dependencies.accounts.disable_mfa(
        caller.owner, body.password, body.code, limited(), keep=caller.session_id
    )
    return json_response(200, {"message": "Two-factor authentication disabled"})


@route(
    "POST /auth/refresh", "SignedIn", public=True, request="RefreshRequest", errors=(401, 403, 429)
)
def refresh() -> Response:
    """Rotate the refresh token (cookie with Origin and X-Requested-With, or body)."""
    client, rate = rated()
    cookie = http.refresh_cookie()
    if cookie is not None:
        http.refuse_cross_site()
        raw, delivery = cookie, "cookie"
    elif not http.has_body():
        # No cookie and no body: a browser that holds no session (or whose cookie expired).
        raise InvalidRefreshToken
    else:
        raw, delivery = http.body(P.RefreshRequest).refreshToken, "body"
    try:
        result = dependencies.accounts.refresh(raw, client, rate=rate)
    except InvalidRefreshToken:
        cleared = http.clear_refresh_cookie() if delivery == "cookie" else {}
        return json_response(401, {"message": InvalidRefreshToken.message}, cleared)
    return http.signed_in(result, message="Token refreshed", delivery=delivery)


@route("POST /auth/logout", "Message")
def logout() -> Response:
    """End this session."""
    caller = http.caller()
    dependencies.accounts.logout(caller.owner, caller.session_id)
    return json_response(200, {"message": "Logged out"}, http.clear_refresh_cookie())


@route("POST /auth/logout-all", "Message")
def logout_all() -> Response:
    """End every session and revoke every access token."""
    dependencies.accounts.logout_all(http.caller().owner, http.client())
    return json_response(200, {"message": "Logged out everywhere"}, http.clear_refresh_cookie())


@route("GET /auth/user", "Profile")
def current_user() -> Response:
    """The caller's profile."""
    # As fresh as the authorizer's answer: read at most AUTHORIZER_TTL_SECONDS ago.
    return json_response(200, R.profile_view(http.caller().profile))


@route("POST /auth/password", "SignedIn", request="PasswordChangeRequest", errors=(429,))
def change_password() -> Response:
    """Change the password; other sessions end."""
    body = http.body(P.PasswordChangeRequest)
    result = dependencies.accounts.change_password(
        http.caller().owner, body.currentPassword, body.newPassword, limited()
    )
    # The caller's old refresh token died with its session: hand over the new session's one.
    return http.signed_in(result, message="Password changed", delivery=body.refreshTokenDelivery)


@route("PUT /auth/email", "EmailSet", request="EmailChangeRequest", errors=(409, 429))
def change_email() -> Response:
    """Set or change the email address (with the password); a link to verify it is mailed."""
    body = http.body(P.EmailChangeRequest)
    user = dependencies.recovery.change_email(
        http.caller().owner, body.email, body.password, limited()
    )
    message = "Email verified" if user.email_verified else "Verification link sent"
    answer = {"message": message, "email": body.email, "emailVerified": user.email_verified}
    return json_response(200, answer)


@route(
    "POST /auth/email/verify",
    "EmailVerified",
    public=True,
    request="LinkRequest",
    errors=(409, 429),
)
def verify_email() -> Response:
    """Confirm an email address with the token of the mailed link."""
    token = http.body(P.LinkRequest).token
    email = dependencies.recovery.verify_email(token, limited())
    return json_response(200, {"message": "Email verified", "email": email})


@route(
    "POST /auth/password/forgot",
    "Message",
    public=True,
    status=202,
    request="ForgotRequest",
    errors=(429,),
)
def forgot_password() -> Response:
    """Mail a password reset link, if the name or address has a verified email."""
    dependencies.recovery.forgot(http.body(P.ForgotRequest).login, limited())
    # The same answer whether or not there is such an account.
    return json_response(202, {"message": FORGOT_ANSWER})


@route("POST /auth/password/reset", "Message", public=True, request="ResetRequest", errors=(429,))
def reset_password() -> Response:
    """Set a new password with the token of a reset link; every session ends."""
    body = http.body(P.ResetRequest)
    dependencies.recovery.reset(body.token, body.password, limited())
    return json_response(200, {"message": "Password changed; please log in"})


@route("GET /auth/sessions", "SessionList")
def list_sessions() -> Response:
    """The caller's live sessions."""
    caller = http.caller()
    sessions = dependencies.accounts.list_sessions(caller.owner)
    shown = [R.session(session, current=caller.session_id) for session in sessions]
    return json_response(200, {"sessions": shown})


@route("DELETE /auth/sessions/{session_id}", "Message", errors=(404,))
def end_session(session_id: str) -> Response:
    """End one of the caller's sessions."""
    session_id = path_id(session_id, SESSION_ID, SessionNotFound)
    dependencies.accounts.end_session(http.caller().owner, session_id)
    return json_response(200, {"message": "Session ended"})


@route("POST /auth/ws-ticket", "WsTicket")
def ws_ticket() -> Response:
    """A one-time ticket to open the WebSocket of live updates (valid 30 s)."""
    url = dependencies.settings.websocket_url
    if url is None:
        raise HttpError(503, "Live updates are not configured (WEBSOCKET_URL)")
    issued = dependencies.tickets.issue(http.caller().owner, url=url)
    return json_response(200, R.ws_ticket(issued))


def events_page(found: Page) -> Response:
    events = [R.event(event) for event in found.events]
    return json_response(200, {"events": events, "nextCursor": found.cursor})


@route("GET /auth/events", "EventList", paged=True)
def own_events() -> Response:
    """The caller's security events, newest first."""
    page = http.page()
    owner = http.caller().owner
    return events_page(dependencies.accounts.events(owner, limit=page.limit, cursor=page.cursor))


@route("GET /users/{username}/events", "EventList", admin=True, paged=True, errors=(404,))
def user_events(username: str) -> Response:
    """Anyone's security events."""
    page = http.page()
    found = dependencies.administration.events(
        username_param(username), limit=page.limit, cursor=page.cursor
    )
    return events_page(found)


def item_response(item: Item, status: int = 200) -> Response:
    headers = {"ETag": f'"{item.version}"'}
    if status == 201:
        headers["Location"] = f"/items/{item.item_id}"
    return json_response(status, R.item(item), headers)


@route("POST /items", "ItemView", status=201, request="ItemWrite", creates="/id")
def create_item() -> Response:
    """Create an item."""
    body = http.body(P.ItemWrite)
    item = dependencies.items.create(
        http.caller().owner, name=body.name, data=body.data, status=body.status
    )
    return item_response(item, 201)


@route("GET /items", "ItemList", query=("status",), paged=True)
def list_items() -> Response:
    """The caller's items, newest first."""
    page, status = http.page(), http.choice("status", STATUSES)
    found = dependencies.items.list(
        http.caller().owner, status=status, limit=page.limit, cursor=page.cursor
    )
    items = [R.item(item) for item in found.items]
    return json_response(200, {"items": items, "nextCursor": found.cursor})


@route("GET /items/{item_id}", "ItemView", errors=(404,))
def get_item(item_id: str) -> Response:
    """One item (with its ETag)."""
    item_id = path_id(item_id, RESOURCE_ID, ItemNotFound)
    return item_response(dependencies.items.get(http.caller().owner, item_id))


@route("PUT /items/{item_id}", "ItemView", request="ItemWrite", errors=(404,), if_match="required")
def replace_item(item_id: str) -> Response:
    """Replace an item (If-Match required)."""
    item_id, version = path_id(item_id, RESOURCE_ID, ItemNotFound), http.required_if_match()
    body = http.body(P.ItemWrite)
    owner = http.caller().owner
    item = dependencies.items.replace(
        owner, item_id, expected_version=version, name=body.name, data=body.data, status=body.status
    )
    return item_response(item)


@route(
    "PATCH /items/{item_id}", "ItemView", request="ItemPatch", errors=(404,), if_match="required"
)
def patch_item(item_id: str) -> Response:
    """Change some fields of an item (If-Match required)."""
    item_id, version = path_id(item_id, RESOURCE_ID, ItemNotFound), http.required_if_match()
    body = http.body(P.ItemPatch)
    owner = http.caller().owner
    item = dependencies.items.patch(
        owner, item_id, expected_version=version, name=body.name, data=body.data, status=body.status
    )
    return item_response(item)


@route("DELETE /items/{item_id}", "Message", errors=(404,), if_match="optional")
def delete_item(item_id: str) -> Response:
    """Delete an item (If-Match optional)."""
    item_id, version = path_id(item_id, RESOURCE_ID, ItemNotFound), http.if_match()
    dependencies.items.delete(http.caller().owner, item_id, expected_version=version)
    return json_response(200, {"message": "Item deleted"})


@route(
    "GET /admin/items", "ItemList", admin=True, query=("status",), required=("status",), paged=True
)
def admin_items() -> Response:
    """Everyone's items with a status, newest first."""
    page, status = http.page(), http.required_choice("status", STATUSES)
    found = dependencies.items.by_status(status, limit=page.limit, cursor=page.cursor)
    items = [R.item(item, with_owner=True) for item in found.items]
    return json_response(200, {"items": items, "nextCursor": found.cursor})


@route("DELETE /auth/user", "Message", status=202, request="PasswordConfirmation", errors=(429,))
def delete_own_account() -> Response:
    """Delete the caller's account: gone at once, its data purged shortly after (idempotent)."""
    body = http.body(P.PasswordConfirmation)
    dependencies.accounts.delete_account(http.caller().owner, body.password, limited())
    return json_response(202, {"message": DELETED_ANSWER}, http.clear_refresh_cookie())


@route("GET /users", "UserList", admin=True, paged=True)
def list_users() -> Response:
    """Every user."""
    page = http.page()
    found = dependencies.administration.list_users(limit=page.limit, cursor=page.cursor)
    users = [R.admin_user(user) for user in found.users]
    return json_response(200, {"users": users, "nextCursor": found.cursor})


@route("POST /users", "AdminUser", admin=True, status=201, request="UserCreate", errors=(409,))
def create_user() -> Response:
    """Create a user with a role."""
    body = http.body(P.UserCreate)
    user = dependencies.administration.create_user(
        body.username,
        body.password,
        role=body.role,
        admin=http.caller().owner,
        client=http.client(),
    )
    return json_response(201, R.admin_user(user))


@route("GET /users/{username}", "AdminUser", admin=True, errors=(404,))
def get_user(username: str) -> Response:
    """One user."""
    user = dependencies.administration.get(username_param(username))
    return json_response(200, R.admin_user(user))


@route("PUT /users/{username}", "AdminUser", admin=True, request="UserReplace", errors=(404,))
def replace_user(username: str) -> Response:
    """Set a user's role and disabled flag."""
    body = http.body(P.UserReplace)
    return changed_user(username, role=body.role, disabled=body.disabled)


@route("PATCH /users/{username}", "AdminUser", admin=True, request="UserUpdate", errors=(404,))
def update_user(username: str) -> Response:
    """Change a user's role or disabled flag."""
    body = http.body(P.UserUpdate)
    return changed_user(username, role=body.role, disabled=body.disabled)


def changed_user(username: str, *, role: str | None, disabled: bool | None) -> Response:
    user = dependencies.administration.update_user(
        username_param(username),
        role=role,
        disabled=disabled,
        admin=http.caller().owner,
        client=http.client(),
    )
    return json_response(200, R.admin_user(user))


@route("DELETE /users/{username}", "Message", admin=True, status=202, errors=(404,))
def delete_user(username: str) -> Response:
    """Delete a user: gone at once, everything they own purged shortly after (idempotent)."""
    dependencies.administration.delete_user(
        username_param(username), admin=http.caller().owner, client=http.client()
    )
    # Idempotent: deleting an account that is marked already, or gone, is the same success.
    return json_response(202, {"message": DELETED_ANSWER})


@app.on_sqs_message(queue=EVENT_SOURCES.purge_queue, batch_size=10)
def purge_worker(event: SQSEvent) -> dict[str, Any]:
    """Finish the deletion of accounts: one ``account.deleted`` event per message."""
    return handle_batch(event, lambda envelope: purge_deleted(dependencies.purge, envelope))


@route(
    "POST /uploads",
    "UploadStarted",
    status=201,
    request="UploadStart",
    creates="/upload/id",
    errors=(409, 429),
)
def start_upload() -> Response:
    """Start an upload: a presigned POST for the file."""
    body = http.body(P.UploadStart)
    upload, post = dependencies.uploads.start(
        http.caller().owner,
        filename=body.filename,
        content_type=body.contentType,
        size=body.size,
        kind=body.kind,
    )
    return json_response(201, {"upload": R.upload(upload), "post": post})


@route("POST /uploads/{upload_id}/complete", "UploadView", errors=(404, 409))
def complete_upload(upload_id: str) -> Response:
    """Check the uploaded object and mark the upload ready."""
    upload_id = path_id(upload_id, RESOURCE_ID, UploadNotFound)
    upload = dependencies.uploads.complete(http.caller().owner, upload_id)
    return json_response(200, R.upload(upload))


@route("GET /uploads", "UploadList", paged=True)
def list_uploads() -> Response:
    """The caller's uploads, newest first."""
    page = http.page()
    found = dependencies.uploads.list(http.caller().owner, limit=page.limit, cursor=page.cursor)
    uploads = [R.upload(upload) for upload in found.uploads]
    return json_response(200, {"uploads": uploads, "nextCursor": found.cursor})


@route("GET /uploads/{upload_id}", "UploadView", errors=(404,))
def get_upload(upload_id: str) -> Response:
    """One upload, with a short-lived download URL when ready."""
    upload_id = path_id(upload_id, RESOURCE_ID, UploadNotFound)
    upload = dependencies.uploads.get(http.caller().owner, upload_id)
    url = dependencies.uploads.download_url(upload) if upload.status == "ready" else None
    return json_response(200, R.upload(upload, download_url=url))


@route("DELETE /uploads/{upload_id}", "Message", errors=(404,))
def delete_upload(upload_id: str) -> Response:
    """Delete an upload and its object."""
    upload_id = path_id(upload_id, RESOURCE_ID, UploadNotFound)
    dependencies.uploads.delete(http.caller().owner, upload_id)
    return json_response(200, {"message": "Upload deleted"})


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every route (KeyError: an undocumented one)."""
    return document(route.operations(), title="Gatehouse API", version=API_VERSION)


@route("GET /openapi.json", "Answer", public=True)
def openapi() -> Response:
    """This document."""
    return json_response(200, openapi_document())


@app.on_dynamodb_record(
    stream_arn=EVENT_SOURCES.stream_arn, batch_size=100, starting_position="TRIM_HORIZON"
)
def on_table_change(event: DynamoDBEvent) -> None:
    """The table's changes as domain events on the bus; a failure retries the whole batch."""
    # The raw records: Chalice's record objects insist on fields the local runner may lack.
    records = event.to_dict()["Records"]
    events = [found for record in records for found in events_of(record)]
    dependencies.publisher.publish(events)
    logger.info(
        "table changes published",
        extra={"fields": {"records": len(records), "events": len(events)}},
    )


@app.lambda_function(name="rotate_signing_key")
def rotate_signing_key(event: dict[str, Any], context: Any) -> None:
    """Secrets Manager's rotation function for the JWT signing key (scheduled by the infra)."""
    rotation = SigningKeyRotation(
        dependencies.secrets, secret_id=dependencies.settings.jwt_secret_id
    )
    rotation.run(step=event["Step"], secret_id=event["SecretId"], token=event["ClientRequestToken"])


@app.schedule(Cron(0, 3, "*", "*", "?", "*"), name="nightly_backup")
def nightly_backup(event: CloudWatchEvent) -> None:
    """Export the table to the backups bucket (03:00 UTC); fails if the last export failed."""
    dependencies.jobs.backup()


@app.schedule(Rate(1, unit=Rate.HOURS), name="upload_sweep")
def upload_sweep(event: CloudWatchEvent) -> None:
    """Delete the objects and records of uploads abandoned past their deadline (hourly)."""
    dependencies.jobs.sweep()


@app.on_ws_connect()
def ws_connect(event: WebsocketEvent) -> dict[str, Any]:
    """Open a connection with the ticket of POST /auth/ws-ticket; any other answer than 2xx
    makes API Gateway refuse the handshake."""
    raw = event.to_dict()
    # CloudFront's /ws behaviour adds the edge key too; WAF cannot guard a WebSocket API, so
    # with EDGE_REQUIRED a handshake that skipped CloudFront is refused here.
    headers = {name.lower(): value for name, value in (raw.get("headers") or {}).items()}
    if edge_refused(dependencies.settings, headers, event.domain_name):
        logger.info("websocket refused", extra={"fields": {"reason": "no edge key"}})
        return {"statusCode": 403}
    query = raw.get("queryStringParameters") or {}
    try:
        owner = dependencies.connections.connect(event.connection_id, query.get("ticket"))
    except TicketRefused:
        # Never the ticket: it is a credential, however short-lived.
        logger.info("websocket refused", extra={"fields": {"connectionId": event.connection_id}})
        return {"statusCode": 401}
    logger.info("connected", extra={"fields": {"username": owner.username}})
    return {"statusCode": 200}


@app.on_ws_disconnect()
def ws_disconnect(event: WebsocketEvent) -> dict[str, Any]:
    """Forget the connection."""
    dependencies.connections.disconnect(event.connection_id)
    return {"statusCode": 200}


@app.on_ws_message()
def ws_message(event: WebsocketEvent) -> dict[str, Any]:
    """Clients need not send anything; whatever they send (a keep-alive) is answered by
    nothing, the route's 200."""
    return {"statusCode": 200}


@app.on_sqs_message(queue=EVENT_SOURCES.notify_queue, batch_size=10)
def notify_worker(event: SQSEvent) -> dict[str, Any]:
    """Push each event to its account's open WebSocket connections."""
    # Built inside the handler of each message: a failure to build is that message's failure.
    return handle_batch(event, lambda envelope: dependencies.notifier.push(envelope))


@app.on_sqs_message(queue=EVENT_SOURCES.mail_queue, batch_size=10)
def mail_worker(event: SQSEvent) -> dict[str, Any]:
    """Mail the security notices."""
    return handle_batch(event, lambda envelope: dependencies.notices.send(envelope))


app.register_middleware(request_log, "http")
# Inside request_log, so a refusal is logged and gets the usual headers.
app.register_middleware(http.require_edge, "http")
