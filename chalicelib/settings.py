"""Runtime configuration, read from the environment once per container."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import urlsplit

# CloudFront sends EDGE_SECRET in this header to prove a request came through it.
EDGE_HEADER = "x-gatehouse-edge"
MIN_EDGE_SECRET = 32
# The admin listing's cursor holds a position per shard and must stay under 2,048 characters.
MAX_STATUS_INDEX_SHARDS = 32


class SettingsError(Exception):
    """An environment variable is missing or has an invalid value."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    table_name: str
    jwt_secret_id: str
    jwt_issuer: str = "gatehouse"
    jwt_audience: str = "gatehouse-api"
    access_token_ttl_seconds: int = 900
    signing_key_cache_seconds: int = 300
    log_level: str = "INFO"
    refresh_absolute_seconds: int = 30 * 86400
    refresh_idle_seconds: int = 7 * 86400
    refresh_grace_seconds: int = 10
    refresh_cookie_secure: bool = True
    refresh_cookie_path: str = "/api/auth"
    allowed_origins: frozenset[str] = frozenset()
    login_free_failures: int = 5
    login_max_backoff_seconds: int = 900
    login_failure_window_seconds: int = 3600
    ip_rate_limit: int = 60
    ip_rate_window_seconds: int = 60
    trusted_proxy_hops: int = 0
    site_origin_header: str | None = None
    edge_secret: str | None = field(default=None, repr=False)
    # With WAF on, every request must carry the edge key (it came through CloudFront and its web
    # ACL), except those on this domain (api.<domain>, behind a web ACL of its own).
    edge_required: bool = False
    edge_exempt_domain: str | None = None
    uploads_bucket: str | None = None
    upload_quota_count: int = 100
    upload_quota_bytes: int = 1024**3
    upload_rate_limit: int = 30
    upload_rate_window_seconds: int = 60
    clock_offset_file: str | None = None
    # Mail (chalicelib/mail.py): no MAIL_FROM means mail is off.
    mail_from: str | None = None
    ses_configuration_set: str | None = None
    site_url: str | None = None
    # Recovery mail and links (chalicelib/recovery.py): uses per account and per address.
    recovery_rate_limit: int = 5
    recovery_ip_rate_limit: int = 20
    recovery_rate_window_seconds: int = 3600
    recovery_answer_ms: int = 500
    # Login from devices an account does not know (chalicelib/limits.py): free failures per
    # LOGIN_FAILURE_WINDOW_SECONDS across every address, then the back-off.
    account_free_failures: int = 20
    # Events and real time (docs/EVENTS.md): the custom EventBridge bus the table's changes go
    # to; the WebSocket API's public URL (tickets point at it) and its @connections endpoint;
    # where the nightly export goes. None: that part is off.
    event_bus_name: str | None = None
    websocket_url: str | None = None
    websocket_endpoint: str | None = None
    backups_bucket: str | None = None
    # Index partitions per item status (docs/SCALING.md: lowering it needs tools/reindex.py).
    status_index_shards: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from a mapping such as ``os.environ``; raise naming the bad variable."""
        day = 86400
        settings = cls(
            table_name=_required(env, "TABLE_NAME"),
            jwt_secret_id=_required(env, "JWT_SECRET_ID"),
            jwt_issuer=_text(env, "JWT_ISSUER", cls.jwt_issuer),
            jwt_audience=_text(env, "JWT_AUDIENCE", cls.jwt_audience),
            access_token_ttl_seconds=_int(
                env, "ACCESS_TOKEN_TTL_SECONDS", cls.access_token_ttl_seconds, 1, day
            ),
            signing_key_cache_seconds=_int(
                env, "SIGNING_KEY_CACHE_SECONDS", cls.signing_key_cache_seconds, 1, 3600
            ),
            log_level=_choice(
                env, "LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
            refresh_absolute_seconds=_int(
                env, "REFRESH_ABSOLUTE_SECONDS", cls.refresh_absolute_seconds, 60, 365 * day
            ),
            refresh_idle_seconds=_int(
                env, "REFRESH_IDLE_SECONDS", cls.refresh_idle_seconds, 60, 365 * day
            ),
            refresh_grace_seconds=_int(
                env, "REFRESH_GRACE_SECONDS", cls.refresh_grace_seconds, 0, 60
            ),
            refresh_cookie_secure=_bool(env, "REFRESH_COOKIE_SECURE", cls.refresh_cookie_secure),
            refresh_cookie_path=_text(env, "REFRESH_COOKIE_PATH", cls.refresh_cookie_path),
            allowed_origins=frozenset(
                origin.strip().rstrip("/")
                for origin in env.get("ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            login_free_failures=_int(env, "LOGIN_FREE_FAILURES", cls.login_free_failures, 1, 1000),
            login_max_backoff_seconds=_int(
                env, "LOGIN_MAX_BACKOFF_SECONDS", cls.login_max_backoff_seconds, 1, day
            ),
            login_failure_window_seconds=_int(
                env, "LOGIN_FAILURE_WINDOW_SECONDS", cls.login_failure_window_seconds, 1, day
            ),
            ip_rate_limit=_int(env, "IP_RATE_LIMIT", cls.ip_rate_limit, 1, 1_000_000),
            ip_rate_window_seconds=_int(
                env, "IP_RATE_WINDOW_SECONDS", cls.ip_rate_window_seconds, 1, 3600
            ),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", cls.trusted_proxy_hops, 0, 5),
            site_origin_header=env.get("SITE_ORIGIN_HEADER", "").strip().lower() or None,
            edge_secret=_secret(env, "EDGE_SECRET"),
            edge_required=_bool(env, "EDGE_REQUIRED", cls.edge_required),
            edge_exempt_domain=env.get("EDGE_EXEMPT_DOMAIN", "").strip().lower() or None,
            uploads_bucket=env.get("UPLOADS_BUCKET", "").strip() or None,
            upload_quota_count=_int(
                env, "UPLOAD_QUOTA_COUNT", cls.upload_quota_count, 1, 1_000_000
            ),
            upload_quota_bytes=_int(
                env, "UPLOAD_QUOTA_BYTES", cls.upload_quota_bytes, 1024 * 1024, 2**50
            ),
            upload_rate_limit=_int(env, "UPLOAD_RATE_LIMIT", cls.upload_rate_limit, 1, 1_000_000),
            upload_rate_window_seconds=_int(
                env, "UPLOAD_RATE_WINDOW_SECONDS", cls.upload_rate_window_seconds, 1, 3600
            ),
            clock_offset_file=_clock_offset_file(env),
            mail_from=_mail_from(env),
            ses_configuration_set=_optional_match(
                env, "SES_CONFIGURATION_SET", _CONFIGURATION_SET, "an SES configuration set name"
            ),
            site_url=_site_url(env),
            recovery_rate_limit=_int(env, "RECOVERY_RATE_LIMIT", cls.recovery_rate_limit, 1, 1000),
            recovery_ip_rate_limit=_int(
                env, "RECOVERY_IP_RATE_LIMIT", cls.recovery_ip_rate_limit, 1, 100_000
            ),
            recovery_rate_window_seconds=_int(
                env, "RECOVERY_RATE_WINDOW_SECONDS", cls.recovery_rate_window_seconds, 60, day
            ),
            recovery_answer_ms=_int(env, "RECOVERY_ANSWER_MS", cls.recovery_answer_ms, 0, 5000),
            account_free_failures=_int(
                env, "ACCOUNT_FREE_FAILURES", cls.account_free_failures, 1, 100_000
            ),
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or None,
            websocket_url=_url(env, "WEBSOCKET_URL", ("ws", "wss")),
            websocket_endpoint=_url(env, "WEBSOCKET_ENDPOINT", ("http", "https")),
            backups_bucket=env.get("BACKUPS_BUCKET", "").strip() or None,
            status_index_shards=_int(
                env, "STATUS_INDEX_SHARDS", cls.status_index_shards, 1, MAX_STATUS_INDEX_SHARDS
            ),
        )
        if settings.edge_required and settings.edge_secret is None:
            # Refusing every request is no setting: without the key nothing could pass.
            raise SettingsError("environment variable EDGE_REQUIRED needs EDGE_SECRET")
        if settings.edge_exempt_domain and not settings.edge_required:
            raise SettingsError("environment variable EDGE_EXEMPT_DOMAIN needs EDGE_REQUIRED")
        return settings


def _clock_offset_file(env: Mapping[str, str]) -> str | None:
    """The local stages' test hook for moving time forward; never honoured in Lambda."""
    path = env.get("CLOCK_OFFSET_FILE", "").strip() or None
    if path is not None and "AWS_LAMBDA_FUNCTION_NAME" in env:
        raise SettingsError("environment variable CLOCK_OFFSET_FILE is for local stages only")
    return path


