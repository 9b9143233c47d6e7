"""Item data DynamoDB can hold comes back unchanged; anything else is refused before a write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Api, FakeClock
from tests.test_items import Caller

# Every kind of JSON value, at the edges DynamoDB has.
ACCEPTED: list[dict[str, Any]] = [
    {},
    {"s": "", "t": "text", "u": "ünïcødé ✓ 𝄞", "nul": "a\u0000b"},
    {"n": 0, "neg": -7, "big": 10**37, "small": -(10**37), "f": 1.5, "tiny": 1e-129},
    {"high": 9.99e125, "precise": 0.1, "third": 1 / 3, "e": 2.718281828459045},
    {"t": True, "f": False, "none": None},
    {"empty": [], "nested": {}, "list": [1, "a", None, True, [2, [3]], {"k": "v"}]},
    {"deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}},
    {" ": "space key", "k\u00e9y": 1, "a.b": 2, "#x": 3, ":y": 4},
    {"long": "x" * 30000},
]

REFUSED: list[tuple[bytes, str]] = [
    (b'{"name": "x", "data": {"": 1}}', "keys must not be empty"),
    (b'{"name": "x", "data": {"a": {"b": [{"": 1}]}}}', "keys must not be empty"),
    (b'{"name": "x", "data": {"s": "\\udfff"}}', "invalid Unicode"),
    (b'{"name": "x", "data": {"\\ud800": 1}}', "invalid Unicode"),
    (b'{"name": "x", "data": {"n": 1e126}}', "1e126"),
    (b'{"name": "x", "data": {"n": -1e126}}', "1e126"),
    (b'{"name": "x", "data": {"n": 1e-131}}', "1e-130"),
    (b'{"name": "x", "data": {"n": 1234567890123456789012345678901234567890}}', "38"),
    (b'{"name": "x", "data": {"n": Infinity}}', "finite"),
    (b'{"name": "x", "data": ' + b"[" * 20 + b"]" * 20 + b"}", "data"),
    (b'{"name": "x", "data": {"a": ' + b"[" * 17 + b"]" * 17 + b"}}", "nest"),
]


@pytest.fixture
def alice(api: Api, clock: FakeClock) -> Caller:
    return Caller(api, "alice", clock)


def test_every_accepted_shape_reads_back_the_same_alone_and_in_a_listing(alice: Caller) -> None:
    created = [alice.create(f"shape {index}", data=data) for index, data in enumerate(ACCEPTED)]
    for item, data in zip(created, ACCEPTED, strict=True):
        assert item["data"] == data
        read = alice.call("GET", f"/items/{item['id']}")
        assert read.status_code == 200
        assert read.json_body["data"] == data
    listed = alice.call("GET", "/items?limit=100")
    assert listed.status_code == 200
    by_id = {item["id"]: item["data"] for item in listed.json_body["items"]}
    assert by_id == {item["id"]: data for item, data in zip(created, ACCEPTED, strict=True)}


@pytest.mark.parametrize(("body", "words"), REFUSED)
def test_what_dynamodb_cannot_hold_is_refused_before_any_write(
    alice: Caller, body: bytes, words: str
) -> None:
    response = alice.call("POST", "/items", body)
    assert response.status_code == 400, response.body
    assert words in response.json_body["message"]
    assert alice.call("GET", "/items").json_body["items"] == []
    # The same refusal on a replace and a patch, and the item stays as it was.
    item = alice.create("kept", data={"a": 1})
    for method in ("PUT", "PATCH"):
        changed = alice.call(method, f"/items/{item['id']}", body, **{"If-Match": '"1"'})
        assert changed.status_code == 400, changed.body
    assert alice.call("GET", f"/items/{item['id']}").json_body["data"] == {"a": 1}


def test_the_refused_shapes_are_refused_without_the_parser_too() -> None:
    """The payload model alone refuses them, whoever builds it."""
    from pydantic import ValidationError

    from chalicelib.payloads import ItemWrite

    with pytest.raises(ValidationError, match="empty"):
        ItemWrite.model_validate({"name": "x", "data": {"a": [{"": 1}]}})
    assert json.dumps(ItemWrite.model_validate({"name": "x", "data": {"a": 1}}).data) == '{"a": 1}'
