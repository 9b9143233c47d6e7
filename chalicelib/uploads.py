"""Uploads straight from the browser to S3 through presigned POSTs, recorded under the owner.

Objects: ``uploads/users/{username}/images|documents/{id}/{safe filename}`` (``objectkeys.py``).
Records, under the owner's partition (``keys.py``): ``pending`` until the object is checked, then
``ready``. A start is within the owner's quota (``UploadQuota``), checked race-free: it is
conditional on the owner's start counter (``USER#{owner}`` / ``UPLOADS``) not having moved since
the usage was read, and bumps it in the same transaction as the record.
``DynamoDBUploadRepository`` stores the records; ``InMemoryUploadRepository`` is its
twin with the same contract (``tests/test_upload_repository.py``). S3 is this module's
``Uploads`` service's own business.

A pending upload has a deadline (``PENDING_SECONDS`` after its start): past it, it no longer
counts, cannot complete, and is swept (its object, then its record) ``SWEEP_AFTER_SECONDS``
later, by the owner's next start on the way and by the hourly sweep (``jobs.UploadSweep``).
Pending records carry no TTL: DynamoDB's TTL deletes a row at any time after it expires, and a
record deleted before the sweep saw it would leave its object in S3 for good, so the sweep is
their one remover. It finds them through a sparse index entry (``gsi1``, ``keys.PENDING_UPLOAD``
/ deadline) that only pending records have; ``mark_ready`` removes it with the status change.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.errors import Conflict, Invalid, NotFound
from chalicelib.identity import Owner
from chalicelib.items import new_item_id
from chalicelib.keys import (
    PENDING_UPLOAD,
    UPLOAD,
    UPLOAD_SK,
    USER_PK,
    ConcurrentChange,
    OwnerMissing,
    error_code,
    is_condition_failure,
    put_owned,
    under_user,
    upload_key,
    user_pk,
    username_of,
)
from chalicelib.limits import UserRateLimiter
from chalicelib.objectkeys import upload_prefix
from chalicelib.paging import collect, decode_cursor, encode_cursor
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client

    from chalicelib.limits import LimitRepository
    from chalicelib.settings import Settings
    from chalicelib.users import UserRepository

UploadKind = Literal["image", "document"]
UploadStatus = Literal["pending", "ready"]
MAX_FILENAME = 100
PENDING_SECONDS = 86400  # a pending upload's deadline: a day after its start
# The owner's start counter, next to the records (to move into keys.py with its row).
UPLOAD_STARTS = "UPLOADS"
# A start re-reads the usage and retries this often when parallel starts keep winning.
START_ATTEMPTS = 5
# An expired pending upload is swept (object, then record) only this long after its deadline,
# far past any request that checked the deadline just before it passed.
SWEEP_AFTER_SECONDS = 3600
PENDING_INDEX = INDEXES[0]
# What a sweep's cursor may name: a row of the index of pending uploads.
_DEADLINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_SWEEP_CURSOR = {"pk": USER_PK, "sk": UPLOAD_SK, "deadline": _DEADLINE}


@dataclass(frozen=True)
class Kind:
    folder: str
    max_bytes: int
    content_types: frozenset[str]


# What may be uploaded; the request model's schema states the same rules (payloads.py).
KINDS: dict[UploadKind, Kind] = {
    "image": Kind(
        "images",
        10 * 1024 * 1024,
        frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"}),
    ),
    "document": Kind(
        "documents",
        25 * 1024 * 1024,
        frozenset(
            {
                "application/pdf",
                "text/plain",
                "text/csv",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            }
        ),
    ),
}


class UploadRejected(Invalid):
    """The declared upload breaks the rules for its kind."""

    shows_detail = True


class UploadNotFound(NotFound):
    """No upload with this id belongs to the caller."""

    message = "Upload not found"


class UploadIncomplete(Conflict):
    """The object is missing or differs from what was declared."""

    shows_detail = True


class QuotaExceeded(Conflict):
    """The upload would take the owner past their quota of files or bytes."""

    shows_detail = True


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    """Per user: what their uploads may hold (ready ones, and pending ones before their
    deadline), and how many they may start in a fixed window."""

    count: int
    bytes: int
    starts: int
    window: int

    @classmethod
    def of(cls, settings: Settings) -> UploadLimits:
        return cls(
            count=settings.upload_quota_count,
            bytes=settings.upload_quota_bytes,
            starts=settings.upload_rate_limit,
            window=settings.upload_rate_window_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class Upload:
    owner: str
    owner_id: str
    upload_id: str
    kind: str
    filename: str
    content_type: str
    size: int
    key: str
    status: str
    created_at: str


@dataclass(frozen=True)
class UploadPage:
    uploads: list[Upload]
    cursor: str | None


def safe_filename(name: str) -> str:
    """A name that is only ever a name: no directories, no dot-dot, no control characters."""
    name = unicodedata.normalize("NFKC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", name).strip(" .")
    name = re.sub(r"\.{2,}", ".", name)
    if len(name) > MAX_FILENAME:
        _, dot, extension = name.rpartition(".")
        keep = extension[:10] if dot and len(extension) <= 10 else ""
        name = name[: MAX_FILENAME - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return name or "file"


class UploadRepository(Protocol):
    def add(self, upload: Upload, *, expires_at: int) -> None:
        """Record a pending upload while its owner exists (``OwnerMissing``, or
        ``ConcurrentChange`` if the write lost a race); its deadline is ``expires_at`` (epoch
        seconds), after which ``expired`` lists it until it is made ready or deleted."""

    def get(self, owner: Owner, upload_id: str) -> Upload | None:
        """The owner's upload (not one left under the name by an earlier account)."""

    def mark_ready(self, owner: Owner, upload_id: str) -> None:
        """Keep the record for good (``expired`` no longer lists it); ``UploadNotFound`` if it
        was deleted meanwhile."""

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> UploadPage:
        """Newest first; the cursor names only a row of that owner."""

    def delete(self, owner: Owner, upload_id: str) -> None: ...

    def starts(self, owner: str) -> int:
        """How many uploads the owner has started (0: none yet)."""

    def add_counted(self, upload: Upload, *, expires_at: int, starts: int) -> None:
        """``add``, only while the owner's ``starts`` is still the given count, which it bumps
        in the same write (``ConcurrentChange`` if another start got there first)."""

    def expired(self, at: int, *, limit: int, cursor: str | None) -> UploadPage:
        """Every owner's pending uploads whose deadline is ``at`` or earlier, earliest first, a
        page at a time (the cursor resumes after the page's last one)."""


