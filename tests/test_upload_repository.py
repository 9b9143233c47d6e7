"""One contract for upload records, run against DynamoDB (moto) and the in-memory twin."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from chalicelib.keys import ConcurrentChange, OwnerMissing
from chalicelib.paging import InvalidCursor, encode_cursor
from chalicelib.stores import Stores
from chalicelib.uploads import Upload, UploadNotFound
from tests.conftest import account, follow, owner_of

NOW = "2026-01-01T00:00:00.000Z"


def upload(owner: str, n: int, **changes: Any) -> Upload:
    upload_id = f"{n:012x}{n:016x}"
    base = Upload(
        owner=owner,
        owner_id=owner_of(owner).user_id,
        upload_id=upload_id,
        kind="image",
        filename=f"photo {n}.png",
        content_type="image/png",
        size=100 + n,
        key=f"uploads/users/{owner}/images/{upload_id}/photo {n}.png",
        status="pending",
        created_at=NOW,
    )
    return replace(base, **changes)


@pytest.fixture
def owners(stores: Stores) -> Stores:
    for name in ("alice", "bob"):
        stores.users.add(account(name))
    return stores


def test_a_record_reads_back_and_becomes_ready(owners: Stores) -> None:
    owners.uploads.add(upload("alice", 1), expires_at=2_000_000_000)
    upload_id = upload("alice", 1).upload_id
    assert owners.uploads.get(owner_of("alice"), upload_id) == upload("alice", 1)
    assert owners.uploads.get(owner_of("bob"), upload_id) is None
    owners.uploads.mark_ready(owner_of("alice"), upload_id)
    assert owners.uploads.get(owner_of("alice"), upload_id) == upload("alice", 1, status="ready")


def test_a_record_needs_its_owner(stores: Stores) -> None:
    with pytest.raises(OwnerMissing):
        stores.uploads.add(upload("ghost", 1), expires_at=2_000_000_000)
    assert stores.uploads.get(owner_of("ghost"), upload("ghost", 1).upload_id) is None


def test_a_deleted_record_is_not_made_ready_again(owners: Stores) -> None:
    owners.uploads.add(upload("alice", 1), expires_at=2_000_000_000)
    upload_id = upload("alice", 1).upload_id
    owners.uploads.delete(owner_of("alice"), upload_id)
    assert owners.uploads.get(owner_of("alice"), upload_id) is None
    with pytest.raises(UploadNotFound):
        owners.uploads.mark_ready(owner_of("alice"), upload_id)
    assert owners.uploads.get(owner_of("alice"), upload_id) is None
    with pytest.raises(UploadNotFound):
        owners.uploads.mark_ready(owner_of("bob"), upload_id)


def test_listing_is_newest_first_in_pages_without_gaps(owners: Stores) -> None:
    for n in range(1, 6):
        owners.uploads.add(upload("alice", n), expires_at=2_000_000_000)
    owners.uploads.add(upload("bob", 9), expires_at=2_000_000_000)
    listed = follow(
        lambda cursor: owners.uploads.list(owner_of("alice"), limit=2, cursor=cursor),
        lambda page: page.cursor,
    )
    seen = [[found.upload_id for found in page.uploads] for page in listed]
    ids = [upload("alice", n).upload_id for n in range(5, 0, -1)]
    assert seen == [ids[:2], ids[2:4], ids[4:]]
    last = owners.uploads.list(owner_of("alice"), limit=5, cursor=None)
    assert (len(last.uploads), last.cursor) == (5, None)


def test_a_cursor_names_only_a_row_of_the_caller(owners: Stores) -> None:
    for n in range(1, 3):
        owners.uploads.add(upload("alice", n), expires_at=2_000_000_000)
    cursor = owners.uploads.list(owner_of("alice"), limit=1, cursor=None).cursor
    assert cursor is not None
    assert owners.uploads.list(owner_of("bob"), limit=5, cursor=cursor).uploads == []
    with pytest.raises(InvalidCursor):
        owners.uploads.list(
            owner_of("alice"), limit=1, cursor=encode_cursor({"sk": "ITEM#" + "0" * 28})
        )


def test_a_counted_add_bumps_the_starts_once_and_a_stale_count_loses(owners: Stores) -> None:
    uploads = owners.uploads
    assert uploads.starts("alice") == 0
    uploads.add_counted(upload("alice", 1), expires_at=2_000_000_000, starts=0)
    assert uploads.starts("alice") == 1
    # A parallel start read the same count: its record is not written.
    with pytest.raises(ConcurrentChange):
        uploads.add_counted(upload("alice", 2), expires_at=2_000_000_000, starts=0)
    assert uploads.get(owner_of("alice"), upload("alice", 2).upload_id) is None
    uploads.add_counted(upload("alice", 2), expires_at=2_000_000_000, starts=1)
    assert (uploads.starts("alice"), uploads.starts("bob")) == (2, 0)
    with pytest.raises(OwnerMissing):
        uploads.add_counted(upload("ghost", 1), expires_at=2_000_000_000, starts=0)
    listed = uploads.list(owner_of("alice"), limit=10, cursor=None).uploads
    assert [found.upload_id for found in listed] == [upload("alice", n).upload_id for n in (2, 1)]


def test_expired_lists_pending_uploads_past_their_deadline_earliest_first(owners: Stores) -> None:
    uploads = owners.uploads
    deadlines = {("alice", 1): 3000, ("bob", 2): 1000, ("alice", 3): 2000, ("alice", 4): 9000}
    for (owner, n), deadline in deadlines.items():
        uploads.add(upload(owner, n), expires_at=deadline)
    uploads.add(upload("alice", 5), expires_at=500)
    uploads.mark_ready(owner_of("alice"), upload("alice", 5).upload_id)
    uploads.add(upload("bob", 6), expires_at=500)
    uploads.delete(owner_of("bob"), upload("bob", 6).upload_id)
    pages = follow(
        lambda cursor: uploads.expired(3000, limit=2, cursor=cursor), lambda page: page.cursor
    )
    seen = [(found.owner, found.upload_id) for page in pages for found in page.uploads]
    assert seen == [
        (owner, upload(owner, n).upload_id) for owner, n in (("bob", 2), ("alice", 3), ("alice", 1))
    ]
    assert uploads.expired(999, limit=10, cursor=None).uploads == []
    with pytest.raises(InvalidCursor):
        uploads.expired(3000, limit=1, cursor=encode_cursor({"sk": "UPLOAD#" + "0" * 28}))
