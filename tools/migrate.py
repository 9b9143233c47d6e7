"""Ready a table for Gatehouse: ``python -m tools.migrate --table NAME [--apply]``.

Two jobs, both dry by default (it prints what it would do and changes nothing; ``--apply`` does
it):

- The table's settings, for adopting the original system's table (``production-data-table``):
  it checks the key schema (``pk``/``sk``, strings) and enables what the app needs and the
  original lacks: deletion protection, point-in-time recovery, the stream of new and old
  images, the TTL attribute ``expiresAt`` and the ``gsi1`` index. One change at a time, each
  waited for (table and index ACTIVE) within ``--wait-minutes``. It refuses, changing nothing,
  when a setting is taken in a way the app cannot use (other keys, a stream of another view
  type, TTL on another attribute, another ``gsi1``), and says what to do.
- The rows, for upgrading from an earlier Gatehouse: profiles without an id get one (and their
  name claim) as a first login would give it; the items, uploads, upload counters and security
  events under each profile are stamped with it, so they show again. Sessions of earlier
  versions are left alone: they never carry an id, so they end, and DynamoDB's TTL removes them.
  Every write is conditional, so the tool can run while the app serves requests, be
  interrupted, and run again.

A second ``--apply`` finds nothing to do. Exit status: 0 done (or dry run), 1 refused or timed out.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.identity import new_user_id
from chalicelib.keys import EVENT, ITEM, PROFILE, UPLOAD, is_condition_failure, user_pk
from chalicelib.table import (
    INDEXES,
    PARTITION_KEY,
    SORT_KEY,
    TTL_ATTRIBUTE,
    create_table_request,
)
from chalicelib.users import DynamoDBUserRepository, UserNotFound, user_from_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.service_resource import Table

# Rows an account owns that earlier versions wrote without its id (sessions aside).
OWNED = (ITEM, UPLOAD, EVENT, "UPLOADS")
STREAM_VIEW: Final = "NEW_AND_OLD_IMAGES"
# Building an index over a large table takes a while; a stalled wait ends with a message.
DEFAULT_WAIT_MINUTES = 60
POLL_SECONDS = 10.0


class Refused(Exception):
    """The table cannot be readied without a decision the tool leaves to a person."""


class TimedOut(Exception):
    """A change did not finish within the wait (it goes on in AWS)."""


@dataclass
class Counts:
    ids: int = 0
    rows: int = 0


@dataclass(frozen=True)
class Change:
    """One setting to enable: what it is, the request that makes it, and when it is done."""

    description: str
    make: Callable[[DynamoDBClient], object]
    done: Callable[[DynamoDBClient], bool]


@dataclass(frozen=True)
class Wait:
    """A bounded poll: ``done`` is checked at once, then every ``interval`` until ``timeout``."""

    timeout: float = DEFAULT_WAIT_MINUTES * 60
    interval: float = POLL_SECONDS
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = self.clock() + self.timeout
        while not done():
            if self.clock() >= deadline:
                raise TimedOut(
                    f"{what}: not finished after {self.timeout / 60:g} minutes. AWS goes on with "
                    "it; run the tool again later (it finds what is left)."
                )
            self.sleep(self.interval)


# The table's settings


def plan(client: DynamoDBClient, table_name: str) -> list[Change]:
    """The changes ``table_name`` needs, in the order they are made; raises ``Refused``."""
    try:
        table = client.describe_table(TableName=table_name)["Table"]
    except client.exceptions.ResourceNotFoundException as exc:
        raise Refused(f"no table {table_name!r} in this account and region") from exc
    _check_keys(table)
    problems: list[str] = []
    changes: list[Change] = []
    for step in (_protection, _pitr, _stream, _ttl, _index):
        try:
            change = step(client, table)
        except Refused as exc:
            problems.append(str(exc))
            continue
        if change is not None:
            changes.append(change)
    if problems:
        raise Refused("\n".join(problems))
    return changes


def apply(client: DynamoDBClient, table_name: str, changes: Sequence[Change], wait: Wait) -> None:
    """Make each change in turn, waiting for the table to settle before and after each."""
    for change in changes:
        print(f"{change.description} ...", flush=True)
        wait.until(lambda: _active(client, table_name), f"table {table_name} to be ACTIVE")
        change.make(client)
        wait.until(functools.partial(change.done, client), change.description)
        print(f"{change.description}: done", flush=True)


def _check_keys(table: Any) -> None:
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    keys = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
    wanted = {"HASH": PARTITION_KEY, "RANGE": SORT_KEY}
    if keys != wanted or any(types.get(name) != "S" for name in wanted.values()):
        found = ", ".join(f"{keys[kind]} ({types.get(keys[kind])})" for kind in sorted(keys))
        raise Refused(
            f"table {table['TableName']} is keyed by {found}; Gatehouse needs partition key "
            f"{PARTITION_KEY} and sort key {SORT_KEY}, both strings (S). Keys cannot be changed "
            "in place: this table is not one the app can adopt."
        )


def _active(client: DynamoDBClient, table_name: str) -> bool:
    return client.describe_table(TableName=table_name)["Table"]["TableStatus"] == "ACTIVE"


def _protection(client: DynamoDBClient, table: Any) -> Change | None:
    # The original's table belongs to the original's stacks: deleting them must not delete it.
    name = table["TableName"]
    if table.get("DeletionProtectionEnabled"):
        return None
    return Change(
        "Enable deletion protection",
        lambda client: client.update_table(TableName=name, DeletionProtectionEnabled=True),
        lambda client: bool(
            client.describe_table(TableName=name)["Table"].get("DeletionProtectionEnabled")
        ),
    )


def _pitr(client: DynamoDBClient, table: Any) -> Change | None:
    name = table["TableName"]

    def status(client: DynamoDBClient) -> str:
        backups = client.describe_continuous_backups(TableName=name)
        description = backups["ContinuousBackupsDescription"]
        return description.get("PointInTimeRecoveryDescription", {}).get(
            "PointInTimeRecoveryStatus", "DISABLED"
        )

    if status(client) == "ENABLED":
        return None
    return Change(
        "Enable point-in-time recovery",
        lambda client: client.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        ),
        lambda client: status(client) == "ENABLED",
    )


def _stream(client: DynamoDBClient, table: Any) -> Change | None:
    name = table["TableName"]
    spec = table.get("StreamSpecification", {})
    if spec.get("StreamEnabled"):
        if spec.get("StreamViewType") == STREAM_VIEW:
            return None
        raise Refused(
            f"table {name} has a stream of view type {spec.get('StreamViewType')}; the app's "
            f"change handler needs {STREAM_VIEW}, and a table has one stream. Once nothing reads "
            f"the current one, disable it (aws dynamodb update-table --table-name {name} "
            "--stream-specification StreamEnabled=false) and run this again."
        )

    def done(client: DynamoDBClient) -> bool:
        now = client.describe_table(TableName=name)["Table"]
        stream = now.get("StreamSpecification", {})
        return (
            now["TableStatus"] == "ACTIVE"
            and bool(stream.get("StreamEnabled"))
            and stream.get("StreamViewType") == STREAM_VIEW
        )

    return Change(
        f"Enable the stream ({STREAM_VIEW})",
        lambda client: client.update_table(
            TableName=name,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW},
        ),
        done,
    )


def _ttl(client: DynamoDBClient, table: Any) -> Change | None:
    name = table["TableName"]

    def state(client: DynamoDBClient) -> tuple[str, str | None]:
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        return ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")

    status, attribute = state(client)
    if status in ("ENABLED", "ENABLING") and attribute == TTL_ATTRIBUTE:
        return None
    if status in ("ENABLED", "ENABLING"):
        raise Refused(
            f"table {name} expires rows by {attribute!r}; the app's rows expire by "
            f"{TTL_ATTRIBUTE!r}, and a table has one TTL attribute. If nothing relies on "
            f"{attribute!r}, disable it (aws dynamodb update-time-to-live --table-name {name} "
            f"--time-to-live-specification Enabled=false,AttributeName={attribute}) and run this "
            "again an hour later (AWS allows one TTL change an hour)."
        )
    if status == "DISABLING":
        raise Refused(f"TTL on table {name} is being disabled; run this again within the hour.")
    # AWS accepts the change at once and applies it within an hour; the app does not wait on
    # TTL (it only deletes rows past their time), so ENABLING counts as done.
    return Change(
        f"Enable TTL on {TTL_ATTRIBUTE}",
        lambda client: client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        ),
        lambda client: state(client) in (("ENABLING", TTL_ATTRIBUTE), ("ENABLED", TTL_ATTRIBUTE)),
    )


def _index(client: DynamoDBClient, table: Any) -> Change | None:
    (index,) = INDEXES
    name = table["TableName"]
    wanted = next(
        spec
        for spec in create_table_request(name)["GlobalSecondaryIndexes"]
        if spec["IndexName"] == index.name
    )
    existing = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    if index.name in existing:
        found = existing[index.name]
        if (
            found["KeySchema"] != wanted["KeySchema"]
            or found["Projection"].get("ProjectionType") != "ALL"
        ):
            raise Refused(
                f"table {name} has an index {index.name} unlike the app's ({index.partition_key} "
                f"and {index.sort_key}, all attributes projected). Delete it once nothing uses "
                f"it, and run this again."
            )
        if found.get("IndexStatus") == "ACTIVE":
            return None
        return Change(
            f"Wait for index {index.name} ({found.get('IndexStatus')})",
            lambda client: None,
            lambda client: _index_active(client, name, index.name),
        )
    create: Any = dict(wanted)
    description = (
        f"Create index {index.name} ({index.partition_key}, {index.sort_key}; all attributes)"
    )
    billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    if billing == "PROVISIONED":
        # Provisioned tables need the index's capacity named; it matches the table's.
        throughput = table["ProvisionedThroughput"]
        create["ProvisionedThroughput"] = {
            "ReadCapacityUnits": throughput["ReadCapacityUnits"],
            "WriteCapacityUnits": throughput["WriteCapacityUnits"],
        }
        description += (
            f", provisioned like the table: {throughput['ReadCapacityUnits']} read and "
            f"{throughput['WriteCapacityUnits']} write capacity units"
        )
    # UpdateTable takes the definitions of every key attribute, old and new.
    definitions: dict[str, Any] = {a["AttributeName"]: a for a in table["AttributeDefinitions"]}
    for key in (index.partition_key, index.sort_key):
        definitions.setdefault(key, {"AttributeName": key, "AttributeType": "S"})
    return Change(
        description,
        lambda client: client.update_table(
            TableName=name,
            AttributeDefinitions=list(definitions.values()),
            GlobalSecondaryIndexUpdates=[{"Create": create}],
        ),
        lambda client: _index_active(client, name, index.name),
    )


def _index_active(client: DynamoDBClient, table_name: str, index_name: str) -> bool:
    table = client.describe_table(TableName=table_name)["Table"]
    statuses = {i["IndexName"]: i["IndexStatus"] for i in table.get("GlobalSecondaryIndexes", [])}
    return table["TableStatus"] == "ACTIVE" and statuses.get(index_name) == "ACTIVE"


# The rows


def migrate(table: Table, *, dry_run: bool = False) -> Counts:
    """Give every profile an id and stamp its rows (or, dry, count what that would change)."""
    users = DynamoDBUserRepository(table)
    counts = Counts()
    scan: dict[str, Any] = {"FilterExpression": Attr(SORT_KEY).eq(PROFILE)}
    while True:
        page = table.scan(**scan)
        for row in page.get("Items", []):
            user = user_from_item(row)
            user_id = user.user_id
            if user_id is None:
                if not dry_run:
                    try:
                        user_id = users.assign_id(user.username, new_user_id()).user_id
                    except UserNotFound:
                        continue  # deleted meanwhile
                counts.ids += 1
            counts.rows += _stamp(table, user.username, None if dry_run else user_id)
        if "LastEvaluatedKey" not in page:
            return counts
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _stamp(table: Table, username: str, user_id: str | None) -> int:
    """Stamp ``username``'s unstamped rows with ``user_id``; with None, count them only."""
    stamped = 0
    query: dict[str, Any] = {
        "KeyConditionExpression": Key(PARTITION_KEY).eq(user_pk(username)),
        "FilterExpression": Attr("userId").not_exists(),
        "ProjectionExpression": "#pk, #sk",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
    }
    while True:
        page = table.query(**query)
        for row in page.get("Items", []):
            if not str(row[SORT_KEY]).startswith(OWNED):
                continue
            if user_id is None:
                stamped += 1
                continue
            try:
                table.update_item(
                    Key={PARTITION_KEY: row[PARTITION_KEY], SORT_KEY: row[SORT_KEY]},
                    UpdateExpression="SET userId = :id",
                    ConditionExpression="attribute_exists(#pk) AND attribute_not_exists(userId)",
                    ExpressionAttributeNames={"#pk": PARTITION_KEY},
                    ExpressionAttributeValues={":id": user_id},
                )
                stamped += 1
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
        if "LastEvaluatedKey" not in page:
            return stamped
        query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def main(argv: Sequence[str] | None = None, *, wait: Wait | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Ready a table for Gatehouse: its settings, then its rows. Prints what it "
        "would change; --apply changes it."
    )
    parser.add_argument(
        "--table", default=os.environ.get("TABLE_NAME"), help="default: $TABLE_NAME"
    )
    parser.add_argument(
        "--apply", action="store_true", help="make the changes (default: only print them)"
    )
    parser.add_argument(
        "--wait-minutes",
        type=float,
        default=DEFAULT_WAIT_MINUTES,
        help=f"how long to wait for each change to finish (default: {DEFAULT_WAIT_MINUTES})",
    )
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("name the table with --table or TABLE_NAME")
    wait = wait or Wait(timeout=args.wait_minutes * 60)
    client = boto3.client("dynamodb")
    try:
        changes = plan(client, args.table)
    except Refused as exc:
        print(f"Refused, nothing changed:\n{exc}", file=sys.stderr)
        return 1
    table = boto3.resource("dynamodb").Table(args.table)
    if not args.apply:
        counts = migrate(table, dry_run=True)
        for change in changes:
            print(f"Would: {change.description}")
        if counts.ids or counts.rows:
            print(f"Would: give {counts.ids} profiles an id and stamp {counts.rows} rows")
        if changes or counts.ids or counts.rows:
            print(f"Dry run: table {args.table} unchanged. Run again with --apply to do this.")
        else:
            print(f"Nothing to do: table {args.table} has what the app needs.")
        return 0
    try:
        apply(client, args.table, changes, wait)
    except TimedOut as exc:
        print(str(exc), file=sys.stderr)
        return 1
    counts = migrate(table)
    if counts.ids or counts.rows:
        print(f"{counts.ids} profiles got an id; {counts.rows} rows stamped")
    if not changes and not (counts.ids or counts.rows):
        print(f"Nothing to do: table {args.table} has what the app needs.")
    else:
        print(f"Done: table {args.table} has what the app needs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