class DynamoDBUploadRepository:
    def __init__(self, table: Table) -> None:
        self._table = table

    def add(self, upload: Upload, *, expires_at: int) -> None:
        row = _pending_row(upload, expires_at)
        put_owned(self._table, row, owner=Owner(upload.owner, upload.owner_id))

    def get(self, owner: Owner, upload_id: str) -> Upload | None:
        row = self._table.get_item(
            Key=upload_key(owner.username, upload_id), ConsistentRead=True
        ).get("Item")
        return None if row is None or row.get("userId") != owner.user_id else _upload(row)

    def mark_ready(self, owner: Owner, upload_id: str) -> None:
        try:
            self._table.update_item(
                Key=upload_key(owner.username, upload_id),
                # Out of the sweep's index; rows of earlier versions also had a TTL.
                UpdateExpression="SET #status = :ready REMOVE #ttl, #ipk, #isk",
                ConditionExpression="userId = :owner",
                ExpressionAttributeNames={
                    "#status": "status",
                    "#ttl": TTL_ATTRIBUTE,
                    "#ipk": PENDING_INDEX.partition_key,
                    "#isk": PENDING_INDEX.sort_key,
                },
                ExpressionAttributeValues={":ready": "ready", ":owner": owner.user_id},
            )
        except ClientError as exc:
            if is_condition_failure(exc):
                raise UploadNotFound(upload_id) from exc
            raise

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> UploadPage:
        pk = user_pk(owner.username)
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(pk) & Key(SORT_KEY).begins_with(UPLOAD),
            "FilterExpression": Attr("userId").eq(owner.user_id),
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if cursor is not None:
            after = decode_cursor(cursor, {"sk": UPLOAD_SK})["sk"]
            query["ExclusiveStartKey"] = {PARTITION_KEY: pk, SORT_KEY: after}
        rows, _ = collect(self._table, query, limit=limit, filtered=True)
        uploads = [_upload(row) for row in rows[:limit]]
        more = len(rows) > limit
        last = UPLOAD + uploads[-1].upload_id if uploads else ""
        return UploadPage(uploads, encode_cursor({"sk": last}) if more else None)

    def delete(self, owner: Owner, upload_id: str) -> None:
        try:
            self._table.delete_item(
                Key=upload_key(owner.username, upload_id),
                ConditionExpression="userId = :owner",
                ExpressionAttributeValues={":owner": owner.user_id},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise

    def starts(self, owner: str) -> int:
        row = self._table.get_item(Key=under_user(owner, UPLOAD_STARTS), ConsistentRead=True).get(
            "Item"
        )
        return 0 if row is None else int(str(row["starts"]))

    def add_counted(self, upload: Upload, *, expires_at: int, starts: int) -> None:
        row = _pending_row(upload, expires_at)
        counted: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": under_user(upload.owner, UPLOAD_STARTS),
            "UpdateExpression": "SET starts = :next",
            "ConditionExpression": "attribute_not_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
            "ExpressionAttributeValues": {":next": starts + 1},
        }
        if starts:
            # Another start since ours read the count: its record may be the one over quota.
            counted["ConditionExpression"] = "starts = :seen"
            counted["ExpressionAttributeValues"][":seen"] = starts
            del counted["ExpressionAttributeNames"]
        owner = Owner(upload.owner, upload.owner_id)
        put_owned(self._table, row, owner=owner, also=[{"Update": counted}])

    def expired(self, at: int, *, limit: int, cursor: str | None) -> UploadPage:
        index = PENDING_INDEX
        query: dict[str, Any] = {
            "IndexName": index.name,
            "KeyConditionExpression": Key(index.partition_key).eq(PENDING_UPLOAD)
            & Key(index.sort_key).lte(_deadline(at)),
            "Limit": limit,
        }
        if cursor is not None:
            position = decode_cursor(cursor, _SWEEP_CURSOR)
            query["ExclusiveStartKey"] = {
                PARTITION_KEY: position["pk"],
                SORT_KEY: position["sk"],
                index.partition_key: PENDING_UPLOAD,
                index.sort_key: position["deadline"],
            }
        page = self._table.query(**query)
        uploads = [_upload(row) for row in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        if last is None:
            return UploadPage(uploads, None)
        position = {
            "pk": str(last[PARTITION_KEY]),
            "sk": str(last[SORT_KEY]),
            "deadline": str(last[index.sort_key]),
        }
        return UploadPage(uploads, encode_cursor(position))


class InMemoryUploadRepository:
    """The DynamoDB repository's twin; owners are checked in the user repository it is given."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users
        self._uploads: dict[tuple[str, str], Upload] = {}
        self._deadlines: dict[tuple[str, str], str] = {}
        self._starts: dict[str, int] = {}
        self._lock = threading.RLock()

    def add(self, upload: Upload, *, expires_at: int) -> None:
        with self._lock:
            profile = self._users.get(upload.owner)
            if profile is None or profile.user_id != upload.owner_id:
                raise OwnerMissing(upload.owner)
            if (upload.owner, upload.upload_id) in self._uploads:
                raise ConcurrentChange(upload.owner)
            self._uploads[(upload.owner, upload.upload_id)] = upload
            self._deadlines[(upload.owner, upload.upload_id)] = _deadline(expires_at)

    def get(self, owner: Owner, upload_id: str) -> Upload | None:
        with self._lock:
            upload = self._uploads.get((owner.username, upload_id))
        return upload if upload is not None and upload.owner_id == owner.user_id else None

    def mark_ready(self, owner: Owner, upload_id: str) -> None:
        with self._lock:
            upload = self.get(owner, upload_id)
            if upload is None:
                raise UploadNotFound(upload_id)
            self._uploads[(owner.username, upload_id)] = replace(upload, status="ready")
            self._deadlines.pop((owner.username, upload_id), None)

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> UploadPage:
        after = None if cursor is None else decode_cursor(cursor, {"sk": UPLOAD_SK})["sk"]
        with self._lock:
            uploads = sorted(
                (upload for upload in self._uploads.values() if upload.owner_id == owner.user_id),
                key=lambda upload: upload.upload_id,
                reverse=True,
            )
        uploads = [u for u in uploads if after is None or UPLOAD + u.upload_id < after]
        if len(uploads) > limit:
            last = UPLOAD + uploads[limit - 1].upload_id
            return UploadPage(uploads[:limit], encode_cursor({"sk": last}))
        return UploadPage(uploads, None)

    def delete(self, owner: Owner, upload_id: str) -> None:
        with self._lock:
            if self.get(owner, upload_id) is not None:
                del self._uploads[(owner.username, upload_id)]
                self._deadlines.pop((owner.username, upload_id), None)

    def starts(self, owner: str) -> int:
        with self._lock:
            return self._starts.get(owner, 0)

    def add_counted(self, upload: Upload, *, expires_at: int, starts: int) -> None:
        with self._lock:
            profile = self._users.get(upload.owner)
            if profile is None or profile.user_id != upload.owner_id:
                raise OwnerMissing(upload.owner)
            if self._starts.get(upload.owner, 0) != starts:
                raise ConcurrentChange(upload.owner)
            self.add(upload, expires_at=expires_at)
            self._starts[upload.owner] = starts + 1

    def expired(self, at: int, *, limit: int, cursor: str | None) -> UploadPage:
        after = None
        if cursor is not None:
            position = decode_cursor(cursor, _SWEEP_CURSOR)
            after = (position["deadline"], position["pk"], position["sk"])
        with self._lock:
            due = sorted(
                (deadline, user_pk(owner), UPLOAD + upload_id)
                for (owner, upload_id), deadline in self._deadlines.items()
                if deadline <= _deadline(at)
            )
            due = [entry for entry in due if after is None or entry > after]
            uploads = [
                self._uploads[(username_of(pk), sk.removeprefix(UPLOAD))]
                for _, pk, sk in due[:limit]
            ]
        if len(due) <= limit:
            return UploadPage(uploads, None)
        deadline, pk, sk = due[limit - 1]
        return UploadPage(uploads, encode_cursor({"pk": pk, "sk": sk, "deadline": deadline}))

    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget the user's upload records and start counter (only the records stamped
        ``stamped``, if given: the counter is unstamped); how many rows went."""
        with self._lock:
            keys = [
                key
                for key, upload in self._uploads.items()
                if key[0] == username and stamped in (None, upload.owner_id)
            ]
            for key in keys:
                del self._uploads[key]
                self._deadlines.pop(key, None)
            counter = None if stamped is not None else self._starts.pop(username, None)
            return len(keys) + (counter is not None)


class Uploads:
    def __init__(
        self,
        repository: UploadRepository,
        s3: S3Client,
        *,
        bucket: str,
        limits: UploadLimits,
        counters: LimitRepository,
        clock: Clock = utc_now,
        post_seconds: int = 900,
        get_seconds: int = 300,
    ) -> None:
        self._repository = repository
        self._s3 = s3
        self._bucket = bucket
        self._quota = limits
        self._starts = UserRateLimiter(
            counters, action="upload", limit=limits.starts, window=limits.window, clock=clock
        )
        self._clock = clock
        self._post_seconds = post_seconds
        self._get_seconds = get_seconds

    def start(
        self, owner: Owner, *, filename: str, content_type: str, size: int, kind: UploadKind
    ) -> tuple[Upload, dict[str, Any]]:
        """Record a pending upload and presign the POST that may create exactly its object."""
        rules = KINDS[kind]
        if content_type not in rules.content_types:
            allowed = ", ".join(sorted(rules.content_types))
            raise UploadRejected(f"a {kind} must be one of: {allowed}")
        if not 1 <= size <= rules.max_bytes:
            raise UploadRejected(f"a {kind} must be between 1 byte and {rules.max_bytes} bytes")
        self._starts.hit(owner.username)
        now = self._clock()
        upload_id = new_item_id(int(now.timestamp() * 1000))
        name = safe_filename(filename)
        key = f"{upload_prefix(owner.username)}{rules.folder}/{upload_id}/{name}"
        upload = Upload(
            owner=owner.username,
            owner_id=owner.user_id,
            upload_id=upload_id,
            kind=kind,
            filename=name,
            content_type=content_type,
            size=size,
            key=key,
            status="pending",
            created_at=iso(now),
        )
        # As for items: no record, and so no presigned POST, for an account being deleted.
        self._add_within_quota(upload, expires_at=int(now.timestamp()) + PENDING_SECONDS)
        # The policy pins the key and the type and bounds the size: S3 refuses anything else.
        post = self._s3.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[
                {"Content-Type": content_type},
                ["content-length-range", size, size],
            ],
            ExpiresIn=self._post_seconds,
        )
        return upload, dict(post)

    def _add_within_quota(self, upload: Upload, *, expires_at: int) -> None:
        owner = Owner(upload.owner, upload.owner_id)
        for attempt in range(START_ATTEMPTS):
            starts = self._repository.starts(upload.owner)
            # Read after the counter: a start that lands in between moves it, failing ours.
            count, used = self._usage(owner)
            if count + 1 > self._quota.count:
                raise QuotaExceeded(f"upload quota reached: at most {self._quota.count} files")
            if used + upload.size > self._quota.bytes:
                raise QuotaExceeded(
                    f"upload quota reached: {used} of {self._quota.bytes} bytes in use, "
                    f"this file needs {upload.size}"
                )
            try:
                self._repository.add_counted(upload, expires_at=expires_at, starts=starts)
            except ConcurrentChange:
                if attempt == START_ATTEMPTS - 1:
                    raise
            else:
                return

    def _usage(self, owner: Owner) -> tuple[int, int]:
        """Files and bytes held: ready uploads and pending ones before their deadline (a
        presigned POST may still fill them). Pending ones long past it are swept on the way."""
        now = self._clock()
        count = used = 0
        cursor: str | None = None
        while True:
            page = self._repository.list(owner, limit=100, cursor=cursor)
            for upload in page.uploads:
                if upload.status == "ready" or not _expired(upload, now):
                    count, used = count + 1, used + upload.size
                elif sweepable(upload, now):
                    # Its object, if one was posted, would otherwise wait for the hourly sweep.
                    self._s3.delete_object(Bucket=self._bucket, Key=upload.key)
                    self._repository.delete(owner, upload.upload_id)
            cursor = page.cursor
            if cursor is None:
                return count, used

    def complete(self, owner: Owner, upload_id: str) -> Upload:
        upload = self.get(owner, upload_id)
        if upload.status == "pending" and _expired(upload, self._clock()):
            # Past its deadline it no longer counts against the quota, so it may not come back.
            raise UploadNotFound(upload_id)
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=upload.key)
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                raise UploadIncomplete("the file has not been uploaded yet") from exc
            raise
        if head["ContentLength"] != upload.size or head.get("ContentType") != upload.content_type:
            # Nothing is kept that does not match its record; the client may upload again.
            self._s3.delete_object(Bucket=self._bucket, Key=upload.key)
            raise UploadIncomplete("the uploaded file differs from what was declared")
        if upload.status == "ready":
            return upload
        self._repository.mark_ready(owner, upload_id)
        return replace(upload, status="ready")

    def get(self, owner: Owner, upload_id: str) -> Upload:
        upload = self._repository.get(owner, upload_id)
        if upload is None:
            raise UploadNotFound(upload_id)
        return upload

    def download_url(self, upload: Upload) -> str:
        """A short-lived GET whose answer S3 marks as a download, never a page to render."""
        return self._s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": upload.key,
                "ResponseContentDisposition": content_disposition(upload.filename),
            },
            ExpiresIn=self._get_seconds,
        )

    def list(self, owner: Owner, *, limit: int, cursor: str | None) -> UploadPage:
        return self._repository.list(owner, limit=limit, cursor=cursor)

    def delete(self, owner: Owner, upload_id: str) -> None:
        upload = self.get(owner, upload_id)
        self._s3.delete_object(Bucket=self._bucket, Key=upload.key)
        self._repository.delete(owner, upload_id)


