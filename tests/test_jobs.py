"""The scheduled jobs (chalicelib/jobs.py): the nightly export and the hourly upload sweep under
moto, with the emulator's export (tools/emulator.py) installed; then the emulator's export layout
and a restore from it, on the emulator as ``make dev`` runs it."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from boto3.dynamodb.types import TypeDeserializer
from chalice.test import Client
from moto.dynamodb.responses import DynamoHandler

from chalicelib.jobs import (
    BACKUP_PREFIX,
    BackupFailed,
    BackupsOff,
    Export,
    Jobs,
    TableBackup,
    UploadSweep,
)
from chalicelib.stores import Stores
from chalicelib.table import create_table_request
from chalicelib.uploads import (
    PENDING_SECONDS,
    SWEEP_AFTER_SECONDS,
    Upload,
    UploadLimits,
    Uploads,
)
from tests.conftest import REGION, ROOT, FakeClock, account, owner_of
from tests.localstack import free_port
from tools import emulator
from tools.localaws import Resources, ensure_bucket, ensure_table

BACKUPS = "gatehouse-dev-backups"
NIGHT = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


class Kept(logging.Handler):
    """The records a logger emits during a test."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(r.levelname, r.getMessage(), getattr(r, "fields", {})) for r in self.records]


@pytest.fixture
def logged() -> Iterator[Kept]:
    kept = Kept()
    logger = logging.getLogger("chalicelib.jobs")
    logger.addHandler(kept)
    yield kept
    logger.removeHandler(kept)


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's DynamoDB exports as the emulator does it (AWS's layout, client tokens)."""
    monkeypatch.setattr(
        DynamoHandler, "export_table_to_point_in_time", emulator.export_table_to_point_in_time
    )


@pytest.fixture
def backed_up(aws: boto3.Session, resources: Resources, exports: None) -> Resources:
    """The table with PITR on (as deployed) and the backups bucket."""
    aws.client("dynamodb").update_continuous_backups(
        TableName=resources.table_name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    ensure_bucket(aws, BACKUPS)
    return resources


def backup(
    aws: boto3.Session, resources: Resources, clock: FakeClock, *, bucket: str = BACKUPS
) -> TableBackup:
    return TableBackup(
        aws.client("dynamodb"), table_name=resources.table_name, bucket=bucket, clock=clock
    )


def test_the_backup_exports_the_table_to_the_backups_bucket(
    aws: boto3.Session, backed_up: Resources, logged: Kept
) -> None:
    summary = backup(aws, backed_up, FakeClock(NIGHT)).run()
    assert summary.export.status == "IN_PROGRESS"  # DynamoDB exports asynchronously
    assert summary.previous is None
    described = aws.client("dynamodb").describe_export(ExportArn=summary.export.arn)
    export = described["ExportDescription"]
    assert (export["S3Bucket"], export["S3Prefix"]) == (BACKUPS, BACKUP_PREFIX)
    assert (export["ExportFormat"], export["ExportType"]) == ("DYNAMODB_JSON", "FULL_EXPORT")
    assert export["ExportStatus"] == "COMPLETED"
    manifest = aws.client("s3").get_object(Bucket=BACKUPS, Key=export["ExportManifest"])
    assert json.loads(manifest["Body"].read())["exportArn"] == summary.export.arn
    assert export["ExportManifest"].startswith(f"{BACKUP_PREFIX}/AWSDynamoDB/")
    ((level, message, fields),) = logged.lines()
    assert (level, message) == ("INFO", "backup started")
    assert fields["exportArn"] == summary.export.arn
    assert fields["status"] == "IN_PROGRESS"
    assert fields["destination"] == f"s3://{BACKUPS}/{BACKUP_PREFIX}/"


def test_a_rerun_the_same_night_is_the_same_export_and_the_next_night_a_new_one(
    aws: boto3.Session, backed_up: Resources
) -> None:
    clock = FakeClock(NIGHT)
    first = backup(aws, backed_up, clock).run()
    clock.advance(hours=2)
    again = backup(aws, backed_up, clock).run()
    assert again.export.arn == first.export.arn
    assert again.previous is None
    client = aws.client("dynamodb")
    table_arn = client.describe_table(TableName=backed_up.table_name)["Table"]["TableArn"]
    assert len(client.list_exports(TableArn=table_arn)["ExportSummaries"]) == 1
    clock.advance(days=1)
    tomorrow = backup(aws, backed_up, clock).run()
    assert tomorrow.export.arn != first.export.arn
    assert tomorrow.previous is not None
    assert (tomorrow.previous.arn, tomorrow.previous.status) == (first.export.arn, "COMPLETED")


def test_a_failed_previous_export_raises_after_tonights_has_started(
    aws: boto3.Session, backed_up: Resources, logged: Kept
) -> None:
    clock = FakeClock(NIGHT)
    # Last night's export went to a bucket that is not there: DynamoDB fails it after starting.
    failed = backup(aws, backed_up, clock, bucket="gatehouse-gone-backups").run()
    clock.advance(days=1)
    with pytest.raises(BackupFailed, match="S3NoSuchBucket"):
        backup(aws, backed_up, clock).run()
    client = aws.client("dynamodb")
    table_arn = client.describe_table(TableName=backed_up.table_name)["Table"]["TableArn"]
    statuses = {
        summary["ExportArn"]: summary["ExportStatus"]
        for summary in client.list_exports(TableArn=table_arn)["ExportSummaries"]
    }
    assert statuses.pop(failed.export.arn) == "FAILED"
    assert list(statuses.values()) == ["COMPLETED"]  # tonight's went ahead all the same
    level, _, fields = logged.lines()[-1]
    assert level == "ERROR"
    assert (fields["previousArn"], fields["failureCode"]) == (failed.export.arn, "S3NoSuchBucket")


def test_without_a_backups_bucket_the_backup_fails() -> None:
    with pytest.raises(BackupsOff, match="BACKUPS_BUCKET"):
        Jobs(backup=None, sweep=None).backup()
    assert Jobs(backup=None, sweep=None).sweep() is None  # no uploads, nothing to sweep


def test_the_scheduled_handlers_run_the_jobs(
    client: Client, backed_up: Resources, aws: boto3.Session, logged: Kept
) -> None:
    """``nightly_backup`` and ``upload_sweep`` as Lambda runs them, with the dev stage's env."""
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    assert client.lambda_.invoke("nightly_backup", event).payload is None
    assert client.lambda_.invoke("upload_sweep", event).payload is None
    (backup_line, sweep_line) = logged.lines()
    assert backup_line[:2] == ("INFO", "backup started")
    assert backup_line[2]["destination"] == f"s3://{BACKUPS}/{BACKUP_PREFIX}/"
    assert sweep_line == (
        "INFO",
        "upload sweep done",
        {"found": 0, "deleted": 0, "kept": 0, "more": False},
    )
    keys = objects(aws, BACKUPS)
    assert any(key.endswith("/manifest-summary.json") for key in keys), keys