@dataclass(frozen=True)
class EventSources:
    """What the event handlers consume: the table's stream and the workers' queues.

    Read when Chalice packages the app, like the authorizer's TTL. The CDK app puts the deployed
    ARNs over these in the template (cdk/README.md); the local runner (tools/eventrunner.py)
    feeds each handler from the emulator's stream and the queues of these names.
    """

    stream_arn: str
    notify_queue: str
    mail_queue: str
    purge_queue: str


# Stands in for the stream's ARN, which exists only once the table is deployed.
UNDEPLOYED_STREAM = "arn:aws:dynamodb:eu-west-2:000000000000:table/gatehouse/stream/undeployed"


def event_sources(env: Mapping[str, str]) -> EventSources:
    return EventSources(
        stream_arn=_text(env, "TABLE_STREAM_ARN", UNDEPLOYED_STREAM),
        notify_queue=_text(env, "NOTIFY_QUEUE", "gatehouse-notify"),
        mail_queue=_text(env, "MAIL_QUEUE", "gatehouse-mail"),
        purge_queue=_text(env, "PURGE_QUEUE", "gatehouse-purge"),
    )


def authorizer_ttl_seconds(env: Mapping[str, str]) -> int:
    """API Gateway's authorizer cache TTL; read when Chalice packages the app."""
    return _int(env, "AUTHORIZER_TTL_SECONDS", 60, 0, 3600)