def content_disposition(filename: str) -> str:
    """``attachment`` with the name (RFC 6266): a plain ASCII fallback, and the exact name
    percent-encoded as UTF-8 (RFC 5987) when it holds anything else."""
    filename = filename or "file"
    fallback = re.sub(r'[^\x20-\x7e]|["\\%]', "_", filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def sweepable(upload: Upload, at: datetime) -> bool:
    """Whether a pending upload is far enough past its deadline, at ``at``, to be swept: no
    request that checked the deadline just before it passed can still be using it."""
    return upload.status == "pending" and _expired(
        upload, at - timedelta(seconds=SWEEP_AFTER_SECONDS)
    )


def _deadline(epoch_seconds: int) -> str:
    """The index's sort key for a deadline: ISO-8601 UTC, which sorts as time does."""
    return iso(datetime.fromtimestamp(epoch_seconds, UTC))


def _pending_row(upload: Upload, expires_at: int) -> dict[str, Any]:
    return {
        **upload_key(upload.owner, upload.upload_id),
        **_record(upload),
        PENDING_INDEX.partition_key: PENDING_UPLOAD,
        PENDING_INDEX.sort_key: _deadline(expires_at),
    }


def _expired(upload: Upload, at: datetime) -> bool:
    """Whether a pending upload's deadline has passed by ``at``."""
    started = datetime.fromisoformat(upload.created_at.replace("Z", "+00:00"))
    return started + timedelta(seconds=PENDING_SECONDS) <= at


def _record(upload: Upload) -> dict[str, Any]:
    return {
        "owner": upload.owner,
        "userId": upload.owner_id,
        "uploadId": upload.upload_id,
        "kind": upload.kind,
        "filename": upload.filename,
        "contentType": upload.content_type,
        "size": upload.size,
        "objectKey": upload.key,
        "status": upload.status,
        "createdAt": upload.created_at,
    }


def _upload(row: dict[str, Any]) -> Upload:
    return Upload(
        owner=str(row["owner"]),
        owner_id=str(row.get("userId", "")),
        upload_id=str(row["uploadId"]),
        kind=str(row["kind"]),
        filename=str(row["filename"]),
        content_type=str(row["contentType"]),
        size=int(str(row["size"])),
        key=str(row["objectKey"]),
        status=str(row["status"]),
        created_at=str(row["createdAt"]),
    )


# The row parser, for the table's stream (chalicelib/changes.py).
upload_from_row = _upload
