from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chalicelib.clock import ShiftedClock, utc_now
from chalicelib.settings import (
    Settings,
    SettingsError,
    api_key_required,
    authorizer_ttl_seconds,
    cors_allow_origin,
)

REQUIRED = {"TABLE_NAME": "users", "JWT_SECRET_ID": "jwt"}


def test_defaults_apply_when_only_required_variables_are_set() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings == Settings(table_name="users", jwt_secret_id="jwt")
    assert settings.access_token_ttl_seconds == 900
    assert settings.refresh_cookie_secure is True
    assert settings.log_level == "INFO"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            **REQUIRED,
            "JWT_ISSUER": "iss",
            "JWT_AUDIENCE": "aud",
            "ACCESS_TOKEN_TTL_SECONDS": "900",
            "SIGNING_KEY_CACHE_SECONDS": "60",
            "LOG_LEVEL": "debug",
            "REFRESH_ABSOLUTE_SECONDS": "86400",
            "REFRESH_IDLE_SECONDS": "3600",
            "REFRESH_GRACE_SECONDS": "5",
            "REFRESH_COOKIE_SECURE": "false",
            "REFRESH_COOKIE_PATH": "/auth",
            "ALLOWED_ORIGINS": "https://a.example, https://b.example/",
            "LOGIN_FREE_FAILURES": "3",
            "LOGIN_MAX_BACKOFF_SECONDS": "60",
            "LOGIN_FAILURE_WINDOW_SECONDS": "600",
            "IP_RATE_LIMIT": "1000",
            "IP_RATE_WINDOW_SECONDS": "10",
            "TRUSTED_PROXY_HOPS": "1",
            "SITE_ORIGIN_HEADER": "X-Gatehouse-Site-Origin",
            "EDGE_SECRET": "s" * 32,
        }
    )
    assert (settings.jwt_issuer, settings.jwt_audience) == ("iss", "aud")
    assert settings.access_token_ttl_seconds == 900
    assert settings.signing_key_cache_seconds == 60
    assert settings.log_level == "DEBUG"
    assert (settings.refresh_absolute_seconds, settings.refresh_idle_seconds) == (86400, 3600)
    assert settings.refresh_grace_seconds == 5
    assert settings.refresh_cookie_secure is False
    assert settings.refresh_cookie_path == "/auth"
    assert settings.allowed_origins == {"https://a.example", "https://b.example"}
    assert settings.login_free_failures == 3
    assert settings.login_max_backoff_seconds == 60
    assert settings.login_failure_window_seconds == 600
    assert (settings.ip_rate_limit, settings.ip_rate_window_seconds) == (1000, 10)
    assert settings.trusted_proxy_hops == 1
    assert settings.site_origin_header == "x-gatehouse-site-origin"
    assert settings.edge_secret == "s" * 32
    assert "s" * 32 not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.table_name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "origin"),
    [("", None), ("https://example.com/", "https://example.com"), ("  ", None)],
)
def test_the_cors_origin_is_one_origin_or_none(raw: str, origin: str | None) -> None:
    assert cors_allow_origin({"CORS_ALLOW_ORIGIN": raw}) == origin


@pytest.mark.parametrize("raw", ["*", "https://*.example.com", "example.com", "https://a.com/path"])
def test_a_cors_origin_that_is_not_one_origin_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="CORS_ALLOW_ORIGIN"):
        cors_allow_origin({"CORS_ALLOW_ORIGIN": raw})


def test_api_keys_are_off_unless_asked_for() -> None:
    assert api_key_required({}) is False
    assert api_key_required({"API_KEY_REQUIRED": "true"}) is True
    with pytest.raises(SettingsError, match="API_KEY_REQUIRED"):
        api_key_required({"API_KEY_REQUIRED": "maybe"})