@pytest.fixture
def owners(stores: Stores) -> Stores:
    stores.users.add(account("alice"))
    stores.users.add(account("bob"))
    stores.users.add(account("carol"))
    return stores


def uploads_service(stores: Stores, aws: boto3.Session, bucket: str, clock: FakeClock) -> Uploads:
    return Uploads(
        stores.uploads,
        aws.client("s3"),
        bucket=bucket,
        limits=UploadLimits(count=100, bytes=10**9, starts=1000, window=60),
        counters=stores.limits,
        clock=clock,
    )


def posted(aws: boto3.Session, bucket: str, uploads: Uploads, owner: str) -> Upload:
    """An upload started and its file posted (as the browser does), not yet completed."""
    upload, _ = uploads.start(
        owner_of(owner), filename="cat.png", content_type="image/png", size=4, kind="image"
    )
    aws.client("s3").put_object(
        Bucket=bucket, Key=upload.key, Body=b"\x89PNG", ContentType="image/png"
    )
    return upload


def objects(aws: boto3.Session, bucket: str) -> set[str]:
    listed = aws.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return {entry["Key"] for entry in listed}


def test_the_sweep_deletes_abandoned_uploads_and_keeps_the_rest(
    owners: Stores, aws: boto3.Session, resources: Resources, logged: Kept
) -> None:
    bucket, clock = resources.uploads_bucket, FakeClock(NIGHT)
    uploads = uploads_service(owners, aws, bucket, clock)
    abandoned = [posted(aws, bucket, uploads, owner) for owner in ("alice", "bob", "alice")]
    ready = posted(aws, bucket, uploads, "alice")
    uploads.complete(owner_of("alice"), ready.upload_id)
    clock.advance(seconds=PENDING_SECONDS)
    # Just past its deadline: a request that checked it a moment ago may still be using it.
    late = posted(aws, bucket, uploads, "bob")
    clock.advance(seconds=SWEEP_AFTER_SECONDS)
    # (carol's start sweeps nothing on the way: the abandoned ones are alice's and bob's)
    fresh = posted(aws, bucket, uploads, "carol")
    sweep = UploadSweep(owners.uploads, aws.client("s3"), bucket=bucket, clock=clock)

    summary = sweep.run()

    assert (summary.found, summary.deleted, summary.more) == (3, 3, False)
    for upload in abandoned:
        assert owners.uploads.get(owner_of(upload.owner), upload.upload_id) is None
    assert objects(aws, bucket) == {ready.key, late.key, fresh.key}
    for upload in (ready, late, fresh):
        assert owners.uploads.get(owner_of(upload.owner), upload.upload_id) is not None
    assert logged.lines()[-1] == (
        "INFO",
        "upload sweep done",
        {"found": 3, "deleted": 3, "kept": 0, "more": False},
    )
    again = sweep.run()
    assert (again.found, again.deleted) == (0, 0)
    assert objects(aws, bucket) == {ready.key, late.key, fresh.key}


