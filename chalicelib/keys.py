"""The table's key layout, in one place: every key builder, the shapes cursors may carry, the
``ClientError`` code helper and the write that is conditional on its owner still existing.

Access patterns (every entity lives under its owner's partition or in the sparse index):

| entity          | pk               | sk                       | gsi1pk / gsi1sk           |
|-----------------|------------------|--------------------------|---------------------------|
| user profile    | USER#{username}  | PROFILE                  | -                         |
| name claim      | NAME#{casefold}  | NAME                     | -                         |
| email claim     | EMAIL#{lower}    | EMAIL                    | -                         |
| one-time link   | USER#{username}  | LINK#{purpose}           | -                         |
| session         | USER#{username}  | SESSION#{id}             | -                         |
| refresh token   | USER#{username}  | REFRESH#{sha256}         | -                         |
| security event  | USER#{username}  | EVENT#{iso time}#{rand}  | -                         |
| item            | USER#{username}  | ITEM#{id}                | ITEMSTATUS#{status}#{n} / {id} |
| upload          | USER#{username}  | UPLOAD#{id}              | PENDINGUPLOAD / {deadline}|
| TOTP factor     | USER#{username}  | MFA#TOTP                 | -                         |
| recovery codes  | USER#{username}  | MFA#RECOVERY             | -                         |
| login challenge | USER#{username}  | MFA#CHALLENGE#{sha256}   | -                         |
| per-IP counter  | RATE#{address}   | WINDOW#{start}           | -                         |
| login attempts  | LOGIN#{casefold} | FAIL#{address}           | -                         |
| ws ticket       | USER#{username}  | WSTICKET#{sha256}        | -                         |
| ws connection   | USER#{username}  | CONN#{connectionId}      | -                         |
| its owner       | CONN#{connId}    | CONN                     | -                         |
| worker's mark   | DONE#{wkr}#{id}  | DONE                     | -                         |

An item's index entry is in one of ``STATUS_INDEX_SHARDS`` partitions of its status, ``n`` derived
from the item's id (``status_shard``), so no one index partition takes every write of a status
(DynamoDB's 1,000 WCU per partition); the admin listing merges the shards (``items.py``). Rows
written before sharding carry ``ITEMSTATUS#{status}`` alone: the listing reads that key as one
more shard, and ``tools/reindex.py`` moves them (docs/SCALING.md).

Only pending uploads are in the index (``mark_ready`` removes the entry), keyed by their
deadline (ISO-8601 UTC), so the sweep reads the expired ones oldest first without a scan.

Every row an account owns carries its immutable ``userId`` and is written only while the profile
holds that id and is not marked deleted (``put_owned``, ``PROFILE_HOLDS``); reads ignore rows of
another id. A name is unique regardless of case
through its claim row, written with the profile in one transaction (``identity.py``).

Tickets, connections (``realtime.py``) and the workers' marks (``workers.py``, one per worker and
event, ``DONE#{worker}#{eventId}``) are plumbing, not domain resources: they expire by TTL and
the table's stream turns them into no event.

A user's own data is one partition (one query lists it, one purge deletes it). Only rows that
need a cross-user query set ``gsi1pk`` / ``gsi1sk``, which keeps the index sparse. The layout is
the original system's for profiles and must stay byte-for-byte stable: rows written by earlier
versions are read as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from botocore.exceptions import ClientError

from chalicelib.errors import Conflict, Unauthenticated
from chalicelib.identity import Owner, name_key
from chalicelib.paging import KEY_TEXT
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

Key = dict[str, str]

USER = "USER#"
PROFILE = "PROFILE"
SESSION = "SESSION#"
REFRESH = "REFRESH#"
LOGIN = "LOGIN#"
LOGIN_FAILURE = "FAIL#"
EVENT = "EVENT#"
ITEM = "ITEM#"
ITEM_STATUS = "ITEMSTATUS#"
UPLOAD = "UPLOAD#"
# The index partition of pending uploads, by deadline: what the hourly sweep reads (jobs.py).
PENDING_UPLOAD = "PENDINGUPLOAD"
RATE = "RATE#"
NAME = "NAME#"
EMAIL = "EMAIL#"
LINK = "LINK#"
WINDOW = "WINDOW#"
MFA_TOTP = "MFA#TOTP"
MFA_RECOVERY = "MFA#RECOVERY"
MFA_CHALLENGE = "MFA#CHALLENGE#"
WS_TICKET = "WSTICKET#"
CONNECTION = "CONN#"
DONE = "DONE#"

STATUS_INDEX = INDEXES[0]

# What a cursor may name, checked before it becomes an ExclusiveStartKey.
ITEM_ID = re.compile("[0-9a-f]{28}")
ITEM_SK = re.compile(f"{ITEM}[0-9a-f]{{28}}")
UPLOAD_SK = re.compile(f"{UPLOAD}[0-9a-f]{{28}}")
EVENT_SK = re.compile(rf"{EVENT}\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z#[0-9a-f]{{8}}")
USER_PK = re.compile(f"{USER}{KEY_TEXT}{{1,128}}")
KEY_PART = re.compile(f"{KEY_TEXT}{{1,300}}")


def user_pk(username: str) -> str:
    return f"{USER}{username}"


def username_of(pk: str) -> str:
    return pk.removeprefix(USER)


def under_user(username: str, sort_key: str) -> Key:
    return {PARTITION_KEY: user_pk(username), SORT_KEY: sort_key}


def user_key(username: str) -> Key:
    return under_user(username, PROFILE)


def name_claim_key(folded: str) -> Key:
    return {PARTITION_KEY: NAME + folded, SORT_KEY: NAME.rstrip("#")}


def email_claim_key(address: str) -> Key:
    # Verified addresses are unique regardless of case (as mail systems treat them).
    return {PARTITION_KEY: EMAIL + address.lower(), SORT_KEY: EMAIL.rstrip("#")}


def link_key(username: str, purpose: str) -> Key:
    # One row per purpose: issuing a link replaces, and so voids, the one before.
    return under_user(username, LINK + purpose)


def session_key(username: str, session_id: str) -> Key:
    return under_user(username, SESSION + session_id)


def refresh_key(username: str, digest: str) -> Key:
    return under_user(username, REFRESH + digest)


def login_failure_key(username: str, address: str) -> Key:
    # Keyed by the name in any case and outside the user's partition: attempts count against
    # the name typed, whether or not an account holds it, and ``ALICE`` counts as ``alice``.
    return {PARTITION_KEY: LOGIN + name_key(username), SORT_KEY: LOGIN_FAILURE + address}


def event_sort_key(at: str, suffix: str) -> str:
    # Time first so a query reads newest first; the suffix keeps same-ms events apart.
    return f"{EVENT}{at}#{suffix}"


def item_key(owner: str, item_id: str) -> Key:
    return under_user(owner, ITEM + item_id)


def status_shard(item_id: str, shards: int) -> int:
    """The index shard of an item: from its id's random half, so stable and evenly spread."""
    return int(item_id[12:], 16) % shards


