"""Runtime configuration, read from the environment once per container."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class SettingsError(Exception):
    """An environment variable is missing or has an invalid value."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    table_name: str
    jwt_secret_id: str
    jwt_issuer: str = "gatehouse"
    jwt_audience: str = "gatehouse-api"
    access_token_ttl_seconds: int = 3600
    signing_key_cache_seconds: int = 300
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from a mapping such as ``os.environ``; raise naming the bad variable."""
        return cls(
            table_name=_required(env, "TABLE_NAME"),
            jwt_secret_id=_required(env, "JWT_SECRET_ID"),
            jwt_issuer=env.get("JWT_ISSUER", cls.jwt_issuer) or _empty("JWT_ISSUER"),
            jwt_audience=env.get("JWT_AUDIENCE", cls.jwt_audience) or _empty("JWT_AUDIENCE"),
            access_token_ttl_seconds=_seconds(
                env, "ACCESS_TOKEN_TTL_SECONDS", cls.access_token_ttl_seconds, maximum=86400
            ),
            signing_key_cache_seconds=_seconds(
                env, "SIGNING_KEY_CACHE_SECONDS", cls.signing_key_cache_seconds, maximum=3600
            ),
            log_level=_choice(
                env, "LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


def _empty(name: str) -> str:
    raise SettingsError(f"environment variable {name} must not be empty")


def _seconds(env: Mapping[str, str], name: str, default: int, *, maximum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None
    if not 1 <= value <= maximum:
        raise SettingsError(f"environment variable {name} must be between 1 and {maximum}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).upper()
    if value not in choices:
        raise SettingsError(f"environment variable {name} must be one of {', '.join(choices)}")
    return value
