"""Tickets, connections and the notifier over the in-memory twins, on an injected clock; the
WebSocket management API is a fake that answers as API Gateway does (410 for a gone one)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from botocore.exceptions import ClientError

from chalicelib.identity import AccountToken, Owner
from chalicelib.realtime import Connections, Notifier, TicketRefused, Tickets
from chalicelib.stores import Stores
from chalicelib.workers import Idempotency
from tests.conftest import FakeClock, account, owner_of
from tests.test_workers import envelope

URL = "wss://example.com/ws"
ALICE = owner_of("alice")
BOB = owner_of("bob")


@pytest.fixture
def stores() -> Stores:
    stores = Stores.in_memory()
    stores.users.add(account("alice"))
    stores.users.add(account("bob"))
    return stores


@pytest.fixture
def tickets(stores: Stores, clock: FakeClock) -> Tickets:
    return Tickets(stores.tickets, clock=clock)


@pytest.fixture
def connections(stores: Stores, tickets: Tickets, clock: FakeClock) -> Connections:
    return Connections(stores.connections, tickets=tickets, clock=clock)


def ticket_of(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == URL
    (ticket,) = parse_qs(parts.query)["ticket"]
    return ticket


class TestTickets:
    def test_a_ticket_opens_one_connection(
        self, connections: Connections, tickets: Tickets
    ) -> None:
        issued = tickets.issue(ALICE, url=URL)
        assert issued.expires_in == 30
        ticket = ticket_of(issued.url)
        assert connections.connect("conn-1", ticket) == ALICE
        with pytest.raises(TicketRefused):
            connections.connect("conn-2", ticket)

    def test_a_ticket_lasts_30_seconds(
        self, connections: Connections, tickets: Tickets, clock: FakeClock
    ) -> None:
        fresh = ticket_of(tickets.issue(ALICE, url=URL).url)
        late = ticket_of(tickets.issue(ALICE, url=URL).url)
        clock.advance(seconds=29)
        assert connections.connect("conn-1", fresh) == ALICE
        clock.advance(seconds=1)
        with pytest.raises(TicketRefused):
            connections.connect("conn-2", late)

    def test_a_ticket_is_stored_only_as_its_digest(self, stores: Stores, tickets: Tickets) -> None:
        ticket = ticket_of(tickets.issue(ALICE, url=URL).url)
        token = AccountToken.parse(ticket)
        assert token.username == "alice"
        assert token.secret not in repr(vars(stores.tickets))
        assert len(token.secret) == 43  # 256 random bits

    def test_a_ticket_under_another_name_or_a_forged_one_is_refused(
        self, connections: Connections, tickets: Tickets
    ) -> None:
        token = AccountToken.parse(ticket_of(tickets.issue(ALICE, url=URL).url))
        as_bob = AccountToken("bob", token.secret).encode()
        for refused in (as_bob, AccountToken.new("alice").encode(), "", "garbage", None):
            with pytest.raises(TicketRefused):
                connections.connect("conn-x", refused)
        # None of those used up alice's ticket, and it opens a connection for her only.
        assert connections.connect("conn-a", token.encode()) == ALICE

    def test_the_url_carries_the_ticket_escaped(self, tickets: Tickets) -> None:
        weird = Owner("a b/c?d", "e" * 32)
        url = tickets.issue(weird, url=URL).url
        assert "?ticket=" in url
        assert " " not in url
        assert "/" not in url.split("?ticket=")[1]
        assert AccountToken.parse(unquote(url.split("?ticket=")[1])).username == weird.username


class TestConnections:
    def test_a_connection_ends_with_its_disconnect(
        self, connections: Connections, tickets: Tickets, stores: Stores
    ) -> None:
        connections.connect("conn-1", ticket_of(tickets.issue(ALICE, url=URL).url))
        assert stores.connections.list(ALICE) == ["conn-1"]
        assert connections.disconnect("conn-1") == ALICE
        assert stores.connections.list(ALICE) == []
        assert connections.disconnect("conn-1") is None

    def test_a_ticket_of_an_account_deleted_since_opens_nothing(
        self, connections: Connections, tickets: Tickets, stores: Stores
    ) -> None:
        ticket = ticket_of(tickets.issue(BOB, url=URL).url)
        stores.partitions.delete_rows("bob")
        stores.partitions.delete_profile(BOB)
        with pytest.raises(TicketRefused):
            connections.connect("conn-1", ticket)

    def test_an_unusable_connection_id_is_refused(
        self, connections: Connections, tickets: Tickets
    ) -> None:
        ticket = ticket_of(tickets.issue(ALICE, url=URL).url)
        for connection_id in ("", "x" * 129):
            with pytest.raises(TicketRefused):
                connections.connect(connection_id, ticket)


@dataclass
class FakeConnectionsApi:
    """API Gateway's @connections API: what each connection received; 410 for the gone ones."""

    gone: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def post_to_connection(self, *, Data: bytes, ConnectionId: str) -> object:
        if ConnectionId in self.gone:
            raise ClientError({"Error": {"Code": "GoneException"}}, "PostToConnection")
        if ConnectionId in self.failing:
            raise ClientError({"Error": {"Code": "LimitExceededException"}}, "PostToConnection")
        self.received.setdefault(ConnectionId, []).append(json.loads(Data))
        return {}


