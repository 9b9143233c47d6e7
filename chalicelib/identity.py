"""Who owns what: an account's immutable random id, and the form of a name that is unique.

A name can be deleted and registered again by someone else; the id cannot. Access tokens carry
the id (``sub``), every row an account owns is stamped with it (``userId``), and every read and
write of such a row checks it against the profile, so nothing of a deleted account ever works
for, or shows up in, a new account of the same name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class AccountToken:
    """A bearer secret that finds its row: ``base64url(username).secret``, the name locating the
    partition and the secret 256 random bits, stored only as its SHA-256 (``digest``)."""

    username: str
    secret: str = field(repr=False)

    @classmethod
    def new(cls, username: str) -> AccountToken:
        return cls(username, secrets.token_urlsafe(32))

    def encode(self) -> str:
        name = base64.urlsafe_b64encode(self.username.encode()).rstrip(b"=").decode()
        return f"{name}.{self.secret}"

    @classmethod
    def parse(cls, raw: str) -> AccountToken:
        """``ValueError`` for anything that is not such a token."""
        name, _, secret = raw.partition(".")
        if not name or len(secret) != 43 or len(raw) > 300:
            raise ValueError("malformed token")
        try:
            username = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("malformed token") from None
        return cls(username, secret)

    @property
    def digest(self) -> str:
        # 256 random bits: a fast hash is enough to make the stored value useless to a reader.
        return hashlib.sha256(self.secret.encode()).hexdigest()