def item_status_pk(status: str, shard: int | None) -> str:
    """The status index partition of shard ``shard``; None: the unsharded key of older rows."""
    return ITEM_STATUS + status if shard is None else f"{ITEM_STATUS}{status}#{shard}"


def upload_key(owner: str, upload_id: str) -> Key:
    return under_user(owner, UPLOAD + upload_id)


def totp_key(username: str) -> Key:
    return under_user(username, MFA_TOTP)


def recovery_key(username: str) -> Key:
    return under_user(username, MFA_RECOVERY)


def challenge_key(username: str, digest: str) -> Key:
    return under_user(username, MFA_CHALLENGE + digest)


def ticket_key(username: str, digest: str) -> Key:
    return under_user(username, WS_TICKET + digest)


def connection_key(username: str, connection_id: str) -> Key:
    return under_user(username, CONNECTION + connection_id)


def connection_owner_key(connection_id: str) -> Key:
    # API Gateway's disconnect event names only the connection: this row finds its owner.
    return {PARTITION_KEY: CONNECTION + connection_id, SORT_KEY: CONNECTION.rstrip("#")}


def done_key(worker: str, event_id: str) -> Key:
    return {PARTITION_KEY: f"{DONE}{worker}#{event_id}", SORT_KEY: DONE.rstrip("#")}


