"""The site in a real browser (Debian's Chromium, driven by Playwright) against the real stack.

The stack is ``python -m tools.devstack --site build``: the emulator, ``chalice local`` and the
built site (``make site``) behind the same ``/api`` proxy as deployed, on free ports; one stack
for the module. Tokens expire by moving the API's clock (``CLOCK_OFFSET_FILE``), not by waiting,
and every wait has a deadline. Screenshots of the main pages go to ``.local/screenshots/``, or
to ``SCREENSHOTS_DIR``: ``make screenshots`` sets it to ``docs/screenshots`` (the README's).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Route,
    expect,
    sync_playwright,
)

from chalicelib.settings import Settings
from tests.conftest import ROOT
from tests.localstack import RunningStack, advance_clock, start

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Ignored by git, so `make test` leaves the tree clean; `make screenshots` refreshes the README's.
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", ".local/screenshots")
PASSWORD = "correct horse battery"
# The stack's access tokens live as long as in production; tests move its clock to expire them.
ACCESS_TOKEN_TTL_SECONDS = Settings.access_token_ttl_seconds
# These tests sign up and log in far more often than a person; the per-IP limit has its own tests.
STACK_ENV = {"IP_RATE_LIMIT": "100000"}
# How long a test waits for something the page does by itself (a request to hold, say).
WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def stack(clock_offset: Path) -> Iterator[RunningStack]:
    """One stack for the module: every test signs up its own accounts, so none interferes."""
    if not (ROOT / "frontend" / "build" / "200.html").is_file():
        pytest.fail("the site is not built: run `make site` (make test does)")
    running = start(
        [sys.executable, "-m", "tools.devstack", "--site", "build"],
        {**STACK_ENV, "CLOCK_OFFSET_FILE": str(clock_offset)},
    )
    yield running
    if running.process.poll() is None:
        running.stop(signal.SIGTERM)


@pytest.fixture
def expire_access_tokens(clock_offset: Path) -> Callable[[], None]:
    """Moves the API's clock past the lifetime of every access token issued so far.

    Refresh tokens outlive the shift (days), so a session goes on with a renewed token. The
    offset only grows: the API's time never goes back for the tests that follow.
    """

    def expire() -> None:
        advance_clock(clock_offset, ACCESS_TOKEN_TTL_SECONDS + 60)

    return expire


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs Debian's chromium")
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts (separate cookie jars: separate browsers) closed after the test."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


@pytest.fixture
def csp_violations() -> Iterator[list[str]]:
    """What the browser refused under the site server's CSP, CloudFront's own: nothing, ever."""
    refused: list[str] = []
    yield refused
    assert refused == []


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(
    browser: Browser,
    stack: RunningStack,
    contexts: list[BrowserContext],
    csp_violations: list[str],
) -> OpenPage:
    return _opener(browser, stack, contexts, csp_violations)


def _opener(
    browser: Browser, stack: RunningStack, contexts: list[BrowserContext], refused: list[str]
) -> OpenPage:
    def record(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    def open_page(width: int = 1000, height: int = 760) -> Page:
        context = browser.new_context(
            base_url=stack.site_url, viewport={"width": width, "height": height}
        )
        context.set_default_timeout(15_000)
        context.on("console", record)
        contexts.append(context)
        return context.new_page()

    return open_page


def wait_until(page: Page, done: Callable[[], bool], what: str) -> None:
    """Lets the page run until ``done()``; fails the test, naming ``what``, after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_SECONDS} s waiting for {what}")
        page.wait_for_timeout(50)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def screenshot(page: Page, name: str, *, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def sign_up(page: Page, username: str) -> None:
    page.goto("/signup")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_test_id("profile-username")).to_have_text(username)


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def api_token(stack: RunningStack, username: str) -> str:
    """A second client of the same account, straight on the API (its own session)."""
    response = requests.post(
        f"{stack.api_url}/auth/login",
        json={"username": username, "password": PASSWORD, "refreshTokenDelivery": "body"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def api(stack: RunningStack, token: str, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(
        method,
        f"{stack.api_url}{path}",
        headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
        timeout=10,
        **kwargs,
    )
    assert response.ok, response.text
    return response.json()


def add_item(page: Page, name: str, status: str = "active") -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Status", exact=True).select_option(status)
    page.get_by_role("button", name="Add item").click()
    expect(page.get_by_role("status")).to_contain_text(f"Created “{name}”")


def items(page: Page) -> Any:
    return page.get_by_test_id("item")


def test_sign_up_log_in_and_the_dashboard_shows_the_profile(open_page: OpenPage) -> None:
    page = open_page()
    page.goto("/")
    expect(page.get_by_role("heading", name="Gatehouse")).to_be_visible()
    screenshot(page, "home")

    username = unique("alice")
    sign_up(page, username)
    expect(page.get_by_test_id("profile-role")).to_have_text("user")
    expect(page.get_by_test_id("nav-username")).to_have_text(username)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    log_in(page, username)
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_test_id("profile-username")).to_have_text(username)
    expect(page.get_by_test_id("profile-role")).to_have_text("user")


def test_a_wrong_password_shows_the_servers_message(
    open_page: OpenPage, stack: RunningStack
) -> None:
    username = unique("bob")
    sign_up(open_page(), username)
    expected = requests.post(
        f"{stack.api_url}/auth/login",
        json={"username": username, "password": "not the password"},
        timeout=10,
    ).json()["message"]

    page = open_page()
    page.goto("/login")
    log_in(page, username, "not the password either")
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(expected)
    expect(alert).to_have_attribute("aria-live", "assertive")
    expect(page).to_have_url(re.compile(r"/login$"))
    screenshot(page, "login-error")


def test_a_private_page_sends_a_visitor_to_login_and_back(open_page: OpenPage) -> None:
    username = unique("carol")
    sign_up(open_page(), username)

    page = open_page()
    api_calls: list[str] = []
    page.on(
        "request", lambda request: api_calls.append(request.url) if "/api/" in request.url else None
    )
    page.goto("/uploads")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fuploads$"))
    assert api_calls == []  # a browser that never logged in does not even try to refresh
    log_in(page, username)
    expect(page).to_have_url(re.compile(r"/uploads$"))
    expect(page.get_by_role("heading", name="Uploads", exact=True)).to_be_visible()

    # `next` leads only to a path on this site.
    other = open_page()
    other.goto("/login?next=//evil.example/steal")
    log_in(other, username)
    expect(other).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/dashboard$"))


def test_the_fallback_page_routes_unknown_paths_in_the_browser(open_page: OpenPage) -> None:
    page = open_page()
    response = page.goto("/dashboard/does/not/exist")
    assert response is not None
    assert response.status == 200  # 200.html, as the CDN serves it
    expect(page.get_by_role("heading", name="404")).to_be_visible()


def test_the_api_reference_lists_every_operation_and_tries_one(
    open_page: OpenPage, stack: RunningStack
) -> None:
    served = requests.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    operations = sum(len(methods) for methods in served["paths"].values())
    page = open_page(height=900)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/")
    page.get_by_role("link", name="API", exact=True).click()
    expect(page).to_have_url(re.compile(r"/docs$"))
    expect(page.get_by_role("heading", name="API reference")).to_be_visible()
    reference = page.get_by_test_id("api-reference")
    expect(reference.locator(".opblock")).to_have_count(operations)
    # The server is this site's /api, so "Try it out" goes through the same origin.
    expect(reference.locator(".servers select")).to_have_value("/api")
    screenshot(page, "api-reference", full_page=False)  # the top: most operations are far below

    health = reference.locator(".opblock", has=page.locator('[data-path="/health"]'))
    health.locator(".opblock-summary-control").click()
    health.get_by_role("button", name="Try it out").click()
    with page.expect_response(f"{stack.site_url}/api/health") as answered:
        health.get_by_role("button", name="Execute").click()
    assert answered.value.status == 200
    expect(health.locator(".request-url")).to_contain_text(f"{stack.site_url}/api/health")
    answer = health.locator(".live-responses-table tr.response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    expect(answer.locator(".response-col_description")).to_contain_text('"status": "ok"')
    assert errors == []


def test_the_api_reference_says_why_when_the_document_is_unavailable(open_page: OpenPage) -> None:
    page = open_page()
    page.route("**/api/openapi.json", refusing(503, "Service Unavailable: try again soon"))
    page.goto("/docs")
    expect(page.get_by_role("alert")).to_have_text("Service Unavailable: try again soon")
    expect(page.get_by_test_id("docs-loading")).to_have_count(0)
    expect(page.get_by_test_id("api-reference").locator(".opblock")).to_have_count(0)


def test_create_edit_filter_page_and_delete_items(open_page: OpenPage, stack: RunningStack) -> None:
    page = open_page()
    username = unique("dave")
    sign_up(page, username)
    expect(page.get_by_text("No items yet.")).to_be_visible()

    add_item(page, "Buy milk")
    add_item(page, "Write report", "pending")
    expect(items(page)).to_have_count(2)
    expect(items(page).first).to_contain_text("Write report")

    page.get_by_role("button", name="Edit Buy milk").click()
    page.get_by_label("Name", exact=True).nth(1).fill("Buy oat milk")
    page.get_by_label("Status", exact=True).nth(1).select_option("archived")
    page.get_by_label("Notes", exact=True).fill("two cartons")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved “Buy oat milk”")
    edited = items(page).filter(has_text="Buy oat milk")
    expect(edited).to_contain_text("archived")
    expect(edited).to_contain_text("two cartons")

    page.get_by_label("Show").select_option("pending")
    expect(items(page)).to_have_count(1)
    expect(items(page).first).to_contain_text("Write report")
    page.get_by_label("Show").select_option("")
    expect(items(page)).to_have_count(2)

    page.get_by_role("button", name="Delete Write report").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted “Write report”")
    expect(items(page)).to_have_count(1)

    # Paging: 10 per page, newest first.
    token = api_token(stack, username)
    for index in range(11):
        api(stack, token, "POST", "/items", json={"name": f"bulk {index:02d}"})
    page.reload()
    expect(items(page)).to_have_count(10)
    expect(items(page).first).to_contain_text("bulk 10")
    page.get_by_role("button", name="Older").click()
    expect(items(page)).to_have_count(2)
    expect(page.get_by_text("Page 2")).to_be_visible()
    expect(items(page).last).to_contain_text("Buy oat milk")
    page.get_by_role("button", name="Newer").click()
    expect(items(page)).to_have_count(10)
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()
    screenshot(page, "dashboard")
    remaining = api(stack, token, "GET", "/items?limit=100")["items"]
    assert [item["name"] for item in remaining][-1] == "Buy oat milk"
    assert len(remaining) == 12


def test_an_edit_that_loses_a_race_says_so(open_page: OpenPage, stack: RunningStack) -> None:
    page = open_page()
    username = unique("erin")
    sign_up(page, username)
    add_item(page, "Shared plan")
    page.get_by_role("button", name="Edit Shared plan").click()

    # Meanwhile another session of the same account saves the item first.
    token = api_token(stack, username)
    [item] = api(stack, token, "GET", "/items")["items"]
    api(
        stack,
        token,
        "PATCH",
        f"/items/{item['id']}",
        json={"name": "Shared plan v2"},
        headers={"If-Match": f'"{item["version"]}"'},
    )

    page.get_by_label("Name", exact=True).nth(1).fill("My version")
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        page.get_by_role("button", name="Save").click()
    assert patched.value.status == 412
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_contain_text("The item has changed since you read it")
    expect(conflict).to_contain_text("Someone changed this item after you opened it")
    screenshot(page, "edit-conflict")

    page.get_by_role("button", name="Load the latest version").click()
    expect(page.get_by_label("Name", exact=True).nth(1)).to_have_value("Shared plan v2")
    page.get_by_label("Name", exact=True).nth(1).fill("Merged plan")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Saved “Merged plan”")
    assert api(stack, token, "GET", f"/items/{item['id']}")["name"] == "Merged plan"


def test_upload_with_progress_then_download_and_delete(
    open_page: OpenPage, stack: RunningStack, tmp_path: Path
) -> None:
    page = open_page()
    username = unique("frank")
    sign_up(page, username)
    page.get_by_role("link", name="Uploads").click()
    expect(page.get_by_text("No files yet.")).to_be_visible()

    content = b"line of a small document\n" * 40_000  # about 1 MiB
    document = tmp_path / "notes.txt"
    document.write_bytes(content)
    # Record every value the progress bar shows, and slow the upload down enough to see some.
    page.evaluate(
        """() => {
            window.progressSeen = [];
            new MutationObserver(() => {
                const bar = document.querySelector('progress');
                if (bar) window.progressSeen.push(Number(bar.value));
            }).observe(document.body, { subtree: true, childList: true, attributes: true });
        }"""
    )
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 400_000},
    )
    page.get_by_label("File", exact=True).set_input_files(str(document))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Uploaded notes.txt", timeout=30_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    expect(page.get_by_test_id("progress-text")).to_have_text("100%")
    seen: list[float] = page.evaluate("window.progressSeen")
    assert any(0 < value < 100 for value in seen), seen
    assert seen == sorted(seen)
    row = page.get_by_test_id("upload")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("notes.txt")
    expect(row).to_contain_text("ready")
    screenshot(page, "uploads")

    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download notes.txt").click()
    download = downloading.value
    download_url = download.url
    assert download_url.startswith(stack.aws_url)
    # Saved as a file under its own name (Content-Disposition: attachment), never rendered.
    assert download.suggested_filename == "notes.txt"
    assert Path(download.path()).read_bytes() == content

    page.get_by_role("button", name="Delete notes.txt").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("status")).to_contain_text("Deleted notes.txt")
    expect(page.get_by_test_id("upload")).to_have_count(0)
    # S3 answers 403 for a missing key to a signer that may not list the bucket; moto 404.
    assert requests.get(download_url, timeout=10).status_code in {403, 404}
    assert api(stack, api_token(stack, username), "GET", "/uploads")["uploads"] == []