def api_key_required(env: Mapping[str, str]) -> bool:
    """Whether API Gateway demands an API key on every route; read when Chalice packages."""
    return _bool(env, "API_KEY_REQUIRED", False)


def cors_allow_origin(env: Mapping[str, str]) -> str | None:
    """The one origin allowed to call the API cross-origin (api.<domain>); packaging time."""
    origin = env.get("CORS_ALLOW_ORIGIN", "").strip().rstrip("/")
    if not origin:
        return None
    scheme, _, host = origin.partition("://")
    if scheme not in {"https", "http"} or not host or "/" in host or "*" in host:
        raise SettingsError("environment variable CORS_ALLOW_ORIGIN must be one origin")
    return origin


def _secret(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if value and len(value) < MIN_EDGE_SECRET:
        raise SettingsError(
            f"environment variable {name} must be at least {MIN_EDGE_SECRET} characters"
        )
    return value or None


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value:
        raise SettingsError(f"environment variable {name} must not be empty")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"environment variable {name} must be between {minimum} and {maximum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    if raw.lower() in {"true", "1", "yes"}:
        return True
    if raw.lower() in {"false", "0", "no"}:
        return False
    raise SettingsError(f"environment variable {name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).upper()
    if value not in choices:
        raise SettingsError(f"environment variable {name} must be one of {', '.join(choices)}")
    return value


# SES: letters, digits, "-" and "_", at most 64 characters.
_CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _mail_from(env: Mapping[str, str]) -> str | None:
    """The sender, ``no-reply@example.com`` or ``Gatehouse <no-reply@example.com>``."""
    value = env.get("MAIL_FROM", "").strip()
    if not value:
        return None
    _, address = parseaddr(value)
    if not _ADDRESS.match(address) or any(c in value for c in "\r\n") or not value.isascii():
        raise SettingsError(
            "environment variable MAIL_FROM must be an address, optionally with an ASCII "
            "display name: Name <address@example.com>"
        )
    if not env.get("SITE_URL", "").strip():
        raise SettingsError("environment variable SITE_URL is required when MAIL_FROM is set")
    return value


def _site_url(env: Mapping[str, str]) -> str | None:
    """The site's public origin, which links in mail point at."""
    value = env.get("SITE_URL", "").strip()
    if not value:
        return None
    parts = urlsplit(value.removesuffix("/"))
    if (
        parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or "*" in value
    ):
        raise SettingsError(
            "environment variable SITE_URL must be an http(s) origin such as https://example.com"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    """An absolute URL with one of ``schemes`` and no query, without a trailing slash."""
    value = env.get(name, "").strip().removesuffix("/")
    if not value:
        return None
    parts = urlsplit(value)
    if (
        parts.scheme not in schemes
        or not parts.hostname
        or parts.username is not None
        or parts.query
        or parts.fragment
    ):
        raise SettingsError(
            f"environment variable {name} must be a {' or '.join(schemes)} URL without a query"
        )
    return value


def _optional_match(
    env: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str
) -> str | None:
    value = env.get(name, "").strip()
    if value and not pattern.match(value):
        raise SettingsError(f"environment variable {name} must be {what}")
    return value or None
