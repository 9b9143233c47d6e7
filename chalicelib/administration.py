"""What administrators do to accounts, and the complete deletion of an account."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Attr, Key

from chalicelib.clock import Clock, iso, utc_now
from chalicelib.events import Client, SecurityEvents
from chalicelib.objectkeys import upload_prefix
from chalicelib.paging import KEY_TEXT, MAX_READS, decode_cursor, encode_cursor
from chalicelib.table import PARTITION_KEY, SORT_KEY, user_key
from chalicelib.users import DynamoDBUserRepository, User, UserNotFound, user_from_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client

    from chalicelib.accounts import Accounts

logger = logging.getLogger(__name__)


class AccountPurge:
    """Deletes everything an account has: its partition, then its uploaded objects.

    The profile goes first, so the authorizer stops honouring the account's tokens at once;
    the rest follows however many rows there are (paged reads, batched deletes whose
    unprocessed items boto3 resends). Running it again finds nothing: it is idempotent.
    """

    def __init__(self, table: Table, *, s3: S3Client | None = None, bucket: str | None = None):
        self._table = table
        self._s3 = s3
        self._bucket = bucket

    def purge(self, username: str) -> int:
        self._table.delete_item(Key=user_key(username))
        deleted = 1
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(f"USER#{username}"),
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ConsistentRead": True,
        }
        with self._table.batch_writer() as batch:
            while True:
                page = self._table.query(**query)
                for row in page.get("Items", []):
                    batch.delete_item(
                        Key={PARTITION_KEY: row[PARTITION_KEY], SORT_KEY: row[SORT_KEY]}
                    )
                    deleted += 1
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if self._s3 is not None and self._bucket is not None:
            deleted += _purge_objects(self._s3, self._bucket, upload_prefix(username))
        logger.info("account purged", extra={"fields": {"username": username, "deleted": deleted}})
        return deleted


def _purge_objects(s3: S3Client, bucket: str, prefix: str) -> int:
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys: Any = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
        if not keys:
            continue
        result = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        if result.get("Errors"):
            raise RuntimeError(f"could not delete {len(result['Errors'])} uploaded objects")
        deleted += len(keys)
    return deleted


_KEY_PART = re.compile(f"{KEY_TEXT}{{1,300}}")


def _cursor(pk: Any, sk: Any) -> str:
    return encode_cursor({"pk": str(pk), "sk": str(sk)})


@dataclass(frozen=True)
class UserPage:
    users: list[User]
    cursor: str | None


class Administration:
    def __init__(
        self,
        table: Table,
        *,
        accounts: Accounts,
        purge: AccountPurge,
        events: SecurityEvents,
        clock: Clock = utc_now,
    ) -> None:
        self._table = table
        self._users = DynamoDBUserRepository(table)
        self._accounts = accounts
        self._purge = purge
        self._events = events
        self._clock = clock

    def list_users(self, *, limit: int, cursor: str | None) -> UserPage:
        """Every profile, in no particular order; a scan, so meant for administrators only."""
        scan: dict[str, Any] = {"FilterExpression": Attr(SORT_KEY).eq("PROFILE")}
        if cursor is not None:
            position = decode_cursor(cursor, {"pk": _KEY_PART, "sk": _KEY_PART})
            scan["ExclusiveStartKey"] = {PARTITION_KEY: position["pk"], SORT_KEY: position["sk"]}
        rows: list[Any] = []
        resume = None
        for _ in range(MAX_READS):
            page = self._table.scan(**scan, Limit=500)
            rows += page.get("Items", [])
            resume = page.get("LastEvaluatedKey")
            if len(rows) > limit or resume is None:
                break
            scan["ExclusiveStartKey"] = resume
        users = [user_from_item(row) for row in rows[:limit]]
        if len(rows) > limit:
            last = rows[limit - 1]
            return UserPage(users, _cursor(last[PARTITION_KEY], last[SORT_KEY]))
        return UserPage(
            users, None if resume is None else _cursor(resume[PARTITION_KEY], resume[SORT_KEY])
        )

    def get(self, username: str) -> User:
        user = self._users.get(username)
        if user is None:
            raise UserNotFound(username)
        return user

    def create_user(
        self, username: str, password: str, *, role: str, admin: str, client: Client
    ) -> User:
        user = self._accounts.register(username, password, client, role=role)
        self._events.record(admin, "admin_create_user", client, target=username, role=role)
        return user

    def update_user(
        self,
        username: str,
        *,
        role: str | None,
        disabled: bool | None,
        admin: str,
        client: Client,
    ) -> User:
        user = self._users.set_access(
            username, role=role, disabled=disabled, updated_at=iso(self._clock())
        )
        changes = {k: v for k, v in {"role": role, "disabled": disabled}.items() if v is not None}
        self._events.record(admin, "admin_update_user", client, target=username, **changes)
        return user

    def delete_user(self, username: str, *, admin: str, client: Client) -> None:
        self._purge.purge(username)
        self._events.record(admin, "admin_delete_user", client, target=username)