def test_a_refused_upload_shows_storages_reason_and_leaves_nothing_behind(
    open_page: OpenPage, stack: RunningStack, tmp_path: Path
) -> None:
    page = open_page()
    username = unique("fay")
    sign_up(page, username)
    page.goto("/uploads")
    refusal = (
        "<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: Policy expired."
        " &lt;x-amz-date&gt; &amp; more</Message></Error>"
    )
    page.route(
        f"{stack.aws_url}/**",
        lambda route: route.fulfill(
            status=403,
            headers={"Access-Control-Allow-Origin": stack.site_url},
            content_type="application/xml",
            body=refusal,
        ),
    )
    image = tmp_path / "pixel.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    page.get_by_label("File", exact=True).set_input_files(str(image))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(
        "Storage refused the file: Invalid according to Policy: Policy expired. <x-amz-date> & more"
    )
    expect(page.get_by_text("No files yet.")).to_be_visible()
    assert api(stack, api_token(stack, username), "GET", "/uploads")["uploads"] == []


def test_the_admin_page_is_for_admins_only(open_page: OpenPage, stack: RunningStack) -> None:
    page = open_page()
    admin = unique("grace")
    sign_up(page, admin)
    other = unique("heidi")
    sign_up(open_page(), other)

    expect(page.get_by_role("link", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.goto("/admin")
    expect(page.get_by_test_id("not-admin")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)

    stack.promote(admin)

    page.goto("/dashboard")
    page.get_by_role("link", name="Admin").click()
    expect(page).to_have_url(re.compile(r"/admin$"))
    row = page.locator(f'[data-username="{other}"]')
    expect(row).to_be_visible()
    expect(page.locator(f'[data-username="{admin}"]')).to_be_visible()

    row.get_by_label(f"Role of {other}").select_option("admin")
    expect(page.get_by_role("status")).to_have_text(f"Updated {other}: admin.")
    row.get_by_role("button", name=f"Disable {other}").click()
    expect(page.get_by_role("status")).to_have_text(f"Updated {other}: admin, disabled.")
    expect(row.get_by_role("button", name=f"Enable {other}")).to_be_visible()
    refused = requests.post(
        f"{stack.api_url}/auth/login", json={"username": other, "password": PASSWORD}, timeout=10
    )
    assert refused.status_code == 403
    screenshot(page, "admin")

    row.get_by_role("button", name=f"Delete {other}").click()
    row.get_by_role("button", name=f"Yes, delete {other}").click()
    expect(page.get_by_role("status")).to_have_text(f"Deleted {other} and everything they owned.")
    expect(row).to_have_count(0)
    gone = requests.post(
        f"{stack.api_url}/auth/login", json={"username": other, "password": PASSWORD}, timeout=10
    )
    assert gone.status_code == 401


def test_a_reload_keeps_the_user_logged_in_with_no_token_in_storage(open_page: OpenPage) -> None:
    page = open_page()
    username = unique("ivan")
    sign_up(page, username)
    page.reload()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_test_id("profile-username")).to_have_text(username)
    page.goto("/account")
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()

    stored: dict[str, str] = page.evaluate("({...localStorage, ...sessionStorage})")
    # SvelteKit's scroll positions and our "may have a session" flag; no JWT ("eyJ..."), no
    # refresh token, in Web Storage.
    assert stored.pop("gatehouse:session") == "1"
    assert all(key.startswith("sveltekit:") for key in stored), stored
    assert not any("eyJ" in value or username in value for value in stored.values())
    # The refresh token and the known-device mark: both out of the page's reach.
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert set(cookies) == {"gatehouse_refresh", "gatehouse_device"}
    for cookie in cookies.values():
        assert cookie["httpOnly"] is True
        assert cookie["path"] == "/api/auth"
        assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""


def test_an_expired_access_token_is_renewed_without_the_user_noticing(
    open_page: OpenPage, expire_access_tokens: Callable[[], None]
) -> None:
    page = open_page()
    sign_up(page, unique("judy"))
    calls: list[tuple[str, str, int]] = []
    page.on(
        "response",
        lambda response: (
            calls.append(
                (response.request.method, response.url.split("/api", 1)[-1], response.status)
            )
            if "/api/" in response.url
            else None
        ),
    )
    expire_access_tokens()
    add_item(page, "Made after expiry")
    expect(items(page)).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_role("alert").first).to_be_empty()
    assert ("POST", "/items", 401) in calls  # the expired token, refused by the authorizer
    assert ("POST", "/auth/refresh", 200) in calls
    assert ("POST", "/items", 201) in calls  # the same request, retried once


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "Invalid or expired token"), (403, "Access token revoked; please log in again")],
)
def test_the_deployed_gateway_responses_to_a_token_also_renew(
    open_page: OpenPage, status: int, message: str
) -> None:
    page = open_page()
    sign_up(page, unique("ken"))
    # Deployed, the authorizer's refusals come as the API's gateway responses
    # (chalicelib/web/gateway.py); even without an error type header, the module must read
    # them as a rejected token.
    answered: list[str] = []

    def refuse_once(route: Route) -> None:
        if answered:
            route.fallback()
            return
        answered.append(route.request.url)
        route.fulfill(status=status, json={"message": message})

    page.route("**/api/items", refuse_once)
    with page.expect_response("**/api/auth/refresh") as refreshed:
        add_item(page, "After a refusal")
    assert refreshed.value.status == 200
    assert len(answered) == 1
    expect(items(page)).to_have_count(1)


