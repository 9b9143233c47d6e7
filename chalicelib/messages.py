"""The mails Gatehouse sends, each as plain text and HTML from one small layout.

Every value put into the HTML is escaped: a username or an address is the user's own text.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from chalicelib.mail import Message

PRODUCT = "Gatehouse"
VERIFY_HOURS = 24
RESET_HOURS = 1


def verify_email(to: str, *, site_url: str, token: str, username: str) -> Message:
    return _compose(
        to,
        "Confirm your email address",
        username=username,
        paragraphs=[
            f"Confirm that this is the email address of your {PRODUCT} account {username}.",
            f"The link is valid for {VERIFY_HOURS} hours.",
        ],
        action=("Confirm my address", _link(site_url, "/verify-email", token)),
        footer="If you did not sign up, ignore this mail: the address stays unconfirmed.",
    )


def password_reset(to: str, *, site_url: str, token: str, username: str) -> Message:
    return _compose(
        to,
        "Reset your password",
        username=username,
        paragraphs=[
            f"Someone asked to reset the password of your {PRODUCT} account {username}.",
            f"The link is valid for {RESET_HOURS} hour and works once.",
        ],
        action=("Choose a new password", _link(site_url, "/reset", token)),
        footer="If you did not ask, ignore this mail: your password stays as it is.",
    )


def password_changed(to: str, *, username: str) -> Message:
    return _compose(
        to,
        "Your password was changed",
        username=username,
        paragraphs=[f"The password of your {PRODUCT} account {username} was just changed."],
        footer=_NOT_YOU,
    )


def email_changed(to: str, *, username: str, new_address: str) -> Message:
    """Sent to the address the account had before."""
    return _compose(
        to,
        "Your email address was changed",
        username=username,
        paragraphs=[
            f"The email address of your {PRODUCT} account {username} was changed to "
            f"{new_address}. Mail for the account no longer comes to this address."
        ],
        footer=_NOT_YOU,
    )


def mfa_enabled(to: str, *, username: str) -> Message:
    return _compose(
        to,
        "Two-step verification is on",
        username=username,
        paragraphs=[
            f"Two-step verification was turned on for your {PRODUCT} account {username}. "
            "Logging in now also asks for a code from your authenticator app."
        ],
        footer=_NOT_YOU,
    )


def mfa_disabled(to: str, *, username: str) -> Message:
    return _compose(
        to,
        "Two-step verification is off",
        username=username,
        paragraphs=[
            f"Two-step verification was turned off for your {PRODUCT} account {username}. "
            "Logging in now needs only the password."
        ],
        footer=_NOT_YOU,
    )


_NOT_YOU = (
    "If this was not you, reset your password now and log out everywhere from the account page."
)


def _link(site_url: str, path: str, token: str) -> str:
    return f"{site_url}{path}?token={quote(token, safe='')}"


def _compose(
    to: str,
    subject: str,
    *,
    username: str,
    paragraphs: list[str],
    footer: str,
    action: tuple[str, str] | None = None,
) -> Message:
    """The one layout: a greeting, the paragraphs, an optional link, a footer."""
    greeting = f"Hello {username},"
    text_parts = [greeting, *paragraphs]
    html_parts = [f"<p>{escape(part)}</p>" for part in (greeting, *paragraphs)]
    if action is not None:
        label, url = action
        text_parts.append(f"{label}:\n{url}")
        html_parts.append(f'<p><a href="{escape(url)}">{escape(label)}</a></p>')
        html_parts.append(f"<p>Or paste this link into your browser:<br>{escape(url)}</p>")
    text_parts += [footer, f"-- {PRODUCT}"]
    html_parts += [f'<p style="color:#555">{escape(footer)}</p>', f"<p>{PRODUCT}</p>"]
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head>"
        '<body style="font-family:sans-serif;line-height:1.5;max-width:36em">'
        + "".join(html_parts)
        + "</body></html>"
    )
    return Message(to=to, subject=subject, text="\n\n".join(text_parts) + "\n", html=html)