def test_authorizer_ttl_is_validated_and_defaults_to_a_minute() -> None:
    assert authorizer_ttl_seconds({}) == 60
    assert authorizer_ttl_seconds({"AUTHORIZER_TTL_SECONDS": "0"}) == 0
    with pytest.raises(SettingsError, match="AUTHORIZER_TTL_SECONDS"):
        authorizer_ttl_seconds({"AUTHORIZER_TTL_SECONDS": "3601"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JWT_SECRET_ID": "jwt"}, "TABLE_NAME"),
        ({"TABLE_NAME": "  ", "JWT_SECRET_ID": "jwt"}, "TABLE_NAME"),
        ({"TABLE_NAME": "users"}, "JWT_SECRET_ID"),
        ({**REQUIRED, "ACCESS_TOKEN_TTL_SECONDS": "soon"}, "ACCESS_TOKEN_TTL_SECONDS"),
        ({**REQUIRED, "ACCESS_TOKEN_TTL_SECONDS": "0"}, "ACCESS_TOKEN_TTL_SECONDS"),
        ({**REQUIRED, "ACCESS_TOKEN_TTL_SECONDS": "86401"}, "ACCESS_TOKEN_TTL_SECONDS"),
        ({**REQUIRED, "SIGNING_KEY_CACHE_SECONDS": "-5"}, "SIGNING_KEY_CACHE_SECONDS"),
        ({**REQUIRED, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({**REQUIRED, "JWT_ISSUER": ""}, "JWT_ISSUER"),
        ({**REQUIRED, "JWT_AUDIENCE": ""}, "JWT_AUDIENCE"),
        ({**REQUIRED, "REFRESH_COOKIE_SECURE": "maybe"}, "REFRESH_COOKIE_SECURE"),
        ({**REQUIRED, "REFRESH_GRACE_SECONDS": "61"}, "REFRESH_GRACE_SECONDS"),
        ({**REQUIRED, "IP_RATE_LIMIT": "0"}, "IP_RATE_LIMIT"),
        ({**REQUIRED, "TRUSTED_PROXY_HOPS": "-1"}, "TRUSTED_PROXY_HOPS"),
        ({**REQUIRED, "EDGE_SECRET": "short"}, "EDGE_SECRET"),
    ],
)
def test_a_missing_or_bad_variable_fails_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_the_clock_offset_file_is_refused_inside_lambda() -> None:
    local = Settings.from_env({**REQUIRED, "CLOCK_OFFSET_FILE": ".local/clock-offset"})
    assert local.clock_offset_file == ".local/clock-offset"
    with pytest.raises(SettingsError, match="CLOCK_OFFSET_FILE"):
        Settings.from_env({**REQUIRED, "CLOCK_OFFSET_FILE": "x", "AWS_LAMBDA_FUNCTION_NAME": "api"})


def test_a_shifted_clock_adds_the_seconds_in_its_file(tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    clock = ShiftedClock(offset)
    assert abs((clock() - utc_now()).total_seconds()) < 5
    offset.write_text("3600")
    assert 3595 < (clock() - utc_now()).total_seconds() < 3605


def test_upload_quota_and_rate_have_defaults_are_read_and_are_validated() -> None:
    defaults = Settings.from_env(REQUIRED)
    assert (defaults.upload_quota_count, defaults.upload_quota_bytes) == (100, 1024**3)
    assert (defaults.upload_rate_limit, defaults.upload_rate_window_seconds) == (30, 60)
    values = {
        "UPLOAD_QUOTA_COUNT": "5",
        "UPLOAD_QUOTA_BYTES": str(2 * 1024 * 1024),
        "UPLOAD_RATE_LIMIT": "2",
        "UPLOAD_RATE_WINDOW_SECONDS": "10",
    }
    read = Settings.from_env({**REQUIRED, **values})
    assert (read.upload_quota_count, read.upload_quota_bytes) == (5, 2 * 1024 * 1024)
    assert (read.upload_rate_limit, read.upload_rate_window_seconds) == (2, 10)
    for name, bad in [
        ("UPLOAD_QUOTA_COUNT", "0"),
        ("UPLOAD_QUOTA_BYTES", "1000"),  # below the 1 MiB floor
        ("UPLOAD_RATE_LIMIT", "x"),
        ("UPLOAD_RATE_WINDOW_SECONDS", "3601"),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({**REQUIRED, name: bad})


def test_status_index_shards_is_bounded() -> None:
    assert Settings.from_env(REQUIRED).status_index_shards == 8
    assert Settings.from_env({**REQUIRED, "STATUS_INDEX_SHARDS": "3"}).status_index_shards == 3
    for bad in ("0", "33", "many"):
        with pytest.raises(SettingsError, match="STATUS_INDEX_SHARDS"):
            Settings.from_env({**REQUIRED, "STATUS_INDEX_SHARDS": bad})
