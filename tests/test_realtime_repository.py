"""One contract for the WebSocket tickets and connections, run against DynamoDB (moto) and the
in-memory twins; then the rows as stored."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.identity import Owner
from chalicelib.keys import OwnerMissing
from chalicelib.realtime import Connection, Ticket
from chalicelib.stores import Stores
from tests.conftest import account, owner_of

ALICE = owner_of("alice")
BOB = owner_of("bob")


def connection(owner: Owner, connection_id: str, expires_at: int = 2_000) -> Connection:
    return Connection(
        owner, connection_id, connected_at="2026-01-01T00:00:00.000Z", expires_at=expires_at
    )


class TestTickets:
    def test_a_ticket_is_used_once(self, stores: Stores) -> None:
        stores.tickets.put(Ticket(ALICE, "d" * 64, expires_at=1_030))
        assert stores.tickets.consume("alice", "d" * 64, now=1_000) == ALICE
        assert stores.tickets.consume("alice", "d" * 64, now=1_000) is None

    def test_an_expired_ticket_or_one_under_another_name_is_refused(self, stores: Stores) -> None:
        stores.tickets.put(Ticket(ALICE, "d" * 64, expires_at=1_030))
        assert stores.tickets.consume("bob", "d" * 64, now=1_000) is None
        assert stores.tickets.consume("alice", "e" * 64, now=1_000) is None
        assert stores.tickets.consume("alice", "d" * 64, now=1_030) is None


class TestConnections:
    @pytest.fixture(autouse=True)
    def accounts(self, stores: Stores) -> None:
        stores.users.add(account("alice"))
        stores.users.add(account("bob"))

    def test_connections_are_listed_for_their_account_only(self, stores: Stores) -> None:
        stores.connections.add(connection(ALICE, "conn-a1"))
        stores.connections.add(connection(ALICE, "conn-a2"))
        stores.connections.add(connection(BOB, "conn-b1"))
        assert sorted(stores.connections.list(ALICE)) == ["conn-a1", "conn-a2"]
        assert stores.connections.list(BOB) == ["conn-b1"]
        # The same name held by another account (deleted and registered again) sees nothing.
        assert stores.connections.list(Owner("alice", "f" * 32)) == []

    def test_a_disconnect_removes_the_connection_and_names_its_owner(self, stores: Stores) -> None:
        stores.connections.add(connection(ALICE, "conn-a1"))
        assert stores.connections.remove("conn-a1") == ALICE
        assert stores.connections.list(ALICE) == []
        assert stores.connections.remove("conn-a1") is None

    def test_a_gone_connection_is_dropped(self, stores: Stores) -> None:
        stores.connections.add(connection(ALICE, "conn-a1"))
        stores.connections.add(connection(ALICE, "conn-a2"))
        stores.connections.drop(ALICE, "conn-a1")
        assert stores.connections.list(ALICE) == ["conn-a2"]
        assert stores.connections.remove("conn-a1") is None

    def test_a_purged_account_keeps_no_connection_and_its_disconnect_still_works(
        self, stores: Stores
    ) -> None:
        stores.connections.add(connection(ALICE, "conn-a1"))
        stores.partitions.delete_rows("alice")
        stores.partitions.delete_profile(ALICE)
        assert stores.connections.list(ALICE) == []
        # The row by id waits for its TTL, or for the disconnect, which removes it.
        assert stores.connections.remove("conn-a1") == ALICE
        assert stores.connections.remove("conn-a1") is None

    def test_no_connection_is_stored_for_an_account_that_is_gone(self, stores: Stores) -> None:
        with pytest.raises(OwnerMissing):
            stores.connections.add(connection(Owner("carol", "c" * 32), "conn-c1"))
        with pytest.raises(OwnerMissing):
            stores.connections.add(connection(Owner("alice", "f" * 32), "conn-x"))
        assert stores.connections.remove("conn-c1") is None


def test_the_stored_rows(table: Any) -> None:
    stores = Stores.dynamodb(table)
    stores.users.add(account("alice"))
    stores.tickets.put(Ticket(ALICE, "d" * 64, expires_at=1_030))
    stores.connections.add(connection(ALICE, "conn-a1", expires_at=11_800))
    rows = {
        (row["pk"], row["sk"]): row
        for row in table.scan()["Items"]
        if row["sk"] not in {"PROFILE", "NAME"}
    }
    assert rows == {
        ("USER#alice", "WSTICKET#" + "d" * 64): {
            "pk": "USER#alice",
            "sk": "WSTICKET#" + "d" * 64,
            "userId": ALICE.user_id,
            "expiresAt": 1_030,
        },
        ("USER#alice", "CONN#conn-a1"): {
            "pk": "USER#alice",
            "sk": "CONN#conn-a1",
            "userId": ALICE.user_id,
            "connectionId": "conn-a1",
            "connectedAt": "2026-01-01T00:00:00.000Z",
            "expiresAt": 11_800,
        },
        ("CONN#conn-a1", "CONN"): {
            "pk": "CONN#conn-a1",
            "sk": "CONN",
            "username": "alice",
            "userId": ALICE.user_id,
            "expiresAt": 11_800,
        },
    }
