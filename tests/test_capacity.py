"""``make capacity`` (tools/capacity.py): DynamoDB's size rules, and the measured scenario."""

from __future__ import annotations

from decimal import Decimal

import boto3
import pytest

from chalicelib.items import DEFAULT_STATUS_SHARDS
from tools import capacity


def test_item_sizes_follow_dynamodb_rules() -> None:
    # Names and strings in UTF-8 bytes; numbers by significant digits; 1 byte for a boolean or
    # null; 3 bytes for a list or map plus 1 per element.
    assert capacity.row_size({"pk": "USER#alice", "sk": "PROFILE"}) == 2 + 10 + 2 + 7
    assert capacity.item_size("é") == 2
    assert capacity.item_size(Decimal("12345")) == 4
    assert capacity.item_size(Decimal("1.5")) == 2
    assert capacity.item_size(True) == capacity.item_size(None) == 1
    assert capacity.item_size([1, "ab"]) == 3 + (2 + 1) + (2 + 1)
    assert capacity.item_size({"a": "b"}) == 3 + 1 + 1 + 1
    assert capacity.plain({"S": "x"}) == "x"
    assert capacity.units(0, capacity.READ_UNIT) == 1
    assert capacity.units(4097, capacity.READ_UNIT) == 2


def test_the_scenario_measures_every_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    measured = {row.route: row for row in capacity.measure()}
    assert list(measured) == [
        "POST /auth/signup",
        "POST /auth/login",
        "POST /auth/login, wrong password",
        "POST /auth/refresh",
        "GET /auth/user",
        "POST /items",
        "GET /items",
        "GET /items/{id}",
        "PATCH /items/{id}",
        "DELETE /items/{id}",
        "GET /admin/items?status=active",
    ]
    assert measured["GET /auth/user"].operations == ["BatchGetItem"]
    # Two strongly consistent reads of rows under 4 KB.
    assert measured["GET /auth/user"].read_units == 2
    assert measured["POST /items"].write_units > 0
    # The admin listing: the caller's check, then one query per shard and the unsharded key.
    admin = measured["GET /admin/items?status=active"]
    assert admin.operations.count("Query") == DEFAULT_STATUS_SHARDS + 1
    assert all(row.read_units + row.write_units > 0 for row in measured.values())
