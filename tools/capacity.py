"""``make capacity``: DynamoDB round trips and capacity units per route (docs/SCALING.md).

The app runs in-process under chalice's test client against moto in-process, with production
wiring (the real scrypt cost; the status index in its default shards). Every DynamoDB call of
the app's clients passes two botocore hooks installed on the default session before the app
builds its clients (as ``tools/bench.py`` counts round trips):

- ``before-parameter-build`` asks for ``ReturnConsumedCapacity=INDEXES`` and, for a write, reads
  the size of each row it touches beforehand (through a client of its own, not counted);
- ``after-call`` keeps what moto reports as consumed, and reads the rows' sizes afterwards.

What is measured and what is computed: the calls, their operations and the rows they read or
write are measured. moto's ``ConsumedCapacity`` (moto 5.2.5) is a constant, whatever the rows'
sizes: 1 for a put, delete, query or scan, 0.5 for a get or an update, one per key of a batch
get, nothing for a transaction; it is printed only to show that. The capacity units are computed
from the measured rows' sizes by DynamoDB's rules (``item_size`` and ``units``): a read costs
one unit per 4 KB (half for an eventually consistent one; a query sums the rows it returns
before rounding; a batch get rounds each key, found or not), a write one unit per 1 KB of the
larger of the row before and after, twice that in a transaction (a ``ConditionCheck`` counted as
a transactional write of the row it reads: an upper bound, AWS does not spell it out), and one
more write per 1 KB for each index entry put or removed (the index projects every attribute). A
query with a filter is charged for the rows it reads, not the ones it returns: for ``GET
/items`` with a status filter the figure is a lower bound (the scenario lists without one).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer
from chalice.test import Client
from moto import mock_aws

import app
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY
from tools.bench import quiet_request_log
from tools.devstack import ROOT, STAGE
from tools.localaws import Resources, provision

REGION = "eu-west-2"
PASSWORD = "capacity-" + "x" * 16
# Operations that take ReturnConsumedCapacity.
METERED = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
}
READ_UNIT, WRITE_UNIT = 4096, 1024
STATE = "gatehouse-capacity"


def item_size(value: Any) -> int:
    """A row's (or value's) size by DynamoDB's rules: names and strings in UTF-8 bytes, numbers
    about one byte per two significant digits plus one, 1 byte for a boolean or null, 3 bytes
    for a list or map plus 1 per element."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        digits = str(Decimal(value).normalize()).lstrip("-").replace(".", "")
        digits = digits.split("E")[0].strip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if isinstance(value, Binary):
        return len(cast("Any", value).value)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, dict):
        return 3 + sum(len(name.encode()) + item_size(inner) + 1 for name, inner in value.items())
    if isinstance(value, list):
        return 3 + sum(item_size(inner) + 1 for inner in value)
    if isinstance(value, set | frozenset):
        return sum(item_size(inner) for inner in value)
    raise TypeError(f"no DynamoDB size for {type(value).__name__}")


def row_size(row: dict[str, Any] | None) -> int:
    if not row:
        return 0
    return sum(len(name.encode()) + item_size(value) for name, value in row.items())


def units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


_WIRE = TypeDeserializer()