def test_a_run_sweeps_a_bounded_number_and_the_next_runs_the_rest(
    owners: Stores, aws: boto3.Session, resources: Resources
) -> None:
    bucket, clock = resources.uploads_bucket, FakeClock(NIGHT)
    uploads = uploads_service(owners, aws, bucket, clock)
    for _ in range(5):
        posted(aws, bucket, uploads, "alice")
    clock.advance(seconds=PENDING_SECONDS + SWEEP_AFTER_SECONDS)
    sweep = UploadSweep(
        owners.uploads, aws.client("s3"), bucket=bucket, clock=clock, page_size=2, max_pages=2
    )
    first = sweep.run()
    assert (first.deleted, first.more) == (4, True)
    second = sweep.run()
    assert (second.deleted, second.more) == (1, False)
    assert objects(aws, bucket) == set()
    assert owners.uploads.list(owner_of("alice"), limit=10, cursor=None).uploads == []


def test_an_upload_completed_after_the_index_was_read_is_kept(
    owners: Stores, aws: boto3.Session, resources: Resources
) -> None:
    """The index is eventually consistent: the sweep re-reads each record before deleting."""
    bucket, clock = resources.uploads_bucket, FakeClock(NIGHT)
    uploads = uploads_service(owners, aws, bucket, clock)
    upload = posted(aws, bucket, uploads, "alice")

    class StaleIndex:
        """The repository, except that the index still lists the upload once it is ready."""

        def expired(self, at: int, *, limit: int, cursor: str | None) -> Any:
            page = owners.uploads.expired(at, limit=limit, cursor=cursor)
            owners.uploads.mark_ready(owner_of("alice"), upload.upload_id)
            return page

        def __getattr__(self, name: str) -> Any:
            return getattr(owners.uploads, name)

    clock.advance(seconds=PENDING_SECONDS + SWEEP_AFTER_SECONDS)
    summary = UploadSweep(StaleIndex(), aws.client("s3"), bucket=bucket, clock=clock).run()
    assert (summary.found, summary.deleted, summary.kept) == (1, 0, 1)
    assert objects(aws, bucket) == {upload.key}


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """``python -m tools.emulator`` on a free port, as make dev runs it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen(
        [sys.executable, "-m", "tools.emulator", "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, "the emulator exited"
            try:
                if requests.get(f"{url}/moto-api/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the emulator did not answer"
                time.sleep(0.1)
        yield url
    finally:
        child.terminate()
        child.wait(timeout=30)


def until(check: Any, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.1)
    return found


def test_the_emulator_lays_an_export_out_as_dynamodb_does_and_it_restores(
    emulator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    session = boto3.Session(region_name=REGION)
    table_name = "gatehouse-jobs-test"
    ensure_table(session, table_name)
    ensure_bucket(session, BACKUPS)
    dynamodb, s3 = session.client("dynamodb"), session.client("s3")
    dynamodb.update_continuous_backups(
        TableName=table_name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )
    rows = [
        {"pk": {"S": "USER#alice"}, "sk": {"S": "PROFILE"}, "n": {"N": "7"}},
        {"pk": {"S": "USER#alice"}, "sk": {"S": "ITEM#1"}, "tags": {"L": [{"S": "x"}]}},
    ]
    for row in rows:
        dynamodb.put_item(TableName=table_name, Item=row)  # type: ignore[arg-type]
    clock = FakeClock(datetime.now(UTC))
    summary = TableBackup(dynamodb, table_name=table_name, bucket=BACKUPS, clock=clock).run()
    export_id = summary.export.arn.rsplit("/export/", 1)[1]
    folder = f"{BACKUP_PREFIX}/AWSDynamoDB/{export_id}"
    keys = objects(session, BACKUPS)
    (data_key,) = [key for key in keys if key.startswith(f"{folder}/data/")]
    assert data_key.endswith(".json.gz")
    assert keys == {
        f"{folder}/_started",
        f"{folder}/manifest-summary.json",
        f"{folder}/manifest-summary.checksum",
        f"{folder}/manifest-files.json",
        f"{folder}/manifest-files.checksum",
        data_key,
    }
    body = s3.get_object(Bucket=BACKUPS, Key=data_key)["Body"].read()
    lines = gzip.decompress(body).decode().splitlines()
    assert sorted(json.loads(line)["Item"]["sk"]["S"] for line in lines) == ["ITEM#1", "PROFILE"]
    assert {json.dumps(json.loads(line)["Item"], sort_keys=True) for line in lines} == {
        json.dumps(row, sort_keys=True) for row in rows
    }
    summary_manifest = json.loads(
        s3.get_object(Bucket=BACKUPS, Key=f"{folder}/manifest-summary.json")["Body"].read()
    )
    assert summary_manifest["exportArn"] == summary.export.arn
    assert summary_manifest["itemCount"] == 2
    assert summary_manifest["outputFormat"] == "DYNAMODB_JSON"
    assert summary_manifest["manifestFilesS3Key"] == f"{folder}/manifest-files.json"
    files = s3.get_object(Bucket=BACKUPS, Key=f"{folder}/manifest-files.json")["Body"].read()
    (entry,) = [json.loads(line) for line in files.decode().splitlines()]
    assert (entry["dataFileS3Key"], entry["itemCount"]) == (data_key, 2)
    assert s3.head_object(Bucket=BACKUPS, Key=data_key)["ETag"].strip('"') == entry["etag"]
    described = dynamodb.describe_export(ExportArn=summary.export.arn)["ExportDescription"]
    assert described["ExportStatus"] == "COMPLETED"
    assert described["ExportManifest"] == f"{folder}/manifest-summary.json"

    # The restore the README describes: import the data files into a new table.
    restored = f"{table_name}-restored"
    started = dynamodb.import_table(
        S3BucketSource={"S3Bucket": BACKUPS, "S3KeyPrefix": f"{folder}/data/"},
        InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP",
        TableCreationParameters=restore_parameters(restored),
    )
    arn = started["ImportTableDescription"]["ImportArn"]
    until(
        lambda: (
            dynamodb.describe_import(ImportArn=arn)["ImportTableDescription"]["ImportStatus"]
            == "COMPLETED"
        ),
        "the import",
    )
    scanned = dynamodb.scan(TableName=restored)["Items"]
    assert plain(scanned) == plain(rows)
    # A re-run the same day is the same export, now complete; nothing new is written.
    rerun = TableBackup(dynamodb, table_name=table_name, bucket=BACKUPS, clock=clock).run()
    assert rerun.export == Export(summary.export.arn, "COMPLETED")
    assert objects(session, BACKUPS) == keys


def restore_parameters(table_name: str) -> Any:
    """The new table's definition, as README's restore builds it."""
    parameters = create_table_request(table_name)
    parameters.pop("StreamSpecification")
    return parameters


def plain(rows: Any) -> dict[str, dict[str, Any]]:
    """DynamoDB JSON rows as Python values, by sort key."""
    deserialise = TypeDeserializer().deserialize
    return {
        row["sk"]["S"]: {name: deserialise(value) for name, value in row.items()} for row in rows
    }
