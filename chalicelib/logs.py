"""Structured logging: one JSON object per line, never a secret in it."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

# Loggers whose records go out as JSON lines: the app's own and the domain's.
LOGGER_NAMES = ("gatehouse", "chalicelib")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    """Send our loggers to stdout as JSON lines at ``level``; idempotent."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(JsonFormatter())
            logger.handlers = [handler]
