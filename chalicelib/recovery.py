"""Email addresses and the one-time links mailed to them: verifying an address, and resetting a
forgotten password.

A link carries an ``AccountToken`` (``identity.py``); the row keeps only its digest, one row per
account and purpose (``keys.link_key``), so issuing a link voids the one before. A link is used
once: its row is deleted on the condition that it still holds that digest and has not expired. A
reset link also dies when the password changes, since its row remembers a fingerprint of the
password hash it was issued under. ``DynamoDBLinkRepository`` stores the rows;
``InMemoryLinkRepository`` is its twin (``tests/test_recovery.py`` runs one contract on both).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol

from botocore.exceptions import ClientError

from chalicelib import messages
from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import Invalid
from chalicelib.events import Client, SecurityEvents
from chalicelib.identity import AccountToken, Owner, name_key
from chalicelib.keys import is_condition_failure, link_key
from chalicelib.limits import LimitRepository, UserRateLimiter
from chalicelib.mail import Mailer, Message, send_quietly
from chalicelib.policy import check_new_password
from chalicelib.table import TTL_ATTRIBUTE
from chalicelib.users import User, UserRepository

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

    from chalicelib.accounts import Accounts

Purpose = Literal["verify", "reset"]
VERIFY_TTL = timedelta(hours=24)
RESET_TTL = timedelta(hours=1)


class InvalidLink(Invalid):
    """The link is malformed, unknown, used, replaced by a newer one, or expired."""

    message = "This link is invalid or has expired; please ask for a new one"


@dataclass(frozen=True, kw_only=True)
class Link:
    """What is stored about a link: never the token, only its digest."""

    owner: Owner
    purpose: Purpose
    digest: str
    expires_at: int
    # verify: the address it confirms; reset: a fingerprint of the password hash it replaces.
    subject: str


class LinkRepository(Protocol):
    def put(self, link: Link) -> None:
        """Store the account's link for its purpose, replacing any earlier one."""

    def get(self, username: str, purpose: Purpose) -> Link | None: ...

    def consume(self, link: Link, *, now: int) -> bool:
        """Delete the link if it is still the stored one and unexpired; False otherwise."""


class DynamoDBLinkRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def put(self, link: Link) -> None:
        self._table.put_item(
            Item={
                **link_key(link.owner.username, link.purpose),
                "userId": link.owner.user_id,
                "digest": link.digest,
                "subject": link.subject,
                TTL_ATTRIBUTE: link.expires_at,
            }
        )

    def get(self, username: str, purpose: Purpose) -> Link | None:
        row = self._table.get_item(Key=link_key(username, purpose), ConsistentRead=True).get("Item")
        if row is None:
            return None
        return Link(
            owner=Owner(username, str(row["userId"])),
            purpose=purpose,
            digest=str(row["digest"]),
            expires_at=int(str(row[TTL_ATTRIBUTE])),
            subject=str(row["subject"]),
        )

    def consume(self, link: Link, *, now: int) -> bool:
        try:
            self._table.delete_item(
                Key=link_key(link.owner.username, link.purpose),
                ConditionExpression="digest = :digest AND userId = :id AND #ttl > :now",
                ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":digest": link.digest,
                    ":id": link.owner.user_id,
                    ":now": now,
                },
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return False
            raise
        return True


class InMemoryLinkRepository:
    """The DynamoDB repository's twin."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, str], Link] = {}
        self._lock = threading.RLock()

    def put(self, link: Link) -> None:
        with self._lock:
            self._links[(link.owner.username, link.purpose)] = link

    def get(self, username: str, purpose: Purpose) -> Link | None:
        with self._lock:
            return self._links.get((username, purpose))

    def consume(self, link: Link, *, now: int) -> bool:
        with self._lock:
            stored = self._links.get((link.owner.username, link.purpose))
            if stored is None or (stored.digest, stored.owner) != (link.digest, link.owner):
                return False
            if stored.expires_at <= now:
                return False
            del self._links[(link.owner.username, link.purpose)]
            return True

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's links (only those stamped ``stamped``, if given); how many went."""
        with self._lock:
            keys = [
                key
                for key, link in self._links.items()
                if key[0] == username and stamped in (None, link.owner.user_id)
            ]
            for key in keys:
                del self._links[key]
            return len(keys)


@dataclass(frozen=True, kw_only=True)
class RecoveryLimits:
    """Mails and link uses per account, and per client address, in one window."""

    per_account: int
    per_address: int
    window: int


