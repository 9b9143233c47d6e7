"""The password policy for new passwords (signup and change); lengths are checked by the model."""

from __future__ import annotations

import functools
from pathlib import Path

from chalicelib.errors import Invalid

_COMMON = Path(__file__).resolve().parent / "data" / "common-passwords.txt"


class WeakPassword(Invalid):
    """The new password is too easy to guess."""

    shows_detail = True


@functools.cache
def _common_passwords() -> frozenset[str]:
    lines = _COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def check_new_password(username: str, password: str) -> None:
    """Raise ``WeakPassword`` for the username itself or a commonly used password."""
    candidate = password.casefold()
    if candidate == username.casefold():
        raise WeakPassword("Password must not be the same as the username")
    if candidate in _common_passwords():
        raise WeakPassword("Password is too common; choose one that is harder to guess")