def test_tabs_renew_their_tokens_one_at_a_time(
    open_page: OpenPage, expire_access_tokens: Callable[[], None]
) -> None:
    first = open_page()
    sign_up(first, unique("kim"))
    second = first.context.new_page()
    second.goto("/dashboard")
    expect(second.get_by_text("No items yet.")).to_be_visible()

    spans: list[tuple[float, float]] = []
    started: dict[Request, float] = {}

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/auth/refresh"):
            started[request] = time.monotonic()

    def on_finished(request: Request) -> None:
        if request in started:
            spans.append((started[request], time.monotonic()))

    for page in (first, second):
        page.on("request", on_request)
        page.on("requestfinished", on_finished)
    expire_access_tokens()
    # Both tabs find their tokens expired at the same moment.
    for page in (first, second):
        page.get_by_label("Show").select_option("archived")
    for page in (first, second):
        expect(page.get_by_text("No items with status archived yet.")).to_be_visible()
        expect(page).to_have_url(re.compile(r"/dashboard$"))
    assert len(spans) >= 2
    spans.sort()
    for (_, end), (begin, _) in itertools.pairwise(spans):
        assert begin >= end - 0.01, spans  # the Web Lock: never two refreshes at once


def test_log_out_everywhere_ends_the_session_in_another_browser(open_page: OpenPage) -> None:
    username = unique("leo")
    laptop = open_page()
    sign_up(laptop, username)
    phone = open_page(width=360)
    # A browser without live updates (tests/test_site_live.py has them): only its next request
    # can tell it that its session ended.
    phone.route("**/api/auth/ws-ticket", refusing(503, "Live updates are off"))
    phone.goto("/login")
    log_in(phone, username)
    expect(phone).to_have_url(re.compile(r"/dashboard$"))

    laptop.get_by_role("link", name="Account").click()
    expect(laptop.get_by_test_id("session")).to_have_count(2)
    expect(laptop.get_by_test_id("event").first).to_contain_text("login")
    screenshot(laptop, "account")
    laptop.get_by_role("button", name="Log out everywhere").click()
    expect(laptop).to_have_url(re.compile(r"/login$"))
    expect(laptop.get_by_role("status")).to_have_text("You are logged out on every device.")

    # The other browser's next request finds its token revoked and its session gone.
    phone.get_by_role("link", name="Account").click()
    expect(phone).to_have_url(re.compile(r"/login\?next=%2Faccount$"))
    expect(phone.get_by_role("status")).to_have_text("Your session has ended; please log in again.")
    phone.reload()
    expect(phone.get_by_role("heading", name="Log in")).to_be_visible()
    expect(phone.get_by_test_id("nav-username")).to_have_count(0)


