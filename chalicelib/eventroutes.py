"""Where domain events go: one definition shared by the app, the local set-up and the CDK app.

The table's stream handler turns row changes into domain events (``docs/EVENTS.md``) and puts
them on the custom EventBridge bus, one entry each::

    Source="gatehouse", DetailType=<type>, Detail=json(<envelope>)

    envelope = {"type": "item.created", "version": 1, "id": "<unique per event>",
                "time": "<ISO-8601 UTC>", "accountId": "<userId>", "username": "<name>",
                "data": {<the resource's public fields>}}

A rule per worker sends the events it wants to that worker's SQS queue (with its dead-letter
queue); the SQS message body is EventBridge's event, whose ``detail`` is the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SOURCE = "gatehouse"
VERSION = 1

# The security events whose owner is mailed a notice (chalicelib/messages.py).
NOTICE_TYPES = (
    "security.password_change",
    "security.password_reset",
    "security.email_change",
    "security.mfa_enabled",
    "security.mfa_disabled",
)


@dataclass(frozen=True)
class Route:
    """Events of ``types`` (every event of ours when empty) go to the queue of ``worker``."""

    worker: str
    types: tuple[str, ...] = ()

    def pattern(self) -> dict[str, Any]:
        """The rule's EventBridge event pattern."""
        pattern: dict[str, Any] = {"source": [SOURCE]}
        if self.types:
            pattern["detail-type"] = list(self.types)
        return pattern


ROUTES = (
    # Pushes every event to the owner's open WebSocket connections.
    Route("notify"),
    # Mails the security notices, so a slow mail service never slows a request.
    Route("mail", NOTICE_TYPES),
    # Finishes the deletion of an account.
    Route("purge", ("account.deleted",)),
)
