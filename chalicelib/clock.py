"""The injectable clock every time-dependent component takes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a Z, as JavaScript's toISOString() writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ShiftedClock:
    """UTC now plus the seconds written in a file, read at every call.

    Only the local stages set ``CLOCK_OFFSET_FILE``: tests move the server's time forward to
    expire tokens and sessions instead of sleeping. Settings refuse it inside Lambda.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self) -> datetime:
        try:
            offset = float(self._path.read_text() or 0)
        except FileNotFoundError:
            offset = 0.0
        return utc_now() + timedelta(seconds=offset)
