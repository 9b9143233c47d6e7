"""Who owns what: an account's immutable random id, and the form of a name that is unique.

A name can be deleted and registered again by someone else; the id cannot. Access tokens carry
the id (``sub``), every row an account owns is stamped with it (``userId``), and every read and
write of such a row checks it against the profile, so nothing of a deleted account ever works
for, or shows up in, a new account of the same name.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class Owner:
    """An account as its rows know it: the partition (name) and the id they are stamped with."""

    username: str
    user_id: str


def new_user_id() -> str:
    """128 random bits as 32 hex digits."""
    return secrets.token_hex(16)


def name_key(username: str) -> str:
    """The form under which a name is unique: ``alice`` and ``Alice`` are one name."""
    return username.casefold()
