"""Adopting the original system's table: ``tools.migrate`` readies it, then the API serves it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest

import app as app_module
from chalicelib.settings import Settings
from chalicelib.users import DynamoDBUserRepository
from tests.conftest import ROOT, Api, add_legacy, node_scrypt_hashes
from tools.localaws import Resources
from tools.migrate import TimedOut, Wait, main

# The original system's table as its Data stack made it: pk/sk strings, 1 RCU/WCU provisioned,
# no stream, no index, no TTL (and, here, neither PITR nor deletion protection).
ORIGINAL = "production-data-table"


def create_original(aws: boto3.Session, name: str = ORIGINAL, **extra: Any) -> Any:
    aws.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        **extra,
    )
    return aws.resource("dynamodb").Table(name)


def state(aws: boto3.Session, name: str = ORIGINAL) -> dict[str, Any]:
    """Everything the tool may change: the table's settings and its rows."""
    client = aws.client("dynamodb")
    table = client.describe_table(TableName=name)["Table"]
    backups = client.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    return {
        "protected": table.get("DeletionProtectionEnabled"),
        "stream": table.get("StreamSpecification"),
        "indexes": table.get("GlobalSecondaryIndexes"),
        "definitions": table["AttributeDefinitions"],
        "ttl": client.describe_time_to_live(TableName=name)["TimeToLiveDescription"],
        "pitr": backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
        "rows": sorted(
            client.scan(TableName=name)["Items"], key=lambda row: json.dumps(row, sort_keys=True)
        ),
    }


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["--table", ORIGINAL, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_original_table_is_migrated_dry_then_applied_then_served(
    aws: boto3.Session,
    resources: Resources,
    dependencies: app_module.Dependencies,
    api: Api,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = create_original(aws)
    users = DynamoDBUserRepository(table)
    alice_hash, bob_hash = node_scrypt_hashes(["alice's old password", "bob's old password"])
    add_legacy(users, "alice", alice_hash)
    add_legacy(users, "bob", bob_hash)
    before = state(aws)

    status, out, _ = run(capsys)
    assert status == 0
    assert out.splitlines() == [
        "Would: Enable deletion protection",
        "Would: Enable point-in-time recovery",
        "Would: Enable the stream (NEW_AND_OLD_IMAGES)",
        "Would: Enable TTL on expiresAt",
        "Would: Create index gsi1 (gsi1pk, gsi1sk; all attributes), provisioned like the table: "
        "1 read and 1 write capacity units",
        "Would: give 2 profiles an id and stamp 0 rows",
        f"Dry run: table {ORIGINAL} unchanged. Run again with --apply to do this.",
    ]
    assert state(aws) == before

    status, out, _ = run(capsys, "--apply")
    assert status == 0
    assert "Create index gsi1 (gsi1pk, gsi1sk; all attributes)" in out
    assert out.splitlines()[-2:] == [
        "2 profiles got an id; 0 rows stamped",
        f"Done: table {ORIGINAL} has what the app needs.",
    ]
    after = state(aws)
    assert after["stream"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    (index,) = after["indexes"]
    assert (index["IndexName"], index["IndexStatus"]) == ("gsi1", "ACTIVE")
    assert index["KeySchema"] == [
        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert after["ttl"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expiresAt"}
    assert after["pitr"] == "ENABLED"
    assert after["protected"] is True
    alice = users.get("alice")
    assert alice is not None
    assert alice.user_id is not None
    assert alice.password_hash == alice_hash

    for args in ((), ("--apply",)):
        status, out, _ = run(capsys, *args)
        assert (status, out) == (0, f"Nothing to do: table {ORIGINAL} has what the app needs.\n")
    assert state(aws) == after

    # Served by the API: the app's settings name the adopted table.
    stage = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]
    settings = Settings.from_env(stage["environment_variables"])
    dependencies.settings = replace(settings, table_name=ORIGINAL)
    token = api.login("alice", "alice's old password")
    profile = api.get("/auth/user", token)
    assert profile.status_code == 200
    assert profile.json_body["username"] == "alice"
    upgraded = users.get("alice")
    assert upgraded is not None
    assert upgraded.password_hash.startswith("$scrypt$")
    assert upgraded.user_id == alice.user_id
    assert api.login("alice", "alice's old password")
    bob = users.get("bob")
    assert bob is not None
    assert bob.password_hash == bob_hash  # untouched until bob logs in


def test_a_table_with_other_keys_is_refused_unchanged(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.client("dynamodb").create_table(
        TableName=ORIGINAL,
        KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    before = state(aws)
    status, out, err = run(capsys, "--apply")
    assert (status, out) == (1, "")
    assert "keyed by user_id (S)" in err
    assert "partition key pk and sort key sk, both strings" in err
    assert state(aws) == before


def test_a_stream_or_ttl_taken_otherwise_is_refused_with_what_to_do(
    aws: boto3.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    create_original(aws, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    aws.client("dynamodb").update_time_to_live(
        TableName=ORIGINAL, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    before = state(aws)
    status, out, err = run(capsys, "--apply")
    assert (status, out) == (1, "")
    assert "stream of view type KEYS_ONLY" in err
    assert "--stream-specification StreamEnabled=false" in err
    assert "expires rows by 'ttl'" in err
    assert "Enabled=false,AttributeName=ttl" in err
    # Nothing else was done either: PITR, which it could have enabled, is still off.
    assert state(aws) == before


def test_a_missing_table_is_refused(aws: boto3.Session, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys)
    assert status == 1
    assert f"no table {ORIGINAL!r}" in err


def test_a_wait_ends_at_its_bound() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    wait = Wait(timeout=60, interval=10, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(TimedOut, match="index gsi1: not finished after 1 minutes"):
        wait.until(lambda: False, "index gsi1")
    assert sleeps == [10.0] * 6
