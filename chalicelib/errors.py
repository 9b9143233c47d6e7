"""The kinds of refusal a caller is told about. Each domain error derives from one; the edge
answers each kind with one status (``chalicelib/web/errors.py``), so a new error needs no edit
there. ``message`` is what the caller reads; the exception's own text stays in the logs, unless
``shows_detail`` says the text is written for the caller (a broken rule, say)."""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """An expected outcome, not a bug."""

    message: ClassVar[str] = "The request cannot be completed"
    shows_detail: ClassVar[bool] = False

    @property
    def public_message(self) -> str:
        return str(self) if self.shows_detail and str(self) else self.message


class Invalid(DomainError):
    """The request breaks a rule (400)."""


class Unauthenticated(DomainError):
    """Who is asking cannot be established (401)."""


class Forbidden(DomainError):
    """The caller may not do this (403)."""


class NotFound(DomainError):
    """There is no such thing, as far as this caller may know (404)."""


class Conflict(DomainError):
    """The state of things does not allow it now (409)."""
