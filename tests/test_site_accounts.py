"""Account recovery, email and two-factor pages in a real browser against the real stack.

The same stack, browser and fixtures as ``tests/test_site.py``; mail is read from the local mail
viewer's ``GET /api/messages``, and TOTP codes are computed here from the key the page shows, on
the API's clock (which the tests may move forward).
"""

# The fixtures come from tests/test_site.py (one stack per module, the same browser set-up), so
# the tests' parameters carry the names of those imports.
# ruff: noqa: F811

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import pytest
import requests
from playwright.sync_api import Page, expect

from tests.localstack import RunningStack
from tests.test_site import (  # noqa: F401 (the fixtures)
    PASSWORD,
    OpenPage,
    browser,
    contexts,
    csp_violations,
    expire_access_tokens,
    log_in,
    open_page,
    playwright,
    refusing,
    screenshot,
    sign_up,
    stack,
    unique,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NEW_PASSWORD = "a fresh passphrase at last"
MAIL_WAIT_SECONDS = 15
STEP_SECONDS = 30


def sign_up_with_email(page: Page, username: str, address: str) -> None:
    page.goto("/signup")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Email (optional)").fill(address)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))


def mailed_link(stack: RunningStack, address: str, path: str) -> str:
    """The newest link to ``path`` mailed to ``address``; fails after MAIL_WAIT_SECONDS."""
    pattern = re.compile(re.escape(f"{stack.site_url}{path}?token=") + r"[^\s<>\"]+")
    deadline = time.monotonic() + MAIL_WAIT_SECONDS
    while time.monotonic() < deadline:
        messages: list[dict[str, Any]] = requests.get(
            f"{stack.mail_url}/api/messages", timeout=10
        ).json()
        for message in messages:  # newest first
            found = pattern.search(message["text"])
            if address in message["to"] and found:
                return found.group(0)
        time.sleep(0.2)
    pytest.fail(f"no mail to {address} with a link to {path} within {MAIL_WAIT_SECONDS} s")


def posts_to(page: Page, path: str) -> list[str]:
    """Every POST the page makes to the API route ``path``, recorded as it happens."""
    seen: list[str] = []
    page.on(
        "request",
        lambda request: (
            seen.append(request.url)
            if request.method == "POST" and request.url.endswith(f"/api{path}")
            else None
        ),
    )
    return seen


def confirm_address(page: Page, stack: RunningStack, address: str) -> None:
    link = mailed_link(stack, address, "/verify-email")
    verifications = posts_to(page, "/auth/email/verify")
    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm your email address")).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert verifications == []  # opening the link does nothing: mail scanners open links too
    page.get_by_role("button", name="Confirm my email address").click()
    expect(page.get_by_role("status")).not_to_be_empty()
    assert len(verifications) == 1


class Authenticator:
    """An authenticator app: codes for the API's clock, never one for a step already used."""

    def __init__(self, secret: str, clock_offset: Path) -> None:
        self._totp = pyotp.TOTP(secret)
        self._offset = clock_offset
        self._last_step = -1

    def code(self) -> str:
        # The API takes the current step and its neighbours, each once: wait (less than a step)
        # when both the current one and the next are used up.
        deadline = time.monotonic() + STEP_SECONDS + 5
        while True:
            now = time.time() + float(self._offset.read_text() or 0)
            current = int(now // STEP_SECONDS)
            step = max(current, self._last_step + 1)
            if step <= current + 1:
                self._last_step = step
                return self._totp.at(step * STEP_SECONDS)
            if time.monotonic() > deadline:
                pytest.fail("no fresh TOTP step came")
            time.sleep(0.5)


def test_forgot_password_then_reset_by_the_mailed_link_ends_every_session(
    open_page: OpenPage, stack: RunningStack
) -> None:
    username = unique("rita")
    address = f"{username}@example.com"
    laptop = open_page()
    sign_up_with_email(laptop, username, address)
    confirm_address(laptop, stack, address)
    laptop.get_by_role("button", name="Log out").click()
    expect(laptop).to_have_url(re.compile(r"/login$"))

    phone = open_page(width=360)  # another browser, logged in before the reset
    # Without live updates (tests/test_site_live.py has them): only its next request can tell.
    phone.route("**/api/auth/ws-ticket", refusing(503, "Live updates are off"))
    phone.goto("/login")
    log_in(phone, username)
    expect(phone).to_have_url(re.compile(r"/dashboard$"))

    laptop.get_by_role("link", name="Forgot password?").click()
    expect(laptop).to_have_url(re.compile(r"/forgot$"))
    laptop.get_by_label("Username or email").fill(address)
    laptop.get_by_role("button", name="Send reset link").click()
    expect(laptop.get_by_role("status")).not_to_be_empty()
    screenshot(laptop, "forgot")

    link = mailed_link(stack, address, "/reset")
    resets = posts_to(laptop, "/auth/password/reset")
    laptop.goto(link)
    expect(laptop.get_by_role("heading", name="Choose a new password")).to_be_visible()
    laptop.wait_for_load_state("networkidle")
    assert resets == []  # the link only opens the form
    laptop.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    laptop.get_by_label("Repeat new password").fill(NEW_PASSWORD + " typo")
    laptop.get_by_role("button", name="Set new password").click()
    expect(laptop.get_by_role("alert")).to_have_text("The two passwords differ.")
    assert resets == []
    laptop.get_by_label("Repeat new password").fill(NEW_PASSWORD)
    laptop.get_by_role("button", name="Set new password").click()
    expect(laptop.get_by_role("status")).not_to_be_empty()
    assert len(resets) == 1

    # The phone's session ended with the reset: its next call is refused, and it is sent to log in.
    phone.get_by_role("link", name="Account").click()
    expect(phone).to_have_url(re.compile(r"/login\?next=%2Faccount$"))
    expect(phone.get_by_role("status")).to_have_text("Your session has ended; please log in again.")

    # The link worked once.
    again = open_page()
    again.goto(link)
    again.get_by_label("New password", exact=True).fill("yet another passphrase")
    again.get_by_label("Repeat new password").fill("yet another passphrase")
    again.get_by_role("button", name="Set new password").click()
    expect(again.get_by_role("alert")).not_to_be_empty()
    expect(again.get_by_role("link", name="Ask for a new link")).to_be_visible()

    laptop.get_by_role("link", name="Log in", exact=True).last.click()
    expect(laptop).to_have_url(re.compile(r"/login$"))
    log_in(laptop, username, PASSWORD)
    expect(laptop.get_by_role("alert")).to_have_text("Invalid username or password")
    log_in(laptop, username, NEW_PASSWORD)
    expect(laptop).to_have_url(re.compile(r"/dashboard$"))
    expect(laptop.get_by_test_id("profile-username")).to_have_text(username)


def test_sign_up_with_an_email_and_confirm_it_by_the_mailed_link(
    open_page: OpenPage, stack: RunningStack
) -> None:
    username = unique("sami")
    address = f"{username}@example.com"
    page = open_page()
    sign_up_with_email(page, username, address)
    page.get_by_role("link", name="Account").click()
    email = page.get_by_role("region", name="Email")
    expect(email.get_by_test_id("email-address")).to_have_text(address)
    expect(email.get_by_test_id("email-status")).to_have_text("not verified")

    confirm_address(page, stack, address)
    screenshot(page, "verify-email")
    page.get_by_role("link", name="Go to your account").click()
    expect(email.get_by_test_id("email-address")).to_have_text(address)
    expect(email.get_by_test_id("email-status")).to_have_text("verified")
    page.reload()
    expect(email.get_by_test_id("email-status")).to_have_text("verified")

    # A link works once.
    used = mailed_link(stack, address, "/verify-email")
    other = open_page()
    other.goto(used)
    other.get_by_role("button", name="Confirm my email address").click()
    expect(other.get_by_role("alert")).not_to_be_empty()


def test_two_factor_set_up_login_with_a_code_and_with_a_recovery_code_once(
    open_page: OpenPage,
    stack: RunningStack,
    clock_offset: Path,
    expire_access_tokens: Callable[[], None],
) -> None:
    username = unique("tomo")
    page = open_page(height=900)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_up(page, username)
    page.get_by_role("link", name="Account").click()
    section = page.get_by_role("region", name="Two-factor authentication")
    expect(section.get_by_test_id("mfa-status")).to_have_text("off")

    section.get_by_role("button", name="Set up two-factor authentication").click()
    qr = section.get_by_role("img", name=re.compile("QR code"))
    expect(qr).to_be_visible()
    # Decoded and drawn, under the site's CSP (img-src allows data: images).
    assert qr.evaluate("image => image.decode().then(() => image.naturalWidth)") > 0
    app = Authenticator(section.get_by_test_id("totp-secret").inner_text().strip(), clock_offset)
    screenshot(page, "two-factor-set-up")
    section.get_by_label("The 6-digit code the app shows").fill("000000")
    section.get_by_role("button", name="Turn on").click()
    expect(section.get_by_role("alert")).not_to_be_empty()
    section.get_by_label("The 6-digit code the app shows").fill(app.code())
    section.get_by_role("button", name="Turn on").click()

    shown = section.get_by_test_id("recovery-code")
    expect(shown).to_have_count(10)
    codes = [code.strip() for code in shown.all_inner_texts()]
    assert len(set(codes)) == 10
    expect(section.get_by_text("Store these recovery codes now.")).to_be_visible()
    with page.expect_download() as downloading:
        section.get_by_role("button", name="Download").click()
    saved = Path(downloading.value.path()).read_text()
    assert all(code in saved for code in codes)
    assert downloading.value.suggested_filename.endswith(".txt")
    section.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status")).to_have_text("Recovery codes copied to the clipboard.")
    assert all(code in page.evaluate("navigator.clipboard.readText()") for code in codes)
    screenshot(page, "recovery-codes")
    section.get_by_role("button", name="I have stored them").click()
    expect(section.get_by_test_id("mfa-status")).to_have_text("on")
    expect(page.get_by_test_id("event").first).to_contain_text("mfa enabled")
    expect(shown).to_have_count(0)  # shown once
    page.reload()
    expect(section.get_by_test_id("mfa-status")).to_have_text("on")
    expect(shown).to_have_count(0)

    def log_out() -> None:
        page.get_by_role("button", name="Log out", exact=True).click()
        expect(page).to_have_url(re.compile(r"/login$"))

    def code_step(code: str) -> None:
        log_in(page, username)
        expect(page.get_by_label("Verification code")).to_be_focused()
        page.get_by_label("Verification code").fill(code)
        page.get_by_role("button", name="Verify").click()

    # The password, then a code from the app.
    log_out()
    log_in(page, username)
    expect(page.get_by_label("Verification code")).to_be_visible()
    expect(page.get_by_text("one of your recovery codes")).to_be_visible()
    screenshot(page, "login-code")
    page.get_by_label("Verification code").fill(app.code())
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_test_id("profile-username")).to_have_text(username)

    # A recovery code works, once.
    log_out()
    code_step(codes[0].upper())
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    log_out()
    code_step(codes[0])
    expect(page.get_by_role("alert")).not_to_be_empty()
    expect(page.get_by_role("alert")).not_to_have_text(re.compile(r"^Sign-in expired"))
    expect(page.get_by_label("Verification code")).to_be_visible()  # still the code step
    expect(page).to_have_url(re.compile(r"/login$"))

    # A challenge that expired sends the visitor back to the password, saying why.
    expire_access_tokens()  # moves the API's clock past the challenge's lifetime too
    page.get_by_label("Verification code").fill(app.code())
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"^Sign-in expired"))
    expect(page.get_by_label("Username")).to_be_visible()
    expect(page.get_by_label("Verification code")).to_have_count(0)

    # Off again, with the password and a code; then the password alone logs in.
    code_step(codes[1])
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    page.get_by_role("link", name="Account").click()
    section.get_by_label("Your password").fill(PASSWORD)
    section.get_by_label("Code from your app, or a recovery code").fill(app.code())
    section.get_by_role("button", name="Turn off two-factor authentication").click()
    expect(section.get_by_test_id("mfa-status")).to_have_text("off")
    log_out()
    log_in(page, username)
    expect(page).to_have_url(re.compile(r"/dashboard$"))
