"""Upload quotas (files and bytes, race-free), pending uploads past their deadline, the per-user
rate limit on starts, and downloads marked as attachments."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from chalicelib.errors import Conflict
from chalicelib.limits import TooManyAttempts
from chalicelib.stores import Stores
from chalicelib.uploads import (
    PENDING_SECONDS,
    QuotaExceeded,
    UploadLimits,
    UploadNotFound,
    Uploads,
    content_disposition,
)
from tests.conftest import Api, FakeClock, account, owner_of
from tools.localaws import Resources

PASSWORD = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
MiB = 1024 * 1024


@pytest.fixture
def owners(stores: Stores) -> Stores:
    for name in ("alice", "bob"):
        stores.users.add(account(name))
    return stores


def service(
    stores: Stores,
    aws: boto3.Session,
    resources: Resources,
    clock: FakeClock,
    *,
    count: int = 3,
    size: int = 10 * MiB,
    starts: int = 1000,
    repository: Any = None,
) -> Uploads:
    return Uploads(
        repository or stores.uploads,
        aws.client("s3"),
        bucket=resources.uploads_bucket,
        limits=UploadLimits(count=count, bytes=size, starts=starts, window=60),
        counters=stores.limits,
        clock=clock,
    )


def start(uploads: Uploads, owner: str = "alice", size: int = 100) -> Any:
    upload, _ = uploads.start(
        owner_of(owner), filename="cat.png", content_type="image/png", size=size, kind="image"
    )
    return upload


def test_the_quota_counts_files_and_bytes_and_a_deletion_frees_room(
    owners: Stores, aws: boto3.Session, resources: Resources, clock: FakeClock
) -> None:
    uploads = service(owners, aws, resources, clock, count=3, size=10 * MiB)
    first = start(uploads)
    start(uploads, size=9 * MiB)
    with pytest.raises(QuotaExceeded, match="bytes"):
        start(uploads, size=MiB)
    start(uploads, size=MiB - 200)
    with pytest.raises(QuotaExceeded, match="at most 3 files"):
        start(uploads, size=1)
    start(uploads, owner="bob")  # another user's room is their own
    uploads.delete(owner_of("alice"), first.upload_id)
    start(uploads, size=100)


class ReadTogether:
    """The repository, except that every thread's first usage read waits for all the others:
    each start has read the same usage before any of them writes, the worst interleaving."""

    def __init__(self, repository: Any, parties: int) -> None:
        self._repository = repository
        self._barrier = threading.Barrier(parties)
        self._waited: set[int] = set()

    def list(self, owner: str, *, limit: int, cursor: str | None) -> Any:
        page = self._repository.list(owner, limit=limit, cursor=cursor)
        if threading.get_ident() not in self._waited:
            self._waited.add(threading.get_ident())
            self._barrier.wait(timeout=30)
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repository, name)


def test_parallel_starts_take_the_last_slot_once(
    owners: Stores, aws: boto3.Session, resources: Resources, clock: FakeClock
) -> None:
    setup = service(owners, aws, resources, clock, count=3)
    start(setup)
    start(setup)
    racers = 6
    together = ReadTogether(owners.uploads, racers)
    uploads = service(owners, aws, resources, clock, count=3, repository=together)
    outcomes: list[str] = []

    def race() -> None:
        try:
            start(uploads)
            outcomes.append("started")
        except Conflict as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("started") == 1, outcomes
    assert len(owners.uploads.list(owner_of("alice"), limit=10, cursor=None).uploads) == 3
    # Every loser re-read the usage and found it full (none gave up on the race itself).
    assert set(outcomes) == {"started", "QuotaExceeded"}


def test_a_pending_upload_counts_until_its_deadline_and_is_swept_after(
    owners: Stores, aws: boto3.Session, resources: Resources, clock: FakeClock
) -> None:
    uploads = service(owners, aws, resources, clock, count=1)
    stale = start(uploads)
    s3 = aws.client("s3")
    s3.put_object(Bucket=resources.uploads_bucket, Key=stale.key, Body=b"x" * 100)
    with pytest.raises(QuotaExceeded):
        start(uploads)
    clock.advance(seconds=PENDING_SECONDS)
    # Past the deadline its presigned POST is long dead: it no longer counts, nor completes.
    with pytest.raises(UploadNotFound):
        uploads.complete(owner_of("alice"), stale.upload_id)
    fresh = start(uploads)
    clock.advance(hours=2)
    with pytest.raises(QuotaExceeded):
        start(uploads)  # the fresh one counts; the stale one is swept on the way
    assert owners.uploads.get(owner_of("alice"), stale.upload_id) is None
    assert owners.uploads.get(owner_of("alice"), fresh.upload_id) is not None
    listed = s3.list_objects_v2(Bucket=resources.uploads_bucket).get("Contents", [])
    assert stale.key not in {entry["Key"] for entry in listed}


def test_starts_are_rate_limited_per_user(
    owners: Stores, aws: boto3.Session, resources: Resources, clock: FakeClock
) -> None:
    uploads = service(owners, aws, resources, clock, count=100, starts=2)
    start(uploads)
    start(uploads)
    with pytest.raises(TooManyAttempts):
        start(uploads)
    start(uploads, owner="bob")
    clock.advance(seconds=60)
    start(uploads)


def auth(api: Api, username: str) -> dict[str, str]:
    api.signup(username, PASSWORD)
    return {"Authorization": f"Bearer {api.login(username, PASSWORD)}"}


def post_start(api: Api, headers: dict[str, str], **overrides: Any) -> Any:
    body = {"filename": "cat.png", "contentType": "image/png", "size": len(PNG), "kind": "image"}
    return api.post("/uploads", {**body, **overrides}, headers)


def test_over_quota_is_409_and_too_many_starts_429(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOAD_QUOTA_COUNT", "2")
    monkeypatch.setenv("UPLOAD_RATE_LIMIT", "3")
    alice = auth(api, "alice")
    assert post_start(api, alice).status_code == 201
    assert post_start(api, alice).status_code == 201
    full = post_start(api, alice)
    assert full.status_code == 409
    assert full.json_body == {"message": "upload quota reached: at most 2 files"}
    limited = post_start(api, alice)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json_body["retryAfter"] >= 1


def test_a_download_is_an_attachment_with_the_files_name(
    api: Api, aws: boto3.Session, resources: Resources
) -> None:
    alice = auth(api, "alice")
    created = post_start(api, alice, filename="holiday photo.png").json_body
    upload_id, key = created["upload"]["id"], created["post"]["fields"]["key"]
    aws.client("s3").put_object(
        Bucket=resources.uploads_bucket, Key=key, Body=PNG, ContentType="image/png"
    )
    assert api.client.http.post(f"/uploads/{upload_id}/complete", headers=alice).status_code == 200
    url = api.client.http.get(f"/uploads/{upload_id}", headers=alice).json_body["downloadUrl"]
    expected = 'attachment; filename="holiday photo.png"'
    assert parse_qs(urlsplit(url).query)["response-content-disposition"] == [expected]
    # S3 (moto here) answers the signed GET with that header, so a browser saves, never renders.
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == expected
    assert response.content == PNG


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("cat.png", 'attachment; filename="cat.png"'),
        (
            "résumé.pdf",
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        (
            'a"b\\c%d.txt',
            "attachment; filename=\"a_b_c_d.txt\"; filename*=UTF-8''a%22b%5Cc%25d.txt",
        ),
        ("", 'attachment; filename="file"'),
    ],
)
def test_content_disposition_follows_rfc_6266_and_5987(name: str, header: str) -> None:
    assert content_disposition(name) == header
