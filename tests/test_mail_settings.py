"""The mail settings: MAIL_FROM, SES_CONFIGURATION_SET and SITE_URL."""

from __future__ import annotations

import pytest

from chalicelib.settings import Settings, SettingsError

REQUIRED = {"TABLE_NAME": "users", "JWT_SECRET_ID": "jwt"}
MAIL = {
    **REQUIRED,
    "MAIL_FROM": "Gatehouse <no-reply@example.com>",
    "SITE_URL": "https://a.example",
}


def test_mail_is_off_by_default() -> None:
    settings = Settings.from_env(REQUIRED)
    assert (settings.mail_from, settings.ses_configuration_set, settings.site_url) == (
        None,
        None,
        None,
    )


def test_every_mail_variable_is_read() -> None:
    settings = Settings.from_env({**MAIL, "SES_CONFIGURATION_SET": "gatehouse-production"})
    assert settings.mail_from == "Gatehouse <no-reply@example.com>"
    assert settings.ses_configuration_set == "gatehouse-production"
    assert settings.site_url == "https://a.example"


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
        ("https://example.com/", "https://example.com"),
        (" https://example.com ", "https://example.com"),
    ],
)
def test_the_site_url_is_an_origin(raw: str, origin: str) -> None:
    assert Settings.from_env({**REQUIRED, "SITE_URL": raw}).site_url == origin


def test_a_bare_address_is_a_sender() -> None:
    settings = Settings.from_env({**MAIL, "MAIL_FROM": "no-reply@example.com"})
    assert settings.mail_from == "no-reply@example.com"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAIL_FROM": "Gatehouse"}, "MAIL_FROM"),
        ({"MAIL_FROM": "Gatehouse <no-reply>"}, "MAIL_FROM"),
        ({"MAIL_FROM": "a@example.com\r\nBcc: b@example.com"}, "MAIL_FROM"),
        ({"MAIL_FROM": "Gâtehouse <no-reply@example.com>"}, "MAIL_FROM"),
        ({"MAIL_FROM": "no-reply@example.com", "SITE_URL": ""}, "SITE_URL is required"),
        ({"SITE_URL": "example.com"}, "SITE_URL"),
        ({"SITE_URL": "ftp://example.com"}, "SITE_URL"),
        ({"SITE_URL": "https://example.com/app"}, "SITE_URL"),
        ({"SITE_URL": "https://example.com?x=1"}, "SITE_URL"),
        ({"SITE_URL": "https://user@example.com"}, "SITE_URL"),
        ({"SITE_URL": "https://*.example.com"}, "SITE_URL"),
        ({"SES_CONFIGURATION_SET": "has space"}, "SES_CONFIGURATION_SET"),
        ({"SES_CONFIGURATION_SET": "x" * 65}, "SES_CONFIGURATION_SET"),
    ],
)
def test_a_bad_mail_variable_fails_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({**REQUIRED, **env})
