"""Live updates over the WebSocket API: one-time tickets to connect, the open connections, and
the notifier that pushes an account's events to its connections.

Browsers cannot put a header on a WebSocket handshake, and a token in a URL ends up in access
logs. So ``POST /auth/ws-ticket`` (bearer) hands out a ticket instead: an ``AccountToken`` (the
name finds the row, 256 random bits), valid ``TICKET_TTL``, stored only as its SHA-256, and used
up by the ``$connect`` handler with one conditional delete. A connection is stored twice, under
its owner (to list them) and under its id (the ``$disconnect`` event names only the id), both
stamped with the account id and removed by TTL after ``CONNECTION_TTL`` should a disconnect be
lost (API Gateway closes a connection after two hours at most).

``DynamoDB...Repository`` stores the rows; each ``InMemory...Repository`` is its twin
(``tests/test_realtime_repository.py`` runs one contract on both).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import Unauthenticated
from chalicelib.identity import AccountToken, Owner
from chalicelib.keys import (
    CONNECTION,
    OwnerMissing,
    connection_key,
    connection_owner_key,
    error_code,
    is_condition_failure,
    put_owned,
    ticket_key,
    user_pk,
)
from chalicelib.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from chalicelib.workers import Envelope, Idempotency

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

    from chalicelib.users import InMemoryUserRepository

logger = logging.getLogger(__name__)
TICKET_TTL = timedelta(seconds=30)
CONNECTION_TTL = timedelta(hours=3)
# What a message carries of the envelope: the account's id and name are the recipient's own.
MESSAGE_FIELDS = ("type", "version", "id", "time", "data")
_CONNECTION_ID_CHARS = 128


class TicketRefused(Unauthenticated):
    """The ticket is malformed, unknown, used, expired, or its account is gone."""

    message = "Invalid or expired ticket"


@dataclass(frozen=True)
class Ticket:
    """What is stored of a ticket: its owner and digest, never the ticket."""

    owner: Owner
    digest: str
    expires_at: int


@dataclass(frozen=True)
class IssuedTicket:
    url: str
    expires_in: int


class TicketRepository(Protocol):
    def put(self, ticket: Ticket) -> None: ...

    def consume(self, username: str, digest: str, *, now: int) -> Owner | None:
        """Delete the ticket if it is there and unexpired at ``now``: its owner, else None."""


class DynamoDBTicketRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def put(self, ticket: Ticket) -> None:
        self._table.put_item(
            Item={
                **ticket_key(ticket.owner.username, ticket.digest),
                "userId": ticket.owner.user_id,
                TTL_ATTRIBUTE: ticket.expires_at,
            }
        )

    def consume(self, username: str, digest: str, *, now: int) -> Owner | None:
        try:
            # One conditional delete: of two connects with one ticket, one wins.
            response = self._table.delete_item(
                Key=ticket_key(username, digest),
                ConditionExpression="attribute_exists(#pk) AND #ttl > :now",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": now},
                ReturnValues="ALL_OLD",
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                return None
            raise
        return Owner(username, str(response["Attributes"]["userId"]))


class InMemoryTicketRepository:
    """The DynamoDB repository's twin."""

    def __init__(self) -> None:
        self._tickets: dict[tuple[str, str], Ticket] = {}
        self._lock = threading.Lock()

    def put(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets[(ticket.owner.username, ticket.digest)] = ticket

    def consume(self, username: str, digest: str, *, now: int) -> Owner | None:
        with self._lock:
            ticket = self._tickets.get((username, digest))
            if ticket is None or ticket.expires_at <= now:
                return None
            del self._tickets[(username, digest)]
            return ticket.owner

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's tickets (only those stamped ``stamped``, if given); how many went."""
        with self._lock:
            keys = [
                key
                for key, ticket in self._tickets.items()
                if key[0] == username and stamped in (None, ticket.owner.user_id)
            ]
            for key in keys:
                del self._tickets[key]
            return len(keys)


class Tickets:
    """Issues the one-time tickets that open a WebSocket connection, and redeems them."""

    def __init__(self, repository: TicketRepository, *, clock: Clock = utc_now) -> None:
        self._repository = repository
        self._clock = clock

    def issue(self, owner: Owner, *, url: str) -> IssuedTicket:
        """A new ticket for ``owner``, as the WebSocket ``url`` to open with it."""
        token = AccountToken.new(owner.username)
        ttl = int(TICKET_TTL.total_seconds())
        self._repository.put(Ticket(owner, token.digest, self._now() + ttl))
        return IssuedTicket(f"{url}?ticket={quote(token.encode(), safe='')}", ttl)

    def redeem(self, raw: str | None) -> Owner:
        """The owner of the ticket, used up now; ``TicketRefused`` otherwise."""
        try:
            token = AccountToken.parse(raw or "")
        except ValueError:
            raise TicketRefused from None
        owner = self._repository.consume(token.username, token.digest, now=self._now())
        if owner is None:
            raise TicketRefused
        return owner

    def _now(self) -> int:
        return int(self._clock().timestamp())


@dataclass(frozen=True)
class Connection:
    owner: Owner
    connection_id: str
    connected_at: str
    expires_at: int


class ConnectionRepository(Protocol):
    def add(self, connection: Connection) -> None:
        """Store both rows while the owner's profile holds its id: ``OwnerMissing``."""

    def remove(self, connection_id: str) -> Owner | None:
        """Delete both rows of the connection; whose it was (None: unknown)."""

    def list(self, owner: Owner) -> list[str]:
        """The ids of the account's stored connections (this account's id only)."""

    def drop(self, owner: Owner, connection_id: str) -> None:
        """Delete both rows of one of the account's connections (API Gateway says it is gone)."""


class DynamoDBConnectionRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, connection: Connection) -> None:
        owner = connection.owner
        lookup = {
            **connection_owner_key(connection.connection_id),
            "username": owner.username,
            "userId": owner.user_id,
            TTL_ATTRIBUTE: connection.expires_at,
        }
        put_owned(
            self._table,
            {
                **connection_key(owner.username, connection.connection_id),
                "connectionId": connection.connection_id,
                "connectedAt": connection.connected_at,
                TTL_ATTRIBUTE: connection.expires_at,
            },
            owner=owner,
            also=[{"Put": {"TableName": self._table.name, "Item": lookup}}],
        )

    def remove(self, connection_id: str) -> Owner | None:
        response = self._table.delete_item(
            Key=connection_owner_key(connection_id), ReturnValues="ALL_OLD"
        )
        row = response.get("Attributes")
        if row is None:
            return None
        owner = Owner(str(row["username"]), str(row["userId"]))
        self._table.delete_item(Key=connection_key(owner.username, connection_id))
        return owner

    def list(self, owner: Owner) -> list[str]:
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(owner.username))
            & Key(SORT_KEY).begins_with(CONNECTION),
            "FilterExpression": Attr("userId").eq(owner.user_id),
            "ProjectionExpression": "connectionId",
        }
        found: list[str] = []
        while True:
            page = self._table.query(**query)
            found += [str(row["connectionId"]) for row in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return found
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def drop(self, owner: Owner, connection_id: str) -> None:
        with self._table.batch_writer() as batch:
            batch.delete_item(Key=connection_key(owner.username, connection_id))
            batch.delete_item(Key=connection_owner_key(connection_id))


class InMemoryConnectionRepository:
    """The DynamoDB repository's twin; owners are checked in the user repository it is given."""

    def __init__(self, users: InMemoryUserRepository) -> None:
        self._users = users
        # As in the table: the rows under the owner, and the rows that find an owner by id.
        self._connections: dict[tuple[str, str], Connection] = {}
        self._owners: dict[str, Owner] = {}
        self._lock = threading.Lock()

    def add(self, connection: Connection) -> None:
        owner = connection.owner
        with self._lock:
            if not self._users.holds(owner):
                raise OwnerMissing(owner.username)
            self._connections[(owner.username, connection.connection_id)] = connection
            self._owners[connection.connection_id] = owner

    def remove(self, connection_id: str) -> Owner | None:
        with self._lock:
            owner = self._owners.pop(connection_id, None)
            if owner is not None:
                self._connections.pop((owner.username, connection_id), None)
            return owner

    def list(self, owner: Owner) -> list[str]:
        with self._lock:
            return [
                connection.connection_id
                for connection in self._connections.values()
                if connection.owner == owner
            ]

    def drop(self, owner: Owner, connection_id: str) -> None:
        with self._lock:
            self._connections.pop((owner.username, connection_id), None)
            self._owners.pop(connection_id, None)

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the rows in the user's partition (only those stamped ``stamped``, if given);
        the rows by id stay until their TTL, as in the table."""
        with self._lock:
            gone = [
                key
                for key, connection in self._connections.items()
                if key[0] == username and stamped in (None, connection.owner.user_id)
            ]
            for key in gone:
                del self._connections[key]
            return len(gone)


class Connections:
    """Opens a connection with a ticket and forgets it on disconnect."""

    def __init__(
        self, repository: ConnectionRepository, *, tickets: Tickets, clock: Clock = utc_now
    ) -> None:
        self._repository = repository
        self._tickets = tickets
        self._clock = clock

    def connect(self, connection_id: str, ticket: str | None) -> Owner:
        """Use up the ticket and store the connection for its owner; ``TicketRefused``."""
        if not 0 < len(connection_id) <= _CONNECTION_ID_CHARS:
            raise TicketRefused("no connection id")
        owner = self._tickets.redeem(ticket)
        now = self._clock()
        connection = Connection(
            owner,
            connection_id,
            connected_at=iso(now),
            expires_at=int((now + CONNECTION_TTL).timestamp()),
        )
        try:
            self._repository.add(connection)
        except OwnerMissing:
            raise TicketRefused("the account is gone") from None
        return owner

    def disconnect(self, connection_id: str) -> Owner | None:
        """Forget the connection; whose it was."""
        return self._repository.remove(connection_id)


class ConnectionsApi(Protocol):
    """The part of boto3's ``apigatewaymanagementapi`` client the notifier uses."""

    def post_to_connection(self, *, Data: bytes, ConnectionId: str) -> object: ...


def message(envelope: Envelope) -> bytes:
    """What a connection receives of an event: one JSON object."""
    return json.dumps({field: envelope.get(field) for field in MESSAGE_FIELDS}).encode()


class Notifier:
    """Pushes each event to its owner's open connections, and forgets those that are gone."""

    def __init__(
        self,
        connections: ConnectionRepository,
        *,
        api: ConnectionsApi | None,
        once: Idempotency,
    ) -> None:
        self._connections = connections
        # None: no WebSocket endpoint is configured, so no connection can be reached.
        self._api = api
        self._once = once

    def push(self, envelope: Envelope) -> None:
        """Send the event to every connection of its account (once per event). A failure other
        than a gone connection raises after the others were tried: the event is retried, and
        the connections that got it may get it again (clients ignore an ``id`` they have seen)."""
        self._once.once(str(envelope["id"]), lambda: self._send(envelope))

    def _send(self, envelope: Envelope) -> None:
        owner = Owner(str(envelope["username"]), str(envelope["accountId"]))
        connection_ids = self._connections.list(owner)
        if not connection_ids:
            return
        if self._api is None:
            raise RuntimeError("WEBSOCKET_ENDPOINT is not set: cannot reach the connections")
        data = message(envelope)
        failed: ClientError | None = None
        for connection_id in connection_ids:
            try:
                self._api.post_to_connection(ConnectionId=connection_id, Data=data)
            except ClientError as exc:
                if error_code(exc) == "GoneException":
                    # 410: the client went without a disconnect reaching us.
                    self._connections.drop(owner, connection_id)
                    logger.info(
                        "connection gone", extra={"fields": {"connectionId": connection_id}}
                    )
                    continue
                failed = exc
        if failed is not None:
            raise failed
