"""Live updates in a real browser against the real stack: what one browser does, another sees.

The same stack, browser and fixtures as ``tests/test_site.py`` (``make dev``'s stack with the
built site, whose server proxies ``/ws`` to the local WebSocket gateway). Each page shows the
state of its live connection in the notice region's ``data-live`` attribute; the tests wait for
``open`` before they act, then give the other browser a bounded time to show the change, with
no reload and no navigation in between.
"""

# The fixtures come from tests/test_site.py (one stack per module, the same browser set-up), so
# the tests' parameters carry the names of those imports.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocket, expect

from tests.localstack import RunningStack
from tests.test_site import (  # noqa: F401 (the fixtures)
    PASSWORD,
    OpenPage,
    add_item,
    api,
    api_token,
    browser,
    contexts,
    csp_violations,
    items,
    log_in,
    open_page,
    playwright,
    sign_up,
    stack,
    unique,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

# The bound: a change in one browser shows in another within 2 seconds.
LIVE_MS = 2_000
# Being signed out takes one more round trip (the page tries a refresh first).
SIGNED_OUT_MS = 5_000
ELSEWHERE = "You were signed out on another device; please log in again."


def live(page: Page) -> None:
    """Waits until the page's live connection is open (the notice region says so)."""
    expect(page.locator("[data-live]")).to_have_attribute("data-live", "open")


def stays(page: Page) -> None:
    """Marks the document: ``still_here`` is false after a reload or a navigation."""
    page.evaluate("() => { window.stillHere = true; }")


def still_here(page: Page) -> bool:
    return bool(page.evaluate("() => window.stillHere === true"))


@dataclass
class Sockets:
    """What a page's WebSockets did, recorded from before its first connection."""

    urls: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)


def record_sockets(page: Page) -> Sockets:
    seen = Sockets()

    def opened(socket: WebSocket) -> None:
        seen.urls.append(socket.url)
        socket.on("framereceived", lambda payload: seen.frames.append(decode(payload)))

    page.on("websocket", opened)
    return seen


def decode(payload: str | bytes) -> dict[str, Any]:
    frame = json.loads(payload)
    assert isinstance(frame, dict), frame
    return frame


def second_browser(open_page: OpenPage, username: str) -> Page:
    page = open_page()
    page.goto("/login")
    log_in(page, username)
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    return page


def test_items_created_edited_and_deleted_in_one_browser_show_in_another(
    open_page: OpenPage, stack: RunningStack
) -> None:
    username = unique("lena")
    laptop = open_page()
    sign_up(laptop, username)
    phone = open_page()
    sockets = record_sockets(phone)
    phone.goto("/login")
    log_in(phone, username)
    expect(phone).to_have_url(re.compile(r"/dashboard$"))
    expect(phone.get_by_text("No items yet.")).to_be_visible()
    live(laptop)
    live(phone)
    stays(phone)

    add_item(laptop, "Live milk")
    expect(items(phone).filter(has_text="Live milk")).to_have_count(1, timeout=LIVE_MS)

    laptop.get_by_role("button", name="Edit Live milk").click()
    laptop.get_by_label("Name", exact=True).nth(1).fill("Live oat milk")
    laptop.get_by_label("Status", exact=True).nth(1).select_option("archived")
    laptop.get_by_role("button", name="Save").click()
    expect(laptop.get_by_role("status")).to_contain_text("Saved “Live oat milk”")
    edited = items(phone).filter(has_text="Live oat milk")
    expect(edited).to_contain_text("archived", timeout=LIVE_MS)

    laptop.get_by_role("button", name="Delete Live oat milk").click()
    laptop.get_by_role("button", name="Yes, delete").click()
    expect(laptop.get_by_role("status")).to_contain_text("Deleted “Live oat milk”")
    expect(items(phone)).to_have_count(0, timeout=LIVE_MS)
    expect(phone.get_by_text("No items yet.")).to_be_visible()

    assert still_here(phone)  # no reload, no navigation: the changes came to the page
    # The socket's URL holds a one-time ticket, never the access token (URLs get logged).
    token = api_token(stack, username)
    assert sockets.urls, "the page opened no WebSocket"
    assert all("ticket=" in url and token not in url for url in sockets.urls), sockets.urls
    assert not any("eyJ" in url for url in sockets.urls)  # no JWT of any kind
    # The messages are the documented envelope, the item as GET /items/{id} showed it.
    by_type = {frame.get("type"): frame for frame in sockets.frames}
    assert {"item.created", "item.updated", "item.deleted"} <= set(by_type), sockets.frames
    for frame in by_type.values():
        assert {"type", "version", "id", "time", "data"} <= set(frame), frame
    assert by_type["item.updated"]["data"]["name"] == "Live oat milk"
    assert by_type["item.updated"]["data"]["status"] == "archived"


