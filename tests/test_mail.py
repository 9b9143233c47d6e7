"""The mailers (SES v2 under moto, the in-memory one) and the mails Gatehouse composes."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from chalicelib import messages
from chalicelib.mail import InMemoryMailer, Message, SesMailer

SENDER = "Gatehouse <no-reply@example.com>"
SITE = "https://gatehouse.example"
HOSTILE = '<script>alert("x")</script>&'
MESSAGE = Message(to="alice@example.org", subject="Hello", text="Hi there", html="<p>Hi there</p>")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.hrefs += [value or "" for name, value in attrs if name == "href"]


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


class TestSesMailer:
    def test_a_verified_sender_sends_to_the_recipient(self, aws: boto3.Session) -> None:
        client = aws.client("sesv2")
        client.create_email_identity(EmailIdentity="no-reply@example.com")
        SesMailer(client, sender=SENDER).send(MESSAGE)
        [sent] = ses_backends[DEFAULT_ACCOUNT_ID][aws.region_name].sent_messages
        assert sent.source == SENDER
        assert sent.destinations == {"ToAddresses": ["alice@example.org"]}
        assert sent.subject == "Hello"

    def test_a_refusal_is_raised_not_swallowed(self, aws: boto3.Session) -> None:
        mailer = SesMailer(aws.client("sesv2"), sender=SENDER)
        with pytest.raises(ClientError, match="not verified"):
            mailer.send(MESSAGE)

    def test_throttling_reaches_the_caller(self, aws: boto3.Session) -> None:
        client = aws.client("sesv2")
        with Stubber(client) as stub:
            stub.add_client_error("send_email", "TooManyRequestsException", http_status_code=429)
            with pytest.raises(ClientError) as raised:
                SesMailer(client, sender=SENDER).send(MESSAGE)
        assert raised.value.response["Error"]["Code"] == "TooManyRequestsException"

    def test_the_request_carries_both_bodies_and_the_configuration_set(
        self, aws: boto3.Session
    ) -> None:
        client = aws.client("sesv2")
        plain = SesMailer(client, sender=SENDER).request(MESSAGE)
        assert "ConfigurationSetName" not in plain
        request = SesMailer(client, sender=SENDER, configuration_set="gh").request(MESSAGE)
        assert request["ConfigurationSetName"] == "gh"
        assert request["FromEmailAddress"] == SENDER
        assert request["Destination"] == {"ToAddresses": ["alice@example.org"]}
        simple = request["Content"]["Simple"]
        assert simple["Subject"] == {"Data": "Hello", "Charset": "UTF-8"}
        assert simple["Body"] == {
            "Text": {"Data": "Hi there", "Charset": "UTF-8"},
            "Html": {"Data": "<p>Hi there</p>", "Charset": "UTF-8"},
        }


def test_the_in_memory_mailer_keeps_messages_in_order() -> None:
    mailer = InMemoryMailer()
    second = Message(to="bob@example.org", subject="2", text="2", html="2")
    mailer.send(MESSAGE)
    mailer.send(second)
    assert mailer.sent == [MESSAGE, second]


class TestMessages:
    @pytest.mark.parametrize(
        ("compose", "path", "validity"),
        [
            (messages.verify_email, "/verify-email", "24 hours"),
            (messages.password_reset, "/reset", "1 hour"),
        ],
    )
    def test_links_lead_to_the_site_with_the_token(
        self, compose: Callable[..., Message], path: str, validity: str
    ) -> None:
        mail = compose("a@example.org", site_url=SITE, token="t0k+/=n", username="alice")
        link = f"{SITE}{path}?token=t0k%2B%2F%3Dn"
        assert mail.to == "a@example.org"
        assert link in mail.text
        assert validity in mail.text
        assert link in links(mail.html).hrefs
        assert "alice" in mail.text

    def test_a_reset_says_to_ignore_it_if_not_asked_for(self) -> None:
        mail = messages.password_reset("a@example.org", site_url=SITE, token="t", username="a")
        assert "If you did not ask, ignore this" in mail.text
        assert "If you did not ask, ignore this" in mail.html

    def test_the_old_address_hears_of_the_new_one(self) -> None:
        mail = messages.email_changed("old@example.org", username="alice", new_address="new@x.org")
        assert mail.to == "old@example.org"
        assert "new@x.org" in mail.text
        assert "new@x.org" in mail.html

    @pytest.mark.parametrize(
        "mail",
        [
            messages.verify_email("a@example.org", site_url=SITE, token=HOSTILE, username=HOSTILE),
            messages.password_reset(
                "a@example.org", site_url=SITE, token=HOSTILE, username=HOSTILE
            ),
            messages.password_changed("a@example.org", username=HOSTILE),
            messages.email_changed("a@example.org", username=HOSTILE, new_address=HOSTILE),
            messages.mfa_enabled("a@example.org", username=HOSTILE),
            messages.mfa_disabled("a@example.org", username=HOSTILE),
        ],
    )
    def test_every_value_is_escaped_in_the_html(self, mail: Message) -> None:
        assert "<script>" not in mail.html
        assert "&lt;script&gt;" in mail.html
        assert HOSTILE in mail.text
        assert "script" not in links(mail.html).tags
        assert mail.subject
        assert mail.text.strip()
        assert mail.html.startswith("<!doctype html>")

    @pytest.mark.parametrize(
        ("mail", "words"),
        [
            (messages.password_changed("a@example.org", username="alice"), "password"),
            (messages.mfa_enabled("a@example.org", username="alice"), "turned on"),
            (messages.mfa_disabled("a@example.org", username="alice"), "turned off"),
        ],
    )
    def test_notices_say_what_happened_and_what_to_do_if_it_was_not_you(
        self, mail: Message, words: str
    ) -> None:
        assert words in mail.text
        assert "alice" in mail.text
        assert "If this was not you" in mail.text
