"""Move items' status index entries to the shards of ``STATUS_INDEX_SHARDS``: ``python -m
tools.reindex [--shards N] [--apply]``.

Needed after lowering ``STATUS_INDEX_SHARDS`` (entries in the shards dropped are not listed until
moved) and, to save the listing one read of an empty key, for rows written before sharding
(``ITEMSTATUS#{status}``, which the listing reads as one more shard meanwhile). Raising the count
needs nothing: every entry is still in a shard that is read, and each item's next update moves
it. A dry run by default: it prints each move; ``--apply`` makes them. It reads the sparse index
only (not the table), and each move is conditional on the entry it replaces, so it can run while
the app serves (an update meanwhile has already written the right key) and run again (a second
run finds nothing). docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from chalicelib.items import DEFAULT_STATUS_SHARDS
from chalicelib.keys import (
    ITEM_STATUS,
    STATUS_INDEX,
    is_condition_failure,
    item_status_pk,
    status_shard,
)
from chalicelib.settings import MAX_STATUS_INDEX_SHARDS
from chalicelib.table import PARTITION_KEY, SORT_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


@dataclass(frozen=True)
class Move:
    pk: str
    sk: str
    old: str
    new: str


def reindex(table: Table, *, shards: int, apply: bool) -> list[Move]:
    """The entries not in their shard of ``shards``, moved if ``apply`` (those an update moved
    meanwhile are left out)."""
    index = STATUS_INDEX
    scan: dict[str, Any] = {
        "IndexName": index.name,
        "FilterExpression": Attr(index.partition_key).begins_with(ITEM_STATUS),
        "ProjectionExpression": "#pk, #sk, #gpk, #gsk, #status",
        "ExpressionAttributeNames": {
            "#pk": PARTITION_KEY,
            "#sk": SORT_KEY,
            "#gpk": index.partition_key,
            "#gsk": index.sort_key,
            "#status": "status",
        },
    }
    moves: list[Move] = []
    while True:
        page = table.scan(**scan)
        for row in page.get("Items", []):
            old = str(row[index.partition_key])
            new = item_status_pk(str(row["status"]), status_shard(str(row[index.sort_key]), shards))
            move = Move(str(row[PARTITION_KEY]), str(row[SORT_KEY]), old, new)
            if old != new and (not apply or _move(table, move)):
                moves.append(move)
        if "LastEvaluatedKey" not in page:
            return moves
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _move(table: Table, move: Move) -> bool:
    try:
        table.update_item(
            Key={PARTITION_KEY: move.pk, SORT_KEY: move.sk},
            UpdateExpression="SET #gpk = :new",
            ConditionExpression="#gpk = :old",
            ExpressionAttributeNames={"#gpk": STATUS_INDEX.partition_key},
            ExpressionAttributeValues={":new": move.new, ":old": move.old},
        )
    except ClientError as exc:
        if not is_condition_failure(exc):
            raise
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--table", default=os.environ.get("TABLE_NAME"), help="default: $TABLE_NAME"
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=int(os.environ.get("STATUS_INDEX_SHARDS", DEFAULT_STATUS_SHARDS)),
        help=f"default: $STATUS_INDEX_SHARDS or {DEFAULT_STATUS_SHARDS}",
    )
    parser.add_argument("--apply", action="store_true", help="make the moves (default: print)")
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("name the table with --table or TABLE_NAME")
    if not 1 <= args.shards <= MAX_STATUS_INDEX_SHARDS:
        parser.error(f"--shards must be between 1 and {MAX_STATUS_INDEX_SHARDS}")
    moves = reindex(
        boto3.resource("dynamodb").Table(args.table), shards=args.shards, apply=args.apply
    )
    for move in moves:
        print(f"{move.pk} {move.sk}: {move.old} -> {move.new}")
    verb = "moved" if args.apply else "to move (dry run; --apply to make them)"
    print(f"{len(moves)} index entries {verb} (table {args.table}, {args.shards} shards)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