def test_an_edit_in_progress_is_kept_when_the_item_changes_elsewhere(
    open_page: OpenPage, stack: RunningStack
) -> None:
    page = open_page()
    username = unique("milo")
    sign_up(page, username)
    live(page)
    add_item(page, "Draft plan")
    page.get_by_role("button", name="Edit Draft plan").click()
    page.get_by_label("Name", exact=True).nth(1).fill("My own words")

    token = api_token(stack, username)
    [item] = api(stack, token, "GET", "/items")["items"]
    api(
        stack,
        token,
        "PATCH",
        f"/items/{item['id']}",
        json={"name": "Their words"},
        headers={"If-Match": f'"{item["version"]}"'},
    )
    # The form says so at once and keeps the draft; the save then meets the usual conflict.
    expect(page.get_by_test_id("changed-elsewhere")).to_have_text(
        "Changed elsewhere since you opened it.", timeout=LIVE_MS
    )
    expect(page.get_by_label("Name", exact=True).nth(1)).to_have_value("My own words")
    with page.expect_response(lambda r: r.request.method == "PATCH") as patched:
        page.get_by_role("button", name="Save").click()
    assert patched.value.status == 412
    expect(page.get_by_test_id("conflict")).to_contain_text("Someone changed this item")


def test_log_out_everywhere_signs_the_other_browser_out_at_once(open_page: OpenPage) -> None:
    username = unique("nico")
    laptop = open_page()
    sign_up(laptop, username)
    phone = second_browser(open_page, username)
    live(laptop)
    live(phone)

    laptop.get_by_role("link", name="Account").click()
    expect(laptop.get_by_test_id("session")).to_have_count(2)
    laptop.get_by_role("button", name="Log out everywhere").click()
    expect(laptop).to_have_url(re.compile(r"/login$"))
    expect(laptop.get_by_role("status")).to_have_text("You are logged out on every device.")

    # The phone does nothing, and is signed out all the same: told, not refused.
    expect(phone).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"), timeout=SIGNED_OUT_MS)
    expect(phone.get_by_role("status")).to_have_text(ELSEWHERE)
    expect(phone.get_by_test_id("nav-username")).to_have_count(0)
    expect(phone.locator("[data-live]")).to_have_attribute("data-live", "off")
    phone.reload()
    expect(phone.get_by_role("heading", name="Log in")).to_be_visible()
    expect(phone.get_by_test_id("nav-username")).to_have_count(0)


def test_a_password_change_keeps_the_tab_that_made_it_and_ends_the_others(
    open_page: OpenPage,
) -> None:
    username = unique("opal")
    laptop = open_page()
    sign_up(laptop, username)
    phone = second_browser(open_page, username)
    live(phone)
    laptop.goto("/account")
    live(laptop)
    stays(laptop)

    laptop.get_by_label("Current password").fill(PASSWORD)
    laptop.get_by_label("New password").fill("a brand new passphrase")
    laptop.get_by_role("button", name="Change password").click()
    expect(laptop.get_by_role("status")).to_have_text(
        "Password changed. Every other session has been logged out."
    )
    expect(phone).to_have_url(re.compile(r"/login\?next=%2Fdashboard$"), timeout=SIGNED_OUT_MS)
    expect(phone.get_by_role("status")).to_have_text(ELSEWHERE)
    # The tab that changed the password heard the same news and stays signed in, live.
    expect(laptop.get_by_test_id("session")).to_have_count(1)
    live(laptop)
    expect(laptop).to_have_url(re.compile(r"/account$"))
    assert still_here(laptop)


def test_another_account_receives_nothing_of_the_first_accounts_changes(
    open_page: OpenPage, stack: RunningStack
) -> None:
    alice = unique("alma")
    first = open_page()
    sign_up(first, alice)
    witness = second_browser(open_page, alice)  # shows when alice's events have been pushed
    bob = unique("bert")
    other = open_page()
    heard = record_sockets(other)
    sign_up(other, bob)
    for page in (first, witness, other):
        live(page)
    stays(other)

    add_item(first, "Alma's secret")
    expect(items(witness).filter(has_text="Alma's secret")).to_have_count(1, timeout=LIVE_MS)
    first.get_by_role("button", name="Delete Alma's secret").click()
    first.get_by_role("button", name="Yes, delete").click()
    expect(items(witness)).to_have_count(0, timeout=LIVE_MS)

    # Bob's own change reaches his page after alice's went out: whatever was meant for his
    # connection has arrived by then.
    api(stack, api_token(stack, bob), "POST", "/items", json={"name": "Bert's own"})
    expect(items(other).filter(has_text="Bert's own")).to_have_count(1, timeout=LIVE_MS)
    expect(items(other)).to_have_count(1)
    assert still_here(other)
    assert any(frame.get("type") == "item.created" for frame in heard.frames), heard.frames
    assert all(frame.get("type") != "item.deleted" for frame in heard.frames), heard.frames
    for frame in heard.frames:
        text = json.dumps(frame)
        assert "secret" not in text, frame
        assert alice not in text, frame
