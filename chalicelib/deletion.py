"""The deletion of an account, in two steps that always finish.

1. The request (``Accounts.delete_account``, the owner's, or ``Administration.delete_user``)
   marks the profile deleted: ``deletedAt`` set and the token version bumped in one conditional
   write (``UserRepository.mark_deleted``). From then on the account counts as gone: no login,
   refresh, token, recovery link or administration reaches it. The answer is 202.
2. The table's stream turns that change into an ``account.deleted`` event
   (``chalicelib/eventroutes.py``), which the purge queue hands to ``purge_worker`` (``app.py``):
   ``purge_deleted`` runs ``AccountPurge``, which deletes the partition's other rows, the uploaded
   objects, the name's and the address's claims, and the profile **last**. A failure leaves the
   message to the queue, whose next delivery finds the profile still there and carries on; after
   three failed receives it waits in the dead-letter queue (an alarm fires), from where a redrive
   runs it again. Only once the profile is gone is the name free to be registered again.

Every step is idempotent and bound to the account's id (the event's ``accountId``): while the
profile holds that id, the whole partition is the account's; once it is gone, or holds another
id (the name was registered again), only rows stamped with the old id are deleted, and neither
the objects nor the new account's claims are touched. A last sweep after the profile's delete
takes the rows that requests in flight at the time of the mark wrote meanwhile (every write of an
owned row is conditional on the profile, so none can follow its delete).

Known limit: a presigned upload POST handed out before the mark stays valid for its 15 minutes;
an object it creates after the purge has no record and stays (``uploads.py``).

``DynamoDBPartitionRepository`` deletes the rows; ``InMemoryPartitionRepository`` is its twin over
the in-memory repositories (``tests/test_deletion.py`` runs one contract against both).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.identity import Owner, name_key
from chalicelib.keys import (
    PROFILE,
    email_claim_key,
    is_condition_failure,
    name_claim_key,
    user_key,
    user_pk,
)
from chalicelib.objectkeys import upload_prefix
from chalicelib.table import PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table
    from mypy_boto3_s3 import S3Client

    from chalicelib.users import InMemoryUserRepository, UserRepository

logger = logging.getLogger(__name__)

ACCOUNT_DELETED = "account.deleted"


class AccountNotMarked(Exception):
    """A purge was asked for an account that is live (not marked deleted): refused."""


class InvalidPurgeEvent(Exception):
    """The message is not an ``account.deleted`` event with an account id and a name."""


class PartitionRepository(Protocol):
    def delete_rows(self, username: str, *, stamped: str | None = None) -> int:
        """Delete the rows under the name but its profile: every one, or only those stamped
        with the id ``stamped``; how many went."""

    def release_claims(self, owner: Owner, *, email: str | None) -> int:
        """Delete the name's claim and the claim of ``email`` (the verified address, if any)
        while they are the account's; how many went."""

    def delete_profile(self, owner: Owner) -> int:
        """Delete the profile while it holds the account's id; 1, or 0 if it did not."""


class OwnedRows(Protocol):
    def delete_owned(self, username: str, *, stamped: str | None = None) -> int:
        """Forget what this in-memory repository holds under the name (only the rows stamped
        with the id ``stamped``, if given); how many rows went."""


