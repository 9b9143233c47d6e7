"""The complete deletion of an account: every row under the user, then the uploaded objects.

Both self-service deletion (``Accounts.delete_account``) and an administrator's
(``Administration.delete_user``) go through ``AccountPurge``. ``DynamoDBPartitionRepository``
deletes the rows; ``InMemoryPartitionRepository`` is its twin over the in-memory repositories
(``tests/test_deletion.py`` runs one contract against both).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from chalicelib.identity import name_key
from chalicelib.keys import email_claim_key, is_condition_failure, name_claim_key, user_key, user_pk
from chalicelib.objectkeys import upload_prefix
from chalicelib.table import PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


class PartitionRepository(Protocol):
    def delete_partition(self, username: str) -> int:
        """Delete the profile, then every other row of the user; return how many went."""


class OwnedRows(Protocol):
    def delete_owned(self, username: str) -> int:
        """Forget what this in-memory repository holds for the user; how many rows went."""


class DynamoDBPartitionRepository:
    """The user's whole partition, whatever kinds of rows it holds (earlier versions' too)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def delete_partition(self, username: str) -> int:
        # The profile first, so the authorizer stops honouring the account's tokens at once.
        response = self._table.delete_item(Key=user_key(username), ReturnValues="ALL_OLD")
        profile = response.get("Attributes")
        deleted = 0 if profile is None else 1 + self._release_email(profile)
        # After the profile, so a purge interrupted here and run again still releases the name.
        deleted += self._release_name(username)
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username)),
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ConsistentRead": True,
        }
        # Paged reads and batched deletes, whose unprocessed items boto3 resends.
        with self._table.batch_writer() as batch:
            while True:
                page = self._table.query(**query)
                for row in page.get("Items", []):
                    batch.delete_item(
                        Key={PARTITION_KEY: row[PARTITION_KEY], SORT_KEY: row[SORT_KEY]}
                    )
                    deleted += 1
                if "LastEvaluatedKey" not in page:
                    return deleted
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _release_email(self, profile: dict[str, Any]) -> int:
        """Delete the claim of the profile's verified address, if it is still this account's."""
        if profile.get("emailVerified") is not True or "email" not in profile:
            return 0
        try:
            self._table.delete_item(
                Key=email_claim_key(str(profile["email"])),
                ConditionExpression="userId = :id",
                ExpressionAttributeValues={":id": profile.get("userId", "")},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return 0
        return 1

    def _release_name(self, username: str) -> int:
        """Delete the name's claim unless a name differing in case (a legacy twin) holds it."""
        try:
            self._table.delete_item(
                Key=name_claim_key(name_key(username)),
                ConditionExpression="username = :name",
                ExpressionAttributeValues={":name": username},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return 0
        return 1


class InMemoryPartitionRepository:
    """The twin: the in-memory user repository first, then every other one that holds rows."""

    def __init__(self, users: OwnedRows, others: Sequence[OwnedRows]) -> None:
        self._users = users
        self._others = others

    def delete_partition(self, username: str) -> int:
        deleted = self._users.delete_owned(username)
        for repository in self._others:
            deleted += repository.delete_owned(username)
        return deleted


class AccountPurge:
    """Deletes everything an account has: its rows (profile first), then its uploaded objects.

    The rest follows however many rows there are. Running it again finds nothing: it is
    idempotent.
    """

    def __init__(
        self,
        partition: PartitionRepository,
        *,
        s3: S3Client | None = None,
        bucket: str | None = None,
    ) -> None:
        self._partition = partition
        self._s3 = s3
        self._bucket = bucket

    def purge(self, username: str) -> int:
        deleted = self._partition.delete_partition(username)
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