def test_change_password_then_delete_the_account(open_page: OpenPage, stack: RunningStack) -> None:
    page = open_page()
    username = unique("nora")
    sign_up(page, username)
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_test_id("session")).to_have_count(1)
    expect(page.get_by_test_id("session")).to_contain_text("Headless Chrome 156 on Linux")

    page.get_by_label("Current password").fill("wrong password")
    page.get_by_label("New password").fill("a brand new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert").nth(1)).to_have_text("Invalid username or password")
    expect(page).to_have_url(re.compile(r"/account$"))  # the app's 401 is not a lost session

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_have_text(
        "Password changed. Every other session has been logged out."
    )
    expect(page.get_by_test_id("event").first).to_contain_text("password change")
    old = {"username": username, "password": PASSWORD}
    assert requests.post(f"{stack.api_url}/auth/login", json=old, timeout=10).status_code == 401
    page.reload()  # the new session's cookie restores it
    expect(page.get_by_test_id("session")).to_have_count(1)

    page.get_by_label("Password", exact=True).fill("a brand new passphrase")
    page.get_by_role("button", name="Delete my account").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("status")).to_have_text(
        "Your account and everything in it have been deleted."
    )
    new = {"username": username, "password": "a brand new passphrase"}
    assert requests.post(f"{stack.api_url}/auth/login", json=new, timeout=10).status_code == 401


