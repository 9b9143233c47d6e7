"""The table's key layout, in one place: every key builder, the shapes cursors may carry, the
``ClientError`` code helper and the write that is conditional on its owner still existing.

Access patterns (every entity lives under its owner's partition or in the sparse index):

| entity          | pk               | sk                       | gsi1pk / gsi1sk           |
|-----------------|------------------|--------------------------|---------------------------|
| user profile    | USER#{username}  | PROFILE                  | -                         |
| session         | USER#{username}  | SESSION#{id}             | -                         |
| refresh token   | USER#{username}  | REFRESH#{sha256}         | -                         |
| login attempts  | USER#{username}  | LOGINFAIL#{address}      | -                         |
| security event  | USER#{username}  | EVENT#{iso time}#{rand}  | -                         |
| item            | USER#{username}  | ITEM#{id}                | ITEMSTATUS#{status} / {id}|
| upload          | USER#{username}  | UPLOAD#{id}              | -                         |
| per-IP counter  | RATE#{address}   | WINDOW#{start}           | -                         |

A user's own data is one partition (one query lists it, one purge deletes it). Only rows that
need a cross-user query set ``gsi1pk`` / ``gsi1sk``, which keeps the index sparse. The layout is
the original system's for profiles and must stay byte-for-byte stable: rows written by earlier
versions are read as they are.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from chalicelib.errors import Conflict, Unauthenticated
from chalicelib.identity import Owner
from chalicelib.paging import KEY_TEXT
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

Key = dict[str, str]

USER = "USER#"
PROFILE = "PROFILE"
SESSION = "SESSION#"
REFRESH = "REFRESH#"
LOGIN_FAILURE = "LOGINFAIL#"
EVENT = "EVENT#"
ITEM = "ITEM#"
ITEM_STATUS = "ITEMSTATUS#"
UPLOAD = "UPLOAD#"
RATE = "RATE#"
WINDOW = "WINDOW#"

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


def session_key(username: str, session_id: str) -> Key:
    return under_user(username, SESSION + session_id)


def refresh_key(username: str, digest: str) -> Key:
    return under_user(username, REFRESH + digest)


def login_failure_key(username: str, address: str) -> Key:
    return under_user(username, LOGIN_FAILURE + address)


def event_sort_key(at: str, suffix: str) -> str:
    # Time first so a query reads newest first; the suffix keeps same-ms events apart.
    return f"{EVENT}{at}#{suffix}"


def item_key(owner: str, item_id: str) -> Key:
    return under_user(owner, ITEM + item_id)


def item_status_pk(status: str) -> str:
    return ITEM_STATUS + status


def upload_key(owner: str, upload_id: str) -> Key:
    return under_user(owner, UPLOAD + upload_id)


def rate_key(address: str, window_start: int) -> Key:
    return {PARTITION_KEY: RATE + address, SORT_KEY: f"{WINDOW}{window_start}"}


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call ("" if the response has none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_condition_failure(exc: ClientError) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


class OwnerMissing(Unauthenticated):
    """The owner's account no longer exists."""

    message = "Account no longer exists"


class ConcurrentChange(Conflict):
    """A simultaneous write got in the way; retrying will do."""

    message = "A simultaneous change got in the way; please retry"


def put_owned(table: Table, row: dict[str, Any], *, owner: Owner) -> None:
    """Write a new row under ``owner``, stamped with their id, only while the profile holds that
    id (atomically): ``OwnerMissing`` if the account is gone or its name now belongs to another,
    ``ConcurrentChange`` if the row appeared meanwhile."""
    _put_checked(
        table,
        {**row, "userId": owner.user_id},
        owner=owner.username,
        condition="userId = :id",
        values={":id": owner.user_id},
    )


def put_while_owner_exists(table: Table, row: dict[str, Any], *, owner: str) -> None:
    """Write a new row under ``owner`` only while the owner's profile exists, atomically."""
    _put_checked(table, row, owner=owner, condition="attribute_exists(#pk)", values=None)


def _put_checked(
    table: Table,
    row: dict[str, Any],
    *,
    owner: str,
    condition: str,
    values: dict[str, Any] | None,
) -> None:
    names = {"#pk": PARTITION_KEY}
    check: dict[str, Any] = {
        "TableName": table.name,
        "Key": user_key(owner),
        "ConditionExpression": condition,
    }
    if values:
        check["ExpressionAttributeValues"] = values
    else:
        check["ExpressionAttributeNames"] = names
    try:
        table.meta.client.transact_write_items(
            TransactItems=[
                {"ConditionCheck": cast("Any", check)},
                {
                    "Put": {
                        "TableName": table.name,
                        "Item": cast("Any", row),
                        "ConditionExpression": "attribute_not_exists(#pk)",
                        "ExpressionAttributeNames": names,
                    }
                },
            ]
        )
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise
        reasons = exc.response.get("CancellationReasons", [])
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise OwnerMissing(owner) from exc
        raise ConcurrentChange(owner) from exc