class TestNotifier:
    @pytest.fixture
    def api(self) -> FakeConnectionsApi:
        return FakeConnectionsApi()

    @pytest.fixture
    def notifier(self, stores: Stores, api: FakeConnectionsApi, clock: FakeClock) -> Notifier:
        once = Idempotency(stores.marks, worker="notify", clock=clock)
        return Notifier(stores.connections, api=api, once=once)

    @pytest.fixture(autouse=True)
    def connected(self, connections: Connections, tickets: Tickets) -> None:
        for owner, connection_id in ((ALICE, "a1"), (ALICE, "a2"), (BOB, "b1")):
            connections.connect(connection_id, ticket_of(tickets.issue(owner, url=URL).url))

    def test_each_connection_of_the_owner_gets_the_event_once(
        self, notifier: Notifier, api: FakeConnectionsApi
    ) -> None:
        item = {"id": "0" * 28, "name": "first"}
        event = envelope("item.created", event_id="e1", data=item)
        notifier.push(event)
        notifier.push(event)  # delivered twice by SQS
        expected = {
            "type": "item.created",
            "version": 1,
            "id": "e1",
            "time": "2026-01-01T00:00:00.000Z",
            "data": item,
        }
        assert api.received == {"a1": [expected], "a2": [expected]}

    def test_another_users_connections_never_receive(
        self, notifier: Notifier, api: FakeConnectionsApi
    ) -> None:
        notifier.push(envelope(event_id="e1", username="bob", account_id=BOB.user_id))
        assert set(api.received) == {"b1"}
        # An event of an earlier holder of the name reaches no one.
        notifier.push(envelope(event_id="e2", username="bob", account_id="f" * 32))
        assert [len(messages) for messages in api.received.values()] == [1]

    def test_a_gone_connection_is_forgotten(
        self, notifier: Notifier, api: FakeConnectionsApi, stores: Stores
    ) -> None:
        api.gone.add("a1")
        notifier.push(envelope(event_id="e1"))
        assert stores.connections.list(ALICE) == ["a2"]
        assert set(api.received) == {"a2"}

    def test_a_failure_is_raised_after_the_others_were_tried_and_the_retry_sends_again(
        self, notifier: Notifier, api: FakeConnectionsApi, stores: Stores
    ) -> None:
        api.failing.add("a1")
        with pytest.raises(ClientError):
            notifier.push(envelope(event_id="e1"))
        assert set(api.received) == {"a2"}
        assert sorted(stores.connections.list(ALICE)) == ["a1", "a2"]
        api.failing.clear()
        notifier.push(envelope(event_id="e1"))
        assert {key: len(value) for key, value in api.received.items()} == {"a1": 1, "a2": 2}

    def test_without_an_endpoint_only_an_account_with_connections_fails(
        self, stores: Stores, clock: FakeClock
    ) -> None:
        once = Idempotency(stores.marks, worker="notify", clock=clock)
        notifier = Notifier(stores.connections, api=None, once=once)
        notifier.push(envelope(event_id="e1", username="carol", account_id="c" * 32))
        with pytest.raises(RuntimeError, match="WEBSOCKET_ENDPOINT"):
            notifier.push(envelope(event_id="e2"))
