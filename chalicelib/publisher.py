"""Putting domain events on the custom EventBridge bus, and an in-memory twin for tests.

``PutEvents`` takes at most 10 entries and 256 KB per call and may accept some entries of a
call and refuse others (``FailedEntryCount``, an ``ErrorCode`` per refused entry). The refused
ones alone are sent again, a few times with back-off; what is still refused then raises, so the
stream batch is retried (and bisected) by Lambda. A redelivered batch puts some events twice:
consumers deduplicate by the envelope's ``id`` (docs/EVENTS.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from chalicelib.changes import DomainEvent
from chalicelib.eventroutes import SOURCE

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef as EntryTypeDef

logger = logging.getLogger(__name__)

MAX_ENTRIES = 10
MAX_REQUEST_BYTES = 256 * 1024


class PublishFailed(Exception):
    """EventBridge kept refusing some entries."""


class EventTooLarge(PublishFailed):
    """One event alone is over PutEvents' size limit."""


class Publisher(Protocol):
    def publish(self, events: Sequence[DomainEvent]) -> None:
        """Put every event on the bus, or raise."""


def entry_size(entry: EntryTypeDef) -> int:
    """An entry's size as EventBridge counts it against the 256 KB of a call (the UTF-8 bytes
    of its source, detail type, detail and resources, and 14 for a time)."""
    counted = [entry.get("Source", ""), entry.get("DetailType", ""), entry.get("Detail", "")]
    counted += entry.get("Resources", [])
    return sum(len(text.encode()) for text in counted) + (14 if "Time" in entry else 0)


def batches(entries: Sequence[EntryTypeDef]) -> Iterator[list[EntryTypeDef]]:
    """The entries in order, in calls of at most 10 entries and 256 KB."""
    batch: list[EntryTypeDef] = []
    size = 0
    for entry in entries:
        this = entry_size(entry)
        if this > MAX_REQUEST_BYTES:
            raise EventTooLarge(f"an event of {this} bytes is over {MAX_REQUEST_BYTES}")
        if batch and (len(batch) == MAX_ENTRIES or size + this > MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += this
    if batch:
        yield batch


class EventBridgePublisher:
    """Puts events on one bus: ``Source`` ours, ``DetailType`` the event's type, ``Detail`` its
    envelope (``chalicelib/eventroutes.py``)."""

    def __init__(
        self,
        client: EventBridgeClient,
        *,
        bus_name: str,
        attempts: int = 4,
        first_delay: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._bus_name = bus_name
        self._attempts = attempts
        self._first_delay = first_delay
        self._sleep = sleep

    def entry(self, event: DomainEvent) -> EntryTypeDef:
        """The ``PutEvents`` entry of one event."""
        return {
            "Source": SOURCE,
            "DetailType": event.type,
            "Detail": json.dumps(event.envelope(), separators=(",", ":")),
            "EventBusName": self._bus_name,
        }

    def publish(self, events: Sequence[DomainEvent]) -> None:
        for batch in batches([self.entry(event) for event in events]):
            self._put(batch)

    def _put(self, entries: list[EntryTypeDef]) -> None:
        pending = entries
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._first_delay * 2 ** (attempt - 1))
            # Throttling of the call as a whole is botocore's to retry (standard mode).
            response = self._client.put_events(Entries=pending)
            if not response.get("FailedEntryCount"):
                return
            # One result per entry, in order; a refused one has an ErrorCode.
            results = response.get("Entries", [])
            codes = [result.get("ErrorCode") for result in results]
            refused = [entry for entry, code in zip(pending, codes, strict=False) if code]
            logger.warning(
                "events refused",
                extra={
                    "fields": {
                        "refused": response["FailedEntryCount"],
                        "of": len(pending),
                        "codes": sorted({code for code in codes if code}),
                    }
                },
            )
            # A count without the entries it counts: which ones is unknown, so all again.
            pending = refused or pending
        raise PublishFailed(f"{len(pending)} events refused after {self._attempts} attempts")


@dataclass
class InMemoryPublisher:
    """Keeps what it is given, in order: for tests."""

    published: list[DomainEvent] = field(default_factory=list)

    def publish(self, events: Sequence[DomainEvent]) -> None:
        self.published.extend(events)
