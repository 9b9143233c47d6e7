"""The mail worker's use case: the security notices, sent from the queue so that a slow mail
service never slows a request.

A request records its security event and answers; the table's stream puts the event on the bus,
whose rule sends the types of ``eventroutes.NOTICE_TYPES`` to the mail queue. For each, the
account is read afresh (the event names it; an account gone, or a name now held by another
account, gets nothing) and the notice goes to its verified address; the notice of an address
change goes to the address it replaced (``previousEmail`` in the event), if that one was
verified. Each event mails at most once (``workers.Idempotency``). Links never travel this way:
a link's token must never be on the bus, so verification and reset mails stay in the request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chalicelib import messages
from chalicelib.eventroutes import NOTICE_TYPES
from chalicelib.mail import Mailer, Message
from chalicelib.users import UserRepository
from chalicelib.workers import Envelope, Idempotency

logger = logging.getLogger(__name__)

_NOTICES: dict[str, Callable[..., Message]] = {
    "security.password_change": messages.password_changed,
    "security.password_reset": messages.password_changed,
    "security.mfa_enabled": messages.mfa_enabled,
    "security.mfa_disabled": messages.mfa_disabled,
}
EMAIL_CHANGE = "security.email_change"


class Notices:
    """Mails the owner of an account a notice of a security event."""

    def __init__(self, users: UserRepository, *, mailer: Mailer | None, once: Idempotency) -> None:
        self._users = users
        # None: mail is off (no MAIL_FROM), and notices are not sent, as before the queue.
        self._mailer = mailer
        self._once = once

    def send(self, envelope: Envelope) -> None:
        """Mail the notice of the event, once; events of other types are not notices."""
        if envelope["type"] not in NOTICE_TYPES:
            return
        self._once.once(str(envelope["id"]), lambda: self._send(envelope))

    def _send(self, envelope: Envelope) -> None:
        message = None if self._mailer is None else self._notice(envelope)
        if self._mailer is None or message is None:
            logger.info(
                "no notice to send",
                extra={"fields": {"eventId": envelope["id"], "type": envelope["type"]}},
            )
            return
        # Not caught: SES's refusal or outage fails the message, which the queue retries.
        self._mailer.send(message)

    def _notice(self, envelope: Envelope) -> Message | None:
        username = str(envelope["username"])
        user = self._users.get(username)
        if user is None or user.user_id != envelope["accountId"]:
            return None
        if envelope["type"] == EMAIL_CHANGE:
            details = envelope["data"].get("details") or {}
            previous = details.get("previousEmail")
            if not isinstance(previous, str):
                return None
            new_address = details.get("newEmail") or user.email or ""
            return messages.email_changed(
                previous, username=user.username, new_address=str(new_address)
            )
        address = user.verified_email
        if address is None:
            return None
        return _NOTICES[envelope["type"]](address, username=user.username)