def rate_key(address: str, window_start: int) -> Key:
    return {PARTITION_KEY: RATE + address, SORT_KEY: f"{WINDOW}{window_start}"}


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call ("" if the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_condition_failure(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


class ReadThrottled(Exception):
    """DynamoDB kept leaving a batch read unprocessed."""


def batch_get(table: Table, keys: list[Key]) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of ``keys`` that exist, by (pk, sk), in one round trip unless throttled."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    request: Any = {table.name: {"Keys": keys, "ConsistentRead": True}}
    for _ in range(3):
        response = table.meta.client.batch_get_item(RequestItems=request)
        for row in response.get("Responses", {}).get(table.name, []):
            found[(str(row[PARTITION_KEY]), str(row[SORT_KEY]))] = dict(row)
        request = response.get("UnprocessedKeys")
        if not request:
            return found
    raise ReadThrottled(table.name)


def row_key(key: Key) -> tuple[str, str]:
    return key[PARTITION_KEY], key[SORT_KEY]


class OwnerMissing(Unauthenticated):
    """The owner's account no longer exists."""

    message = "Account no longer exists"


class ConcurrentChange(Conflict):
    """A simultaneous write got in the way; retrying will do."""

    message = "A simultaneous change got in the way; please retry"


# A profile marked deleted (``users.py``) takes no more changes, and its account no new rows.
NOT_MARKED = "attribute_not_exists(deletedAt)"
# The profile holds the account's id and is not marked deleted: the condition of every write of a
# row an account owns, so none lands in an account being purged.
PROFILE_HOLDS = f"userId = :id AND {NOT_MARKED}"


def put_owned(
    table: Table, row: dict[str, Any], *, owner: Owner, also: Sequence[dict[str, Any]] = ()
) -> None:
    """Write a new row under ``owner``, stamped with their id, only while the profile holds that
    id (atomically): ``OwnerMissing`` if the account is gone (or marked deleted) or its name now
    belongs to another,
    ``ConcurrentChange`` if the row appeared meanwhile, or a condition of ``also`` (more
    transaction items, written with it) failed."""
    try:
        table.meta.client.transact_write_items(
            TransactItems=[
                {
                    "ConditionCheck": {
                        "TableName": table.name,
                        "Key": cast("Any", user_key(owner.username)),
                        "ConditionExpression": PROFILE_HOLDS,
                        "ExpressionAttributeValues": {":id": cast("Any", owner.user_id)},
                    }
                },
                {
                    "Put": {
                        "TableName": table.name,
                        "Item": cast("Any", {**row, "userId": owner.user_id}),
                        "ConditionExpression": "attribute_not_exists(#pk)",
                        "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
                    }
                },
                *cast("Any", also),
            ]
        )
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons", [])
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise OwnerMissing(owner.username) from exc
        raise ConcurrentChange(owner.username) from exc


ReadT_co = TypeVar("ReadT_co", covariant=True)


class SideRead(Protocol[ReadT_co]):
    """A row another repository reads along with its own, in the same ``BatchGetItem``."""

    def key(self) -> Key: ...

    def parse(self, row: dict[str, Any] | None) -> ReadT_co:
        """What the row (None: absent) means."""

    def read(self) -> ReadT_co:
        """Read it alone (the in-memory twins)."""


class SideWrite(Protocol):
    """A row another repository writes along with its own: in the same DynamoDB transaction, so
    that one round trip does both (or neither); the in-memory twins ``apply`` the rows in order
    after their own conditions held and before their own writes, so list a row with a condition
    (a ``RateHit``) before the unconditional ones: refused, it leaves nothing written."""

    def transact_item(self) -> dict[str, Any]:
        """The ``TransactWriteItems`` entry (its ``TableName`` is filled in by ``transact``)."""

    def refusal(self) -> Exception:
        """What a failed condition of this row means to the caller (raised by ``transact``)."""

    def apply(self) -> None:
        """Write it now, alone (the in-memory twins; or when its transaction did not run):
        raise its refusal if its condition does not hold."""


def apply_alone(along: Sequence[SideWrite]) -> None:
    """Write, one by one, the rows that were to ride with a write that is not happening (so a
    request's per-IP hit is counted whichever way it ends)."""
    for side in along:
        side.apply()


def transact(
    table: Table, items: list[dict[str, Any]], along: Sequence[SideWrite] = ()
) -> int | None:
    """Write ``items`` and the rows ``along`` in one transaction: None when done; else the index
    in ``items`` of the first whose condition failed, or (when only rows ``along`` failed) the
    first one's refusal raised; any other cancellation is ``ConcurrentChange``. The in-memory
    twins decide in the same order: their own conditions, then the rows ``along``."""
    entries = [*items, *(side.transact_item() for side in along)]
    for entry in entries:
        for operation in entry.values():
            operation.setdefault("TableName", table.name)
    try:
        # The resource's client serialises plain Python values, as the Table methods do.
        table.meta.client.transact_write_items(TransactItems=cast("Any", entries))
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise
        failed = [
            index
            for index, reason in enumerate(exc.response.get("CancellationReasons", []))
            if reason.get("Code") == "ConditionalCheckFailed"
        ]
        if failed and failed[0] < len(items):
            return failed[0]
        if failed:
            raise along[failed[0] - len(items)].refusal() from exc
        raise ConcurrentChange("a parallel transaction got in the way") from exc
    return None