def plain(value: Any) -> Any:
    """A key or row in either of boto3's shapes (wire ``{"S": ...}`` or plain) as plain values."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in {"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"}:
            return _WIRE.deserialize(cast("Any", {tag: inner}))
    return value


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {name: plain(value) for name, value in row.items()}


@dataclass
class Call:
    operation: str
    reported: float = 0.0
    read_units: float = 0.0
    write_units: float = 0.0


@dataclass
class Meter:
    """The DynamoDB calls of the app's clients, with their consumed capacity (module docstring)."""

    probe: Any
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _row(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        found = self.probe.Table(table).get_item(Key=plain_row(key), ConsistentRead=True)
        return cast("dict[str, Any] | None", found.get("Item"))

    def _writes(self, operation: str, params: dict[str, Any]) -> list[tuple[str, str, Any]]:
        """(table, kind, key) of each row a write touches; kind: put, update, delete, check."""

        def key_of(item: dict[str, Any]) -> dict[str, Any]:
            return {name: item[name] for name in (PARTITION_KEY, SORT_KEY)}

        if operation == "PutItem":
            return [(params["TableName"], "put", key_of(params["Item"]))]
        if operation in {"UpdateItem", "DeleteItem"}:
            return [(params["TableName"], operation, params["Key"])]
        if operation == "TransactWriteItems":
            found = []
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                key = key_of(body["Item"]) if kind == "Put" else body["Key"]
                found.append((body["TableName"], kind, key))
            return found
        if operation == "BatchWriteItem":
            return [
                (
                    table,
                    "batch",
                    key_of(request["PutRequest"]["Item"])
                    if "PutRequest" in request
                    else request["DeleteRequest"]["Key"],
                )
                for table, requests in params["RequestItems"].items()
                for request in requests
            ]
        return []

    def before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        operation = str(model.name)
        if operation not in METERED:
            return
        params.setdefault("ReturnConsumedCapacity", "INDEXES")
        touched = self._writes(operation, params)
        context[STATE] = (dict(params), [(t, k, key, self._row(t, key)) for t, k, key in touched])

    def after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        operation = str(model.name)
        if operation not in METERED or STATE not in context:
            return
        params, touched = context.pop(STATE)
        call = Call(operation, reported=_reported(parsed.get("ConsumedCapacity")))
        if "Error" not in parsed:
            call.read_units = _read_units(operation, params, parsed)
            for table, kind, key, old in touched:
                new = self._row(table, key)
                call.write_units += _write_units(kind, old, new)
        with self.lock:
            self.calls.append(call)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Meter]:
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session(region_name=REGION)
        events = cast("Any", boto3.DEFAULT_SESSION).events
        events.register("before-parameter-build.dynamodb", self.before, unique_id=STATE + "-in")
        events.register("after-call.dynamodb", self.after, unique_id=STATE + "-out")
        try:
            yield self
        finally:
            events.unregister("before-parameter-build.dynamodb", unique_id=STATE + "-in")
            events.unregister("after-call.dynamodb", unique_id=STATE + "-out")

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[Call]]:
        start = len(self.calls)
        made: list[Call] = []
        try:
            yield made
        finally:
            made.extend(self.calls[start:])


def _reported(consumed: Any) -> float:
    if isinstance(consumed, dict):
        consumed = [consumed]
    return float(sum(Decimal(str(each.get("CapacityUnits", 0))) for each in consumed or []))


