"""Change data capture: what one record of the table's stream means as domain events.

A record (the shape Lambda delivers: ``eventID``, ``eventName``, ``dynamodb.Keys``, ``NewImage``,
``OldImage`` in DynamoDB JSON, and ``userIdentity`` for deletions by TTL) yields zero or more
events in the envelope of ``chalicelib/eventroutes.py``; ``docs/EVENTS.md`` lists them. Rows are
read with their own repositories' parsers and shown as the API shows them (``responses.py``), so
an event never carries more than the API would: no secret, hash or token.

Only rows stamped with their account's id (``userId``) are domain resources of an account; the
rest (name and address claims, refresh tokens, links, MFA rows, counters, tickets, connections,
dedupe marks, unstamped rows of the original system) yield nothing, and so does a row that the
table's TTL removed: an expiry is not something anyone did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from chalicelib import responses
from chalicelib.clock import Clock, iso, utc_now
from chalicelib.eventroutes import VERSION
from chalicelib.events import event_from_row
from chalicelib.items import item_from_row
from chalicelib.keys import EVENT, ITEM, PROFILE, SESSION, UPLOAD, USER, username_of
from chalicelib.sessions import session_from_row
from chalicelib.table import PARTITION_KEY, SORT_KEY
from chalicelib.uploads import upload_from_row
from chalicelib.users import user_from_item

# Who DynamoDB names as the deleter of a row its TTL removed.
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
ALL_SESSIONS = "all"
_DESERIALIZER = TypeDeserializer()


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """One event about one account, as it goes on the bus."""

    type: str
    id: str
    time: str
    account_id: str
    username: str
    data: dict[str, Any]
    version: int = VERSION

    def envelope(self) -> dict[str, Any]:
        """The event's JSON (EventBridge's ``detail``; docs/EVENTS.md)."""
        return {
            "type": self.type,
            "version": self.version,
            "id": self.id,
            "time": self.time,
            "accountId": self.account_id,
            "username": self.username,
            "data": self.data,
        }


@dataclass(frozen=True)
class _Change:
    """A record, decoded: which row, what happened to it, its images as plain Python values."""

    name: str
    pk: str
    sk: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    @property
    def row(self) -> dict[str, Any]:
        """The row as it is now, or (removed) as it was."""
        return self.new if self.new is not None else self.old or {}


def events_of(record: Mapping[str, Any], *, clock: Clock = utc_now) -> list[DomainEvent]:
    """The domain events one stream record means; their ids are the record's ``eventID`` (with
    the event's type after a ``#`` when the record means several), so a redelivered record
    yields the same ids and consumers can deduplicate."""
    change = _decode(record)
    if change is None or not change.pk.startswith(USER) or _expired(record):
        return []
    user_id = change.row.get("userId")
    if not isinstance(user_id, str) or not user_id or change.old == change.new:
        return []
    found = _meaning(change)
    event_id = str(record["eventID"])
    time = _time(record, clock)
    username = username_of(change.pk)
    return [
        DomainEvent(
            type=kind,
            id=event_id if len(found) == 1 else f"{event_id}#{kind}",
            time=time,
            account_id=user_id,
            username=username,
            data=data,
        )
        for kind, data in found
    ]


def _meaning(change: _Change) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of each event the change means, by the kind of row."""
    if change.sk == PROFILE:
        return _profile(change)
    if change.sk.startswith(SESSION):
        if change.name != "REMOVE":
            return []
        return [("session.revoked", {"sessionId": session_from_row(change.row).session_id})]
    if change.sk.startswith(ITEM):
        kind = {"INSERT": "item.created", "MODIFY": "item.updated", "REMOVE": "item.deleted"}
        return [(kind[change.name], responses.item(item_from_row(change.row)))]
    if change.sk.startswith(UPLOAD):
        return _upload(change)
    if change.sk.startswith(EVENT) and change.name == "INSERT":
        shown = responses.event(event_from_row(change.row))
        return [(f"security.{shown['type']}", shown)]
    return []


def _profile(change: _Change) -> list[tuple[str, dict[str, Any]]]:
    if change.name != "MODIFY" or change.old is None or change.new is None:
        return []
    found: list[tuple[str, dict[str, Any]]] = []
    before, after = user_from_item(change.old), user_from_item(change.new)
    # Logging out everywhere and a password change or reset raise the token version; disabling
    # sets the flag: either way every session and access token of the account stops.
    if after.token_version > before.token_version or (after.disabled and not before.disabled):
        found.append(("session.revoked", {"sessionId": ALL_SESSIONS}))
    if "deletedAt" in change.new and "deletedAt" not in change.old:
        found.append(("account.deleted", {"username": username_of(change.pk)}))
    return found


def _upload(change: _Change) -> list[tuple[str, dict[str, Any]]]:
    if change.name == "REMOVE":
        return [("upload.deleted", responses.upload(upload_from_row(change.row)))]
    before, after = change.old or {}, change.new or {}
    if (
        change.name == "MODIFY"
        and before.get("status") == "pending"
        and after.get("status") == "ready"
    ):
        return [("upload.completed", responses.upload(upload_from_row(after)))]
    return []


def _expired(record: Mapping[str, Any]) -> bool:
    """Whether the table's TTL removed the row (DynamoDB itself is the deleter)."""
    return record.get("userIdentity") == TTL_IDENTITY


def _decode(record: Mapping[str, Any]) -> _Change | None:
    name = record.get("eventName")
    stream = record.get("dynamodb", {})
    if name not in {"INSERT", "MODIFY", "REMOVE"}:
        return None
    keys = _image(stream.get("Keys"))
    if keys is None or not isinstance(keys.get(PARTITION_KEY), str):
        return None
    return _Change(
        name=name,
        pk=keys[PARTITION_KEY],
        sk=str(keys.get(SORT_KEY, "")),
        old=_image(stream.get("OldImage")),
        new=_image(stream.get("NewImage")),
    )


def _image(image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A DynamoDB JSON image as the boto3 resource reads rows (numbers as Decimal)."""
    if image is None:
        return None
    return {name: _DESERIALIZER.deserialize(value) for name, value in image.items()}


def _time(record: Mapping[str, Any], clock: Clock) -> str:
    """When the change happened: the stream's approximate time (epoch seconds), else now."""
    stamp = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if isinstance(stamp, int | float | Decimal):
        return iso(datetime.fromtimestamp(float(stamp), UTC))
    if isinstance(stamp, datetime):
        return iso(stamp)
    return iso(clock())
