"""The one definition of the single DynamoDB table, shared by the app, local set-up and CDK.

Keys are strings ``pk`` / ``sk``; a sparse index ``gsi1`` serves the cross-user queries; rows that
expire carry ``expiresAt`` (epoch seconds), the table's TTL attribute. What goes into the keys,
entity by entity, is in ``chalicelib/keys.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expiresAt"
_INTEGER_LIMIT = Decimal(10) ** 38


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str


INDEXES = (Index(name="gsi1", partition_key="gsi1pk", sort_key="gsi1sk"),)


def storable(value: Any) -> Any:
    """A JSON-shaped value ready for DynamoDB, which takes Decimal, not float."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def plain(value: Any) -> Any:
    """A value read from DynamoDB with its Decimals turned into int or float, ready for JSON."""
    if isinstance(value, dict):
        return {key: plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [plain(inner) for inner in value]
    if isinstance(value, Decimal):
        # Integers the API accepts have at most 38 digits; a larger whole number was a float.
        whole = value == value.to_integral_value() and abs(value) < _INTEGER_LIMIT
        return int(value) if whole else float(value)
    return value


def create_table_request(table_name: str) -> dict[str, Any]:
    """Keyword arguments for DynamoDB ``CreateTable`` (on-demand billing, with the stream of
    old and new images that the change handler reads)."""
    key_names = [PARTITION_KEY, SORT_KEY]
    for index in INDEXES:
        key_names += [index.partition_key, index.sort_key]
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in key_names
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in INDEXES
        ],
    }