def _read_units(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> float:
    strong = bool(params.get("ConsistentRead"))
    factor = 1.0 if strong else 0.5
    if operation == "GetItem":
        return units(row_size(plain_row(parsed.get("Item") or {})), READ_UNIT) * factor
    if operation in {"Query", "Scan"}:
        total = sum(row_size(plain_row(row)) for row in parsed.get("Items", []))
        return units(total, READ_UNIT) * factor
    if operation == "BatchGetItem":
        read = 0.0
        for table, request in params["RequestItems"].items():
            rows = parsed.get("Responses", {}).get(table, [])
            sizes = [row_size(plain_row(row)) for row in rows]
            missing = len(request["Keys"]) - len(rows)
            each = 1.0 if request.get("ConsistentRead") else 0.5
            read += (sum(units(size, READ_UNIT) for size in sizes) + missing) * each
        return read
    if operation == "TransactGetItems":
        rows = [each.get("Item") or {} for each in parsed.get("Responses", [])]
        return float(sum(2 * units(row_size(plain_row(row)), READ_UNIT) for row in rows))
    return 0.0


def _write_units(kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> float:
    if kind in {"check", "ConditionCheck"}:
        return 2.0 * units(row_size(old), WRITE_UNIT)
    factor = 2 if kind in {"Put", "Update", "Delete"} else 1
    table = factor * units(max(row_size(old), row_size(new)), WRITE_UNIT)
    index = 0
    for each in INDEXES:
        before = None if old is None else old.get(each.partition_key)
        after = None if new is None else new.get(each.partition_key)
        if before is not None and after is not None and before == after:
            index += units(row_size(new), WRITE_UNIT)
            continue
        if before is not None:
            index += units(row_size(old), WRITE_UNIT)
        if after is not None:
            index += units(row_size(new), WRITE_UNIT)
    return float(table + index)


@dataclass(frozen=True)
class Measured:
    route: str
    operations: list[str]
    reported: float
    read_units: float
    write_units: float


def scenario(http: Any, meter: Meter, table: Any) -> list[Measured]:
    """Each request of a fixed scenario with the DynamoDB calls it made and their units."""
    measured: list[Measured] = []

    def send(
        route: str, status: int, body: Any = None, token: str | None = None, **more: str
    ) -> Any:
        method, path = route.split(" ", 1)
        path = path.split(",")[0]
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        headers.update(more)
        raw = b"" if body is None else json.dumps(body).encode()
        with meter.counting() as made:
            response = http.request(method, path.format(**ids), headers=headers, body=raw)
        if response.status_code != status:
            raise RuntimeError(f"{route}: {response.status_code} {response.body!r}")
        measured.append(
            Measured(
                route.format(id="{id}"),
                [call.operation for call in made],
                sum(call.reported for call in made),
                sum(call.read_units for call in made),
                sum(call.write_units for call in made),
            )
        )
        return response.json_body

    ids: dict[str, str] = {}
    credentials = {"username": "cap-user", "password": PASSWORD}
    send("POST /auth/signup", 201, credentials)
    login = {**credentials, "refreshTokenDelivery": "body"}
    signed_in = send("POST /auth/login", 200, login)
    send("POST /auth/login, wrong password", 401, {**login, "password": "wrong-password"})
    refreshed = send("POST /auth/refresh", 200, {"refreshToken": signed_in["refreshToken"]})
    token = refreshed["token"]
    send("GET /auth/user", 200, token=token)
    data = {"name": "a typical item", "status": "active", "data": {"note": "x" * 200, "n": 42}}
    ids["id"] = send("POST /items", 201, data, token=token)["id"]
    for _ in range(24):
        send("POST /items, more", 201, data, token=token)
    send("GET /items", 200, token=token)
    send("GET /items/{id}", 200, token=token)
    send("PATCH /items/{id}", 200, {"status": "pending"}, token=token, **{"If-Match": '"1"'})
    send("DELETE /items/{id}", 200, token=token)
    table.update_item(
        Key={PARTITION_KEY: "USER#cap-user", SORT_KEY: "PROFILE"},
        UpdateExpression="SET #role = :admin",
        ExpressionAttributeNames={"#role": "role"},
        ExpressionAttributeValues={":admin": "admin"},
    )
    send("GET /admin/items?status=active", 200, token=token)
    return [each for each in measured if not each.route.endswith(", more")]


def measure() -> list[Measured]:
    """The scenario in-process, on moto's in-process AWS (AWS_ENDPOINT_URL must be unset)."""
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(
        AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local"
    )
    with mock_aws(), quiet_request_log():
        session = boto3.Session(region_name=REGION)
        resources = Resources.for_stage(STAGE)
        provision(session, resources)
        meter = Meter(probe=boto3.Session(region_name=REGION).resource("dynamodb"))
        with meter.installed():
            dependencies = app.Dependencies()
            previous, app.dependencies = app.dependencies, dependencies
            try:
                http = Client(app.app, stage_name=STAGE, project_dir=str(ROOT)).http
                return scenario(
                    http, meter, session.resource("dynamodb").Table(resources.table_name)
                )
            finally:
                app.dependencies = previous


def print_table(rows: list[Measured]) -> None:
    lines = [("route", "calls", "operations", "moto CU", "RCU", "WCU")]
    for row in rows:
        lines.append(
            (
                row.route,
                str(len(row.operations)),
                ", ".join(row.operations),
                f"{row.reported:g}",
                f"{row.read_units:g}",
                f"{row.write_units:g}",
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(6)]
    for line in lines:
        print(
            "  ".join(f"{cell:<{width}}" for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    print(
        "\ncalls, operations: measured; moto CU: what moto reports (a constant per call); RCU/WCU:"
        " computed from the measured rows' sizes by DynamoDB's rules (tools/capacity.py)"
    )


def main() -> int:
    print_table(measure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
