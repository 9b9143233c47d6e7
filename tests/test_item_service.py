"""The items service over the in-memory twins: ids, versions and the partial update."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.items import InMemoryItemRepository, ItemNotFound, Items, VersionMismatch
from chalicelib.keys import OwnerMissing
from chalicelib.users import InMemoryUserRepository
from tests.conftest import FakeClock, account, owner_of


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.fixture
def items(clock: FakeClock) -> Items:
    users = InMemoryUserRepository()
    users.add(account("alice"))
    return Items(InMemoryItemRepository(users), clock=clock)


def test_create_stamps_id_times_and_the_first_version(items: Items, clock: FakeClock) -> None:
    first = items.create(owner_of("alice"), name="a", data={"x": 1}, status="active")
    clock.advance(milliseconds=1)
    second = items.create(owner_of("alice"), name="b", data={}, status="pending")
    assert first.item_id < second.item_id
    assert first.item_id.startswith(f"{int(clock.now.timestamp() * 1000) - 1:012x}")
    assert (first.version, first.created_at, first.updated_at) == (
        1,
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z",
    )
    assert items.get(owner_of("alice"), first.item_id) == first
    with pytest.raises(OwnerMissing):
        items.create(owner_of("ghost"), name="a", data={}, status="active")


def test_patch_changes_only_the_fields_given(items: Items, clock: FakeClock) -> None:
    item = items.create(owner_of("alice"), name="draft", data={"a": 1}, status="pending")
    clock.advance(seconds=1)
    renamed = items.patch(owner_of("alice"), item.item_id, expected_version=1, name="final")
    assert (renamed.name, renamed.data, renamed.status, renamed.version) == (
        "final",
        {"a": 1},
        "pending",
        2,
    )
    assert renamed.updated_at == "2026-01-01T00:00:01.000Z"
    assert renamed.created_at == item.created_at
    archived = items.patch(owner_of("alice"), item.item_id, expected_version=2, status="archived")
    assert (archived.name, archived.data, archived.status) == ("final", {"a": 1}, "archived")
    emptied = items.patch(owner_of("alice"), item.item_id, expected_version=3, data={})
    assert (emptied.name, emptied.data, emptied.status, emptied.version) == (
        "final",
        {},
        "archived",
        4,
    )
    assert items.get(owner_of("alice"), item.item_id) == emptied


def test_patch_at_a_stale_version_names_the_current_one(items: Items) -> None:
    item = items.create(owner_of("alice"), name="draft", data={}, status="active")
    items.patch(owner_of("alice"), item.item_id, expected_version=1, name="second")
    with pytest.raises(VersionMismatch) as stale:
        items.patch(owner_of("alice"), item.item_id, expected_version=1, name="lost")
    assert stale.value.current == 2
    assert items.get(owner_of("alice"), item.item_id).name == "second"


def test_patch_of_a_missing_or_foreign_item_is_not_found(items: Items) -> None:
    item = items.create(owner_of("alice"), name="draft", data={}, status="active")
    with pytest.raises(ItemNotFound):
        items.patch(owner_of("bob"), item.item_id, expected_version=1, name="mine")
    items.delete(owner_of("alice"), item.item_id, expected_version=1)
    with pytest.raises(ItemNotFound):
        items.patch(owner_of("alice"), item.item_id, expected_version=1, name="back")
    with pytest.raises(ItemNotFound):
        items.get(owner_of("alice"), item.item_id)
