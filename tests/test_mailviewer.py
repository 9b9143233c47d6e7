"""The local mail path: SesMailer -> the emulator (moto's server, tools/emulator.py) -> the mail
viewer (tools/mailviewer.py), each a subprocess on a free port as ``make dev`` runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from playwright.sync_api import sync_playwright

from chalicelib import messages
from chalicelib.mail import Message, SesMailer
from tests.conftest import ROOT
from tests.localstack import free_port
from tools.localaws import ensure_sender
from tools.mailviewer import render_page

pytestmark = pytest.mark.e2e

SENDER = "Gatehouse <no-reply@example.com>"
CONFIGURATION_SET = "gatehouse-test"
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Local:
    aws_url: str
    mail_url: str
    session: boto3.Session

    def mailer(self, configuration_set: str | None = CONFIGURATION_SET) -> SesMailer:
        client = self.session.client("sesv2", endpoint_url=self.aws_url)
        return SesMailer(client, sender=SENDER, configuration_set=configuration_set)

    def messages(self) -> list[dict[str, object]]:
        answer = requests.get(f"{self.mail_url}/api/messages", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/json"
        found: list[dict[str, object]] = answer.json()
        return found


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(url: str, child: subprocess.Popen[bytes], *, status: int = 200) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.poll() is None, f"{child.args!r} exited"
        try:
            if requests.get(url, timeout=2).status_code == status:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer")


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    aws_port, mail_port = free_port(), free_port()
    aws_url, mail_url = f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{mail_port}"
    emulator = spawn("tools.emulator", "--port", str(aws_port))
    viewer = spawn("tools.mailviewer", "--port", str(mail_port), "--aws", aws_url)
    try:
        wait_for(f"{aws_url}/moto-api/", emulator)
        wait_for(f"{mail_url}/api/messages", viewer)
        session = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name="eu-west-2"
        )
        # As make dev provisions it, against this emulator (AWS_ENDPOINT_URL, as make dev sets).
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL", aws_url)
            ensure_sender(session, SENDER, configuration_set=CONFIGURATION_SET)
            ensure_sender(session, SENDER, configuration_set=CONFIGURATION_SET)  # idempotent
        yield Local(aws_url, mail_url, session)
    finally:
        for child in (viewer, emulator):
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=10)


def test_sent_mail_is_listed_newest_first_with_both_bodies(local: Local) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = messages.password_reset(
        "alice@example.org", site_url="http://127.0.0.1:5173", token="abc", username="alice"
    )
    second = messages.password_changed("bob@example.org", username="bob")
    local.mailer().send(first)
    local.mailer().send(second)
    newest, older, *_ = local.messages()
    assert set(newest) == {"id", "from", "to", "subject", "text", "html", "sentAt"}
    assert (newest["to"], newest["subject"]) == (["bob@example.org"], second.subject)
    assert (older["to"], older["subject"]) == (["alice@example.org"], first.subject)
    # moto keeps only one body (the HTML); the emulator keeps both, as SES delivers both.
    assert (older["text"], older["html"], older["from"]) == (first.text, first.html, SENDER)
    assert newest["id"] != older["id"]
    sent_at = datetime.fromisoformat(str(newest["sentAt"]))
    assert sent_at.tzinfo is not None
    assert before <= sent_at <= datetime.now(UTC)
    assert sent_at >= datetime.fromisoformat(str(older["sentAt"]))


def test_an_unknown_configuration_set_is_refused_as_ses_does(local: Local) -> None:
    count = len(local.messages())
    with pytest.raises(ClientError) as raised:
        local.mailer("no-such-set").send(Message("a@example.org", "x", "x", "x"))
    assert raised.value.response["Error"]["Code"] == "NotFoundException"
    assert len(local.messages()) == count


def test_an_unverified_sender_is_refused_and_nothing_is_kept(local: Local) -> None:
    count = len(local.messages())
    client = local.session.client("sesv2", endpoint_url=local.aws_url)
    mailer = SesMailer(client, sender="someone@elsewhere.example")
    with pytest.raises(ClientError, match="not verified"):
        mailer.send(Message("a@example.org", "x", "x", "x"))
    assert len(local.messages()) == count


def test_the_page_lists_each_mail_with_its_text_and_sandboxed_html(local: Local) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    local.mailer().send(messages.mfa_enabled("carol@example.org", username=hostile))
    page = requests.get(f"{local.mail_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Two-step verification is on" in page.text
    assert "carol@example.org" in page.text
    assert hostile not in page.text  # escaped in the text and twice over in the frame's srcdoc
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page.text
    assert "srcdoc=" in page.text
    assert "<script" not in page.text


def test_links_in_a_mail_open_from_the_page(local: Local) -> None:
    """In a real browser: the HTML renders in its frame and its link opens the site's page."""
    token = "link-test-token"
    local.mailer().send(
        messages.verify_email(
            "erin@example.org", site_url=local.mail_url, token=token, username="erin"
        )
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.goto(local.mail_url)
            frame = page.frame_locator("article:first-of-type iframe")
            link = frame.get_by_role("link", name="Confirm my address")
            with page.context.expect_page() as opened:
                link.click()
            opened.value.wait_for_load_state()
            assert opened.value.url == f"{local.mail_url}/verify-email?token={token}"
        finally:
            browser.close()


def test_the_viewer_says_when_the_emulator_is_down() -> None:
    viewer_port = free_port()
    viewer = spawn(
        "tools.mailviewer", "--port", str(viewer_port), "--aws", f"http://127.0.0.1:{free_port()}"
    )
    try:
        wait_for(f"http://127.0.0.1:{viewer_port}/", viewer, status=502)
        answer = requests.get(f"http://127.0.0.1:{viewer_port}/api/messages", timeout=5)
        assert answer.status_code == 502
        assert "emulator is unavailable" in answer.json()["message"]
    finally:
        viewer.send_signal(signal.SIGTERM)
        viewer.wait(timeout=10)


def test_an_empty_mailbox_says_so() -> None:
    assert "No mail yet" in render_page([])