class Recovery:
    """Sets and verifies email addresses and resets forgotten passwords, by mailed links."""

    def __init__(
        self,
        users: UserRepository,
        links: LinkRepository,
        *,
        accounts: Accounts,
        events: SecurityEvents,
        mailer: Mailer,
        site_url: str,
        counters: LimitRepository,
        limits: RecoveryLimits,
        clock: Clock = utc_now,
        answer_after: float = 0.5,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._users = users
        self._links = links
        self._accounts = accounts
        self._events = events
        self._mailer = mailer
        self._site_url = site_url
        self._per_account = UserRateLimiter(
            counters, action="recover", limit=limits.per_account, window=limits.window, clock=clock
        )
        self._per_address = UserRateLimiter(
            counters,
            action="recover-ip",
            limit=limits.per_address,
            window=limits.window,
            clock=clock,
        )
        self._clock = clock
        self._answer_after = answer_after
        self._timer = timer
        self._sleep = sleep

    def register(
        self, username: str, password: str, email: str, client: Client, *, role: str = "user"
    ) -> User:
        """Sign up with an address, and mail the link that verifies it."""
        self._limit(username, client)
        user = self._accounts.register(username, password, client, role=role, email=email)
        # The account exists and a new link is one PUT /auth/email away; an error answer would
        # only make the client retry a signup that now says 409.
        send_quietly(self._mailer, self._verification(user, email))
        return user

    def change_email(self, owner: Owner, email: str, password: str, client: Client) -> User:
        """Set or change the address (the password confirms it is the owner): mail the new one
        a verification link; the mail worker tells the old verified one (its event names it)."""
        self._limit(owner.username, client)
        user = self._accounts.confirm_password(owner, password, client, kind="email_change_failure")
        if user.email == email and user.email_verified:
            return user
        self._users.set_email(owner, email, updated_at=iso(self._clock()))
        previous = user.verified_email
        notice = {} if previous is None else {"previousEmail": previous, "newEmail": email}
        self._events.record(owner, "email_change", client, **notice)
        changed = replace(user, email=email, email_verified=False)
        self._mailer.send(self._verification(changed, email))
        return changed

    def verify_email(self, raw_token: str, client: Client) -> str:
        """Confirm the address a verification link was sent to; return it."""
        self._per_address.hit(client.ip)
        link = self._redeem(raw_token, "verify")
        if not self._users.verify_email(link.owner, link.subject, updated_at=iso(self._clock())):
            # The account is gone or has another address now: this link confirms nothing.
            raise InvalidLink
        self._events.record(link.owner, "email_verified", client)
        return link.subject

    def forgot(self, login: str, client: Client) -> None:
        """Mail a reset link if ``login`` (a name or an address) is an account with a verified
        address. The answer is the same either way and takes about the same time."""
        started = self._timer()
        self._per_address.hit(client.ip)
        self._per_account.hit(name_key(login))
        user = self._users.find_by_email(login) if "@" in login else self._users.find(login)
        if user is not None and user.user_id is not None and user.verified_email is not None:
            token = self._issue(user.owner, "reset", RESET_TTL, _fingerprint(user.password_hash))
            mail = messages.password_reset(
                user.verified_email,
                site_url=self._site_url,
                token=token.encode(),
                username=user.username,
            )
            # An error answer would tell the caller that the account exists.
            send_quietly(self._mailer, mail)
            self._events.record(user.owner, "password_reset_requested", client)
        # Mail takes time that a refusal does not: every answer waits as long.
        remaining = self._answer_after - (self._timer() - started)
        if remaining > 0:
            self._sleep(remaining)

    def reset(self, raw_token: str, password: str, client: Client) -> None:
        """Set a new password by a reset link: every session ends, and the mail worker tells the
        owner (the ``password_reset`` event)."""
        self._per_address.hit(client.ip)
        link = self._find(raw_token, "reset")
        user = self._users.get(link.owner.username)
        if user is None or user.user_id != link.owner.user_id:
            raise InvalidLink
        if _fingerprint(user.password_hash) != link.subject:
            # The password changed since the link was sent.
            raise InvalidLink
        self._per_account.hit(name_key(user.username))
        # Checked before the link is used up, so a weak password does not cost the link.
        check_new_password(user.username, password)
        if not self._links.consume(link, now=self._now()):
            raise InvalidLink
        self._accounts.set_password(user, password, client, event="password_reset")

    def _verification(self, user: User, email: str) -> Message:
        """A new verification link for ``email``, as its mail."""
        token = self._issue(user.owner, "verify", VERIFY_TTL, email)
        return messages.verify_email(
            email, site_url=self._site_url, token=token.encode(), username=user.username
        )

    def _issue(self, owner: Owner, purpose: Purpose, ttl: timedelta, subject: str) -> AccountToken:
        token = AccountToken.new(owner.username)
        expires_at = self._now() + int(ttl.total_seconds())
        self._links.put(
            Link(
                owner=owner,
                purpose=purpose,
                digest=token.digest,
                expires_at=expires_at,
                subject=subject,
            )
        )
        return token

    def _find(self, raw_token: str, purpose: Purpose) -> Link:
        """The stored, unexpired link of this token; ``InvalidLink`` otherwise."""
        try:
            token = AccountToken.parse(raw_token)
        except ValueError:
            raise InvalidLink from None
        link = self._links.get(token.username, purpose)
        if link is None or not hmac.compare_digest(link.digest, token.digest):
            raise InvalidLink
        if link.expires_at <= self._now():
            raise InvalidLink
        return link

    def _redeem(self, raw_token: str, purpose: Purpose) -> Link:
        link = self._find(raw_token, purpose)
        if not self._links.consume(link, now=self._now()):
            raise InvalidLink
        return link

    def _limit(self, username: str, client: Client) -> None:
        self._per_address.hit(client.ip)
        self._per_account.hit(name_key(username))

    def _now(self) -> int:
        return int(self._clock().timestamp())


def _fingerprint(password_hash: str) -> str:
    """Enough of the hash to notice that it changed, nothing that helps to crack it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]
