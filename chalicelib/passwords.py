"""Password hashing with scrypt, including the original system's format."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

_PREFIX = "$scrypt$"


@dataclass(frozen=True, kw_only=True)
class ScryptCost:
    """scrypt parameters: memory is 128 * n * r bytes, time grows with n * r * p."""

    n: int
    r: int
    p: int

    @property
    def work(self) -> int:
        return self.n * self.r * self.p

    @property
    def maxmem(self) -> int:
        # OpenSSL refuses to run when its working set (V plus B) exceeds maxmem; leave headroom.
        return 128 * self.r * (self.n + self.p + 2) + 1024 * 1024

    def at_least(self, other: ScryptCost) -> bool:
        """True when this cost needs at least as much memory and work as ``other``."""
        return self.n * self.r >= other.n * other.r and self.work >= other.work


# OWASP's "N=2^14, r=8, p=5" set: 16 MiB of memory per hash, about 210 ms on this project's
# reference machine (see README, "Password hashing").
DEFAULT_COST = ScryptCost(n=2**14, r=8, p=5)

# What the original Node.js system wrote: crypto.scrypt defaults, a 32-byte salt, a 64-byte key,
# stored as "base64(salt):base64(key)".
LEGACY_COST = ScryptCost(n=16384, r=8, p=1)
_LEGACY_KEY_BYTES = 64

# Bounds on parameters read back from storage, so a corrupted or planted hash cannot make a
# login allocate more than 64 MiB or work more than 4 times the default.
_MAX_MEMORY = 64 * 1024 * 1024
_MAX_WORK = 4 * DEFAULT_COST.work
_MAX_KEY_BYTES = 128
_DUMMY_SALT = secrets.token_bytes(16)


@dataclass(frozen=True)
class _Parsed:
    cost: ScryptCost
    salt: bytes
    key: bytes
    legacy: bool


class ScryptHasher:
    """Hashes passwords into self-describing strings and verifies them in constant time.

    New hashes use the PHC string format: ``$scrypt$ln=14,r=8,p=5$<salt>$<key>`` (unpadded
    standard base64), so the cost can be raised later without breaking stored hashes.
    """

    def __init__(
        self, cost: ScryptCost = DEFAULT_COST, *, salt_bytes: int = 16, key_bytes: int = 32
    ) -> None:
        self._cost = cost
        self._salt_bytes = salt_bytes
        self._key_bytes = key_bytes

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(self._salt_bytes)
        key = _derive(password, salt, self._cost, self._key_bytes)
        cost = self._cost
        return (
            f"{_PREFIX}ln={cost.n.bit_length() - 1},r={cost.r},p={cost.p}"
            f"${_b64encode(salt)}${_b64encode(key)}"
        )

    def verify(self, password: str, stored: str) -> bool:
        """True when ``password`` matches ``stored``; False for a mismatch or a malformed hash.

        It always does at least the work of one verification at the current cost, whatever
        ``stored`` is, so timing does not tell a cheaper legacy hash (or a broken one) apart.
        """
        parsed = _parse(stored)
        if parsed is None:
            self.verify_dummy(password)
            return False
        candidate = _derive(password, parsed.salt, parsed.cost, len(parsed.key))
        missing = self._cost.work - parsed.cost.work
        if missing > 0:
            per_block = self._cost.n * self._cost.r
            padding = ScryptCost(n=self._cost.n, r=self._cost.r, p=-(-missing // per_block))
            _derive(password, _DUMMY_SALT, padding, 16)
        return hmac.compare_digest(candidate, parsed.key)

    def verify_dummy(self, password: str) -> None:
        """Spend the time of a verification at the current cost, for a user that does not exist."""
        _derive(password, _DUMMY_SALT, self._cost, self._key_bytes)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` is in the legacy format or below the current cost."""
        parsed = _parse(stored)
        return parsed is None or parsed.legacy or not parsed.cost.at_least(self._cost)


def _derive(password: str, salt: bytes, cost: ScryptCost, key_bytes: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=cost.n,
        r=cost.r,
        p=cost.p,
        maxmem=cost.maxmem,
        dklen=key_bytes,
    )


def _parse(stored: str) -> _Parsed | None:
    try:
        if stored.startswith(_PREFIX):
            return _parse_phc(stored[len(_PREFIX) :])
        return _parse_legacy(stored)
    except (ValueError, binascii.Error):
        return None


def _parse_phc(body: str) -> _Parsed | None:
    params_text, salt_text, key_text = body.split("$")
    params = dict(item.split("=", 1) for item in params_text.split(","))
    if set(params) != {"ln", "r", "p"}:
        return None
    log2_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
    if not (1 <= log2_n <= 24 and r >= 1 and p >= 1):
        return None
    cost = ScryptCost(n=2**log2_n, r=r, p=p)
    if 128 * cost.n * cost.r > _MAX_MEMORY or cost.work > _MAX_WORK:
        return None
    salt, key = _b64decode(salt_text), _b64decode(key_text)
    if not salt or not 16 <= len(key) <= _MAX_KEY_BYTES:
        return None
    return _Parsed(cost, salt, key, legacy=False)


def _parse_legacy(stored: str) -> _Parsed | None:
    salt_text, key_text = stored.split(":")
    salt = base64.b64decode(salt_text, validate=True)
    key = base64.b64decode(key_text, validate=True)
    if not salt or len(key) != _LEGACY_KEY_BYTES:
        return None
    return _Parsed(LEGACY_COST, salt, key, legacy=True)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
