"""Outgoing mail: one message, and the mailers that send it (Amazon SES v2, or a list in memory).

Locally the same ``SesMailer`` sends to the emulator (``AWS_ENDPOINT_URL``), which keeps every
message for the mail viewer (``tools/mailviewer.py``): there is no local-only path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendEmailRequestTypeDef

CHARSET = "UTF-8"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One mail to one address, as plain text and as HTML."""

    to: str
    subject: str
    text: str
    html: str


class Mailer(Protocol):
    def send(self, message: Message) -> None:
        """Hand ``message`` over for delivery; raise if it was not accepted."""


class SesMailer:
    """Sends through Amazon SES v2 from one verified sender.

    Errors are not caught: throttling and outages (``TooManyRequestsException``, a connection
    failure) reach the edge, which answers 503; a refusal (an unverified sender, the sandbox's
    unverified recipient, a suspended account) is a fault of the deployment, not of the caller.
    """

    def __init__(
        self, client: SESV2Client, *, sender: str, configuration_set: str | None = None
    ) -> None:
        self._client = client
        self._sender = sender
        self._configuration_set = configuration_set

    def send(self, message: Message) -> None:
        self._client.send_email(**self.request(message))

    def request(self, message: Message) -> SendEmailRequestTypeDef:
        """The ``SendEmail`` parameters for ``message``."""
        request: SendEmailRequestTypeDef = {
            "FromEmailAddress": self._sender,
            "Destination": {"ToAddresses": [message.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": message.subject, "Charset": CHARSET},
                    "Body": {
                        "Text": {"Data": message.text, "Charset": CHARSET},
                        "Html": {"Data": message.html, "Charset": CHARSET},
                    },
                }
            },
        }
        if self._configuration_set is not None:
            request["ConfigurationSetName"] = self._configuration_set
        return request


@dataclass
class InMemoryMailer:
    """Keeps what it is given, in order: for service tests."""

    sent: list[Message] = field(default_factory=list)

    def send(self, message: Message) -> None:
        self.sent.append(message)


def send_quietly(mailer: Mailer, message: Message) -> None:
    """Send mail whose failure must not change the answer (a notice of what already happened,
    or a reset link whose absence must not be told): SES's refusal or absence is logged."""
    try:
        mailer.send(message)
    except (BotoCoreError, ClientError) as exc:
        logger.warning("mail not sent", extra={"fields": {"error": type(exc).__name__}})
