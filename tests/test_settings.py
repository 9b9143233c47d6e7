from __future__ import annotations

import dataclasses

import pytest

from chalicelib.settings import Settings, SettingsError

REQUIRED = {"TABLE_NAME": "users", "JWT_SECRET_ID": "jwt"}


def test_defaults_apply_when_only_required_variables_are_set() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings == Settings(table_name="users", jwt_secret_id="jwt")
    assert settings.access_token_ttl_seconds == 3600
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
        }
    )
    assert (settings.jwt_issuer, settings.jwt_audience) == ("iss", "aud")
    assert settings.access_token_ttl_seconds == 900
    assert settings.signing_key_cache_seconds == 60
    assert settings.log_level == "DEBUG"


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.table_name = "other"  # type: ignore[misc]


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
    ],
)
def test_a_missing_or_bad_variable_fails_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)