class DynamoDBPartitionRepository:
    """The user's whole partition, whatever kinds of rows it holds (earlier versions' too)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def delete_rows(self, username: str, *, stamped: str | None = None) -> int:
        query: dict[str, Any] = {
            "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username)),
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ConsistentRead": True,
        }
        if stamped is not None:
            query["FilterExpression"] = Attr("userId").eq(stamped)
        deleted = 0
        # Paged reads and batched deletes, whose unprocessed items boto3 resends.
        with self._table.batch_writer() as batch:
            while True:
                page = self._table.query(**query)
                for row in page.get("Items", []):
                    if row[SORT_KEY] == PROFILE:
                        continue
                    batch.delete_item(
                        Key={PARTITION_KEY: row[PARTITION_KEY], SORT_KEY: row[SORT_KEY]}
                    )
                    deleted += 1
                if "LastEvaluatedKey" not in page:
                    return deleted
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def release_claims(self, owner: Owner, *, email: str | None) -> int:
        # A claim held by another id stays: a name differing in case (a legacy twin), or an
        # account that registered the name or verified the address since.
        released = self._delete_held(name_claim_key(name_key(owner.username)), owner.user_id)
        if email is not None:
            released += self._delete_held(email_claim_key(email), owner.user_id)
        return released

    def delete_profile(self, owner: Owner) -> int:
        return self._delete_held(user_key(owner.username), owner.user_id)

    def _delete_held(self, key: dict[str, str], user_id: str) -> int:
        try:
            self._table.delete_item(
                Key=key,
                ConditionExpression="userId = :id",
                ExpressionAttributeValues={":id": user_id},
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise
            return 0
        return 1


class InMemoryPartitionRepository:
    """The twin: the in-memory user repository holds profiles and claims, the others the rest."""

    def __init__(self, users: InMemoryUserRepository, others: Sequence[OwnedRows]) -> None:
        self._users = users
        self._others = others

    def delete_rows(self, username: str, *, stamped: str | None = None) -> int:
        return sum(other.delete_owned(username, stamped=stamped) for other in self._others)

    def release_claims(self, owner: Owner, *, email: str | None) -> int:
        return self._users.release_claims(owner, email=email)

    def delete_profile(self, owner: Owner) -> int:
        return self._users.delete_profile(owner)


class AccountPurge:
    """Deletes everything of an account marked deleted; running it again finishes what an
    interrupted run left, or finds nothing (idempotent)."""

    def __init__(
        self,
        users: UserRepository,
        partition: PartitionRepository,
        *,
        s3: S3Client | None = None,
        bucket: str | None = None,
    ) -> None:
        self._users = users
        self._partition = partition
        self._s3 = s3
        self._bucket = bucket

    def purge(self, owner: Owner) -> int:
        """Purge the account ``owner`` (its name and id); how many rows and objects went.
        ``AccountNotMarked`` if the profile holds that id and is not marked deleted."""
        username = owner.username
        profile = self._users.get(username, marked=True)
        deleted = 0
        if profile is not None and profile.user_id == owner.user_id:
            if profile.deleted_at is None:
                raise AccountNotMarked(username)
            # The profile still holds the id: the whole partition and prefix are the account's.
            deleted += self._partition.delete_rows(username)
            if self._s3 is not None and self._bucket is not None:
                deleted += _purge_objects(self._s3, self._bucket, upload_prefix(username))
            deleted += self._partition.release_claims(owner, email=profile.verified_email)
            # Last: until it goes, a re-run finds the account and the name stays taken.
            deleted += self._partition.delete_profile(owner)
        else:
            # Gone (a re-run after the profile's delete) or the name is someone else's now.
            deleted += self._partition.release_claims(owner, email=None)
        # Rows a request in flight at the mark wrote meanwhile, stamped with the old id.
        deleted += self._partition.delete_rows(username, stamped=owner.user_id)
        logger.info(
            "account purged",
            extra={"fields": {"username": username, "userId": owner.user_id, "deleted": deleted}},
        )
        return deleted


def purge_deleted(purge: AccountPurge, envelope: Mapping[str, Any]) -> int:
    """The purge worker's work for one event (the envelope of ``eventroutes.py``): purge the
    account it names. ``InvalidPurgeEvent`` for anything but an ``account.deleted`` event."""
    return purge.purge(deleted_account(envelope))


def deleted_account(envelope: Mapping[str, Any]) -> Owner:
    """The account an ``account.deleted`` envelope names; ``InvalidPurgeEvent`` otherwise."""
    data = envelope.get("data")
    username = data.get("username") if isinstance(data, Mapping) else None
    account_id = envelope.get("accountId")
    if (
        envelope.get("type") != ACCOUNT_DELETED
        or not isinstance(account_id, str)
        or not account_id
        or not isinstance(username, str)
        or not username
        or envelope.get("username", username) != username
    ):
        raise InvalidPurgeEvent(str(envelope.get("id", "")))
    return Owner(username, account_id)


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
