"""Stamp the rows of an earlier Gatehouse with their account's id: ``python -m tools.migrate``.

Profiles without an id get one (and their name claim) as a first login would give it; the
items, uploads, upload counters and security events under each profile are stamped with it, so
they show again. Sessions of earlier versions are left alone: they never carry an id, so they
end, and DynamoDB's TTL removes them. Every write is conditional, so the tool can run while the
app serves requests, be interrupted, and run again (a second run changes nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.identity import Owner, new_user_id
from chalicelib.keys import EVENT, ITEM, PROFILE, UPLOAD, is_condition_failure, user_pk
from chalicelib.table import PARTITION_KEY, SORT_KEY
from chalicelib.users import DynamoDBUserRepository, UserNotFound, user_from_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

# Rows an account owns that earlier versions wrote without its id (sessions aside).
OWNED = (ITEM, UPLOAD, EVENT, "UPLOADS")


@dataclass
class Counts:
    ids: int = 0
    rows: int = 0


def migrate(table: Table) -> Counts:
    users = DynamoDBUserRepository(table)
    counts = Counts()
    scan: dict[str, Any] = {"FilterExpression": Attr(SORT_KEY).eq(PROFILE)}
    while True:
        page = table.scan(**scan)
        for row in page.get("Items", []):
            user = user_from_item(row)
            if user.user_id is None:
                try:
                    user = users.assign_id(user.username, new_user_id())
                except UserNotFound:
                    continue  # deleted meanwhile
                counts.ids += 1
            counts.rows += _stamp(table, user.owner)
        if "LastEvaluatedKey" not in page:
            return counts
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _stamp(table: Table, owner: Owner) -> int:
    stamped = 0
    query: dict[str, Any] = {
        "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(owner.username)),
        "FilterExpression": Attr("userId").not_exists(),
        "ProjectionExpression": "#pk, #sk",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
    }
    while True:
        page = table.query(**query)
        for row in page.get("Items", []):
            if not str(row[SORT_KEY]).startswith(OWNED):
                continue
            try:
                table.update_item(
                    Key={PARTITION_KEY: row[PARTITION_KEY], SORT_KEY: row[SORT_KEY]},
                    UpdateExpression="SET userId = :id",
                    ConditionExpression="attribute_exists(#pk) AND attribute_not_exists(userId)",
                    ExpressionAttributeNames={"#pk": PARTITION_KEY},
                    ExpressionAttributeValues={":id": owner.user_id},
                )
                stamped += 1
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
        if "LastEvaluatedKey" not in page:
            return stamped
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table", default=os.environ.get("TABLE_NAME"), help="default: $TABLE_NAME"
    )
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("name the table with --table or TABLE_NAME")
    counts = migrate(boto3.resource("dynamodb").Table(args.table))
    print(f"{counts.ids} profiles got an id; {counts.rows} rows stamped (table {args.table})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