def test_keyboard_only_at_320_pixels(open_page: OpenPage) -> None:
    username = unique("mia")
    sign_up(open_page(), username)
    page = open_page(width=320, height=640)
    page.goto("/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # Tab from the skip link through the header to the form's first field.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "username":
            break
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "new-name":
            break
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.type("Typed item")
    page.keyboard.press("Enter")
    expect(items(page)).to_have_count(1)
    for path in ("/dashboard", "/uploads", "/account"):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 320, f"{path} scrolls sideways at 320 px ({width} px)"
    page.goto("/dashboard")
    expect(items(page)).to_have_count(1)
    screenshot(page, "dashboard-320px")


LAYOUT_SHIFT = """() => new Promise((resolve) => {
    // Every layout shift since the page loaded (buffered), none caused by input.
    let total = 0;
    const observer = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) if (!entry.hadRecentInput) total += entry.value;
    });
    observer.observe({ type: 'layout-shift', buffered: true });
    setTimeout(() => { observer.disconnect(); resolve(total); }, 300);
})"""


@pytest.mark.parametrize("width", [320, 1000])
def test_nothing_moves_while_the_session_and_data_load(
    open_page: OpenPage, stack: RunningStack, width: int
) -> None:
    page = open_page(width=width, height=700)
    username = unique("olga")
    sign_up(page, username)
    add_item(page, "One item")
    shifts: dict[str, float] = {}
    for path in ("/dashboard", "/account"):
        page.goto(path)  # a full load: the session is restored, then the page's data loads
        if path == "/dashboard":
            expect(items(page)).to_have_count(1)
        else:
            expect(page.get_by_test_id("session")).to_have_count(1)
            expect(page.get_by_test_id("event").first).to_be_visible()
        expect(page.get_by_test_id("nav-username")).to_have_text(username)
        page.wait_for_load_state("networkidle")
        shifts[path] = page.evaluate(LAYOUT_SHIFT)
    assert all(shift < 0.01 for shift in shifts.values()), shifts


SWITCHED = "Another account signed in in another tab of this browser; please log in again."


def test_a_tab_never_acts_for_the_account_another_tab_signed_in(
    open_page: OpenPage, stack: RunningStack, expire_access_tokens: Callable[[], None]
) -> None:
    listening = open_page()  # hears the other tabs
    first = unique("xena")
    sign_up(listening, first)
    deaf = listening.context.new_page()  # a tab that missed the news: only its refresh can tell
    deaf.add_init_script("delete window.BroadcastChannel")
    deaf.goto("/dashboard")
    expect(deaf.get_by_test_id("profile-username")).to_have_text(first)

    # Another tab of the same browser signs up (and so logs in) as someone else.
    other = listening.context.new_page()
    second = unique("yuri")
    sign_up(other, second)

    # The listening tab stops showing the first account's data at once, without a request.
    expect(listening).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"))
    expect(listening.get_by_role("status")).to_have_text(SWITCHED)
    expect(listening.get_by_test_id("nav-username")).to_have_count(0)

    # The deaf tab's token expires; its refresh gets the second account's token, which it must
    # not use: nothing is written into either account, and the tab asks for a login.
    expire_access_tokens()
    deaf.get_by_label("Name", exact=True).fill("Meant for the first account")
    deaf.get_by_role("button", name="Add item").click()
    expect(deaf).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"))
    expect(deaf.get_by_role("status")).to_have_text(SWITCHED)
    expect(deaf.get_by_test_id("nav-username")).to_have_count(0)
    assert api(stack, api_token(stack, second), "GET", "/items")["items"] == []
    assert api(stack, api_token(stack, first), "GET", "/items")["items"] == []

    # The second account's tab is still signed in, and so is a reload of any tab (the flag stays).
    other.reload()
    expect(other.get_by_test_id("profile-username")).to_have_text(second)
    deaf.reload()
    expect(deaf).to_have_url(re.compile(r"/dashboard$"))
    expect(deaf.get_by_test_id("profile-username")).to_have_text(second)


def test_logging_out_in_one_tab_resets_the_others_at_once(open_page: OpenPage) -> None:
    page = open_page()
    sign_up(page, unique("zoe"))
    other = page.context.new_page()
    other.goto("/dashboard")
    expect(other.get_by_text("No items yet.")).to_be_visible()
    other_calls: list[str] = []
    other.on("request", lambda r: other_calls.append(r.url) if "/api/" in r.url else None)

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(other).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"))
    expect(other.get_by_role("status")).to_have_text("You logged out in another tab.")
    expect(other.get_by_test_id("nav-username")).to_have_count(0)
    assert other_calls == []  # told by the other tab, not by a refused request


BAD_NEXTS = [
    "//evil.example/steal",
    "/.//evil.example",  # dot segment
    "/x/..%5C/evil.example",  # encoded backslash, then a dot segment
    "/x/..\\/evil.example",  # backslash
    "/\t/evil.example",  # tab (the URL parser drops it)
    "/\n/evil.example",  # newline (ditto)
    "/%2F%2Fevil.example",
    "/%252F%252Fevil.example",  # double-encoded
    "/x/..%255C/evil.example",
    "https://evil.example/",
    "/%E0%A4%A",  # malformed encoding
]


def test_next_never_leads_off_the_site(open_page: OpenPage) -> None:
    page = open_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    username = unique("quinn")
    sign_up(page, username)
    for bad in BAD_NEXTS:
        # Signed in, the login page sends the visitor on at once (restored from the cookie).
        page.goto(f"/login?next={quote(bad, safe='')}")
        expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/dashboard$"))
        expect(page.get_by_test_id("profile-username")).to_have_text(username)
    for bad in BAD_NEXTS[1:3]:
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        page.goto(f"/login?next={quote(bad, safe='')}")
        log_in(page, username)
        expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/dashboard$"))
        expect(page.get_by_test_id("profile-username")).to_have_text(username)
    # A legitimate `next`, with a query and a hash, still leads back.
    page.goto(f"/login?next={quote('/uploads?x=%2F%2Fa#top', safe='')}")
    expect(page).to_have_url(re.compile(r"/uploads\?x=%2F%2Fa#top$"))
    assert errors == []


def refusing(status: int, message: str) -> Callable[[Route], None]:
    return lambda route: route.fulfill(status=status, json={"message": message})


def test_a_refresh_the_api_could_not_answer_keeps_the_session_and_says_why(
    open_page: OpenPage, expire_access_tokens: Callable[[], None]
) -> None:
    page = open_page()
    username = unique("rita")
    sign_up(page, username)
    # Deployed, API Gateway refuses with its own 403 (a missing API key, say); a 429 or a 5xx
    # are the same: only the app's 401 means there is no session.
    for status, message in ((403, "Forbidden"), (503, "Service Unavailable: try again soon")):
        page.route("**/api/auth/refresh", refusing(status, message))
        expire_access_tokens()
        page.get_by_label("Name", exact=True).fill("Not yet")
        page.get_by_role("button", name="Add item").click()
        expect(page.get_by_role("alert").first).to_have_text(message)
        expect(page).to_have_url(re.compile(r"/dashboard$"))
        expect(page.get_by_test_id("nav-username")).to_have_text(username)
        assert page.evaluate("localStorage.getItem('gatehouse:session')") == "1"
        page.unroute("**/api/auth/refresh")
    add_item(page, "Now")  # the API answers again: the same session goes on
    expect(items(page)).to_have_count(1)


def test_a_restore_the_api_could_not_answer_says_why(open_page: OpenPage) -> None:
    page = open_page()
    username = unique("sam")
    sign_up(page, username)
    message = "Too many requests from this address; try again in a minute."
    page.route(
        "**/api/auth/refresh", lambda route: route.fulfill(status=429, json={"message": message})
    )
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"))
    expect(page.get_by_role("alert")).to_have_text(message)
    assert page.evaluate("localStorage.getItem('gatehouse:session')") == "1"
    page.unroute("**/api/auth/refresh")
    page.goto("/dashboard")  # the flag was kept: the next load tries again
    expect(page.get_by_test_id("profile-username")).to_have_text(username)


def test_a_refresh_that_never_answers_gives_up_and_says_so(open_page: OpenPage) -> None:
    page = open_page()
    sign_up(page, unique("tess"))
    held: list[Route] = []
    page.route("**/api/auth/refresh", lambda route: held.append(route))
    page.clock.install()
    page.goto("/dashboard")
    wait_until(page, lambda: bool(held), "the page's refresh request")
    page.clock.fast_forward(11_000)  # the refresh's time limit; the lock is free again
    expect(page.get_by_role("alert")).to_have_text(
        "The server took too long to answer; please try again."
    )


def test_a_token_refused_after_another_call_renewed_it_is_not_renewed_again(
    open_page: OpenPage, expire_access_tokens: Callable[[], None]
) -> None:
    page = open_page()
    sign_up(page, unique("uma"))
    expect(page.get_by_text("No items yet.")).to_be_visible()
    held: list[Route] = []
    refreshes: list[str] = []
    page.on(
        "request", lambda r: refreshes.append(r.url) if r.url.endswith("/auth/refresh") else None
    )

    def hold_the_first_post(route: Route) -> None:
        if route.request.method == "POST" and not held:
            held.append(route)
        else:
            route.fallback()

    page.route("**/api/items", hold_the_first_post)
    expire_access_tokens()
    page.get_by_label("Name", exact=True).fill("Sent with the old token")
    page.get_by_role("button", name="Add item").click()
    wait_until(page, lambda: bool(held), "the page's POST /items")
    # Another call finds the token expired and renews it...
    page.get_by_label("Show").select_option("pending")
    expect(page.get_by_text("No items with status pending yet.")).to_be_visible()
    assert len(refreshes) == 1
    # ... then the held call's expired token is refused: it retries with the renewed one.
    held[0].continue_()
    expect(page.get_by_role("status")).to_contain_text("Created “Sent with the old token”")
    assert len(refreshes) == 1


def test_an_upload_that_stalls_gives_up_and_says_so(
    open_page: OpenPage, stack: RunningStack, tmp_path: Path
) -> None:
    page = open_page()
    sign_up(page, unique("vera"))
    page.goto("/uploads")
    expect(page.get_by_text("No files yet.")).to_be_visible()
    held: list[Route] = []
    page.route(f"{stack.aws_url}/**", lambda route: held.append(route))
    page.clock.install()
    document = tmp_path / "stuck.txt"
    document.write_bytes(b"never arrives\n")
    page.get_by_label("File", exact=True).set_input_files(str(document))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("button", name="Uploading…")).to_be_visible()
    wait_until(page, lambda: bool(held), "the upload's request to storage")
    page.wait_for_timeout(500)
    page.clock.fast_forward(61_000)
    expect(page.get_by_role("alert")).to_have_text(
        "The upload stalled (nothing sent for a minute); please try again."
    )
    expect(page.get_by_role("button", name="Upload", exact=True)).to_be_enabled()
    expect(page.get_by_text("No files yet.")).to_be_visible()


def test_a_failed_admin_action_says_why_and_an_admin_who_steps_down_loses_the_page(
    open_page: OpenPage, stack: RunningStack
) -> None:
    page = open_page()
    admin = unique("wendy")
    sign_up(page, admin)
    other = unique("xavi")
    sign_up(open_page(), other)
    stack.promote(admin)
    page.goto("/admin")
    row = page.locator(f'[data-username="{other}"]')
    expect(row).to_be_visible()

    # Another administrator deletes the user meanwhile: the change fails with the API's reason.
    token = api_token(stack, admin)
    api(stack, token, "DELETE", f"/users/{other}")
    expected = requests.patch(
        f"{stack.api_url}/users/{other}",
        json={"role": "admin"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert expected.status_code == 404
    select = row.get_by_label(f"Role of {other}")
    select.select_option("admin")
    expect(page.get_by_role("alert")).to_have_text(expected.json()["message"])
    expect(select).to_have_value("user")  # the stored role, not the attempted one

    # The administrator demotes themselves: the Admin link and the page go, without a reload.
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    page.get_by_label(f"Role of {admin}").select_option("user")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    expect(page.get_by_test_id("not-admin")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)
