"""The scheduled jobs: the nightly export of the table and the hourly sweep of abandoned uploads.

``app.py`` runs them on a schedule (``nightly_backup`` at 03:00 UTC, ``upload_sweep`` every hour)
and ``make job NAME=backup|sweep`` runs them by hand against the local stack. Each is idempotent,
logs one summary line (JSON, ``chalicelib/logs.py``) and raises when it fails, so the function's
error alarm fires.

**Backup** (``TableBackup``): a DynamoDB export to point in time (the table's PITR is on) of the
whole table, as ``DYNAMODB_JSON``, into the backups bucket under ``backups/database/``. DynamoDB
lays it out as ``backups/database/AWSDynamoDB/<exportId>/``: ``manifest-summary.json``,
``manifest-files.json``, ``data/*.json.gz`` (one ``{"Item": ...}`` per line) and ``_started``;
the bucket's lifecycle rule moves it to Glacier at 90 days. The export runs asynchronously in
DynamoDB: the job starts it and logs its ARN and state. Its ``ClientToken`` is derived from the
table and the UTC date, so a re-run the same night (DynamoDB keeps a token for 8 hours) is the
same export, not a second one. The job also looks at the export before this one: if it failed,
the summary line is an error naming its failure and the job raises (``BackupFailed``), after
today's export has been started all the same. README ("Scheduled jobs") says how to restore.

**Upload sweep** (``UploadSweep``): a pending upload whose deadline (``uploads.PENDING_SECONDS``
after its start) passed more than ``uploads.SWEEP_AFTER_SECONDS`` ago loses its S3 object, then
its record. Pending records carry no TTL, so nothing but a sweep removes them and an object can
never outlive its record unseen; they are found through their sparse index entry (``gsi1``,
``keys.PENDING_UPLOAD`` / deadline), earliest first, at most ``max_pages`` pages a run, so a
backlog is worked off over a few runs rather than past the Lambda's timeout. Each one is read
again (consistently) before anything is deleted: an upload completed meanwhile is kept.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, Final

from chalicelib.clock import Clock, utc_now
from chalicelib.identity import Owner
from chalicelib.uploads import SWEEP_AFTER_SECONDS, UploadRepository, sweepable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

BACKUP_PREFIX = "backups/database"
EXPORT_FORMAT: Final = "DYNAMODB_JSON"


class BackupFailed(Exception):
    """The table's previous export failed."""


class BackupsOff(Exception):
    """No backups bucket is set (BACKUPS_BUCKET), so there is nowhere to export to."""


@dataclass(frozen=True)
class Export:
    arn: str
    status: str


@dataclass(frozen=True)
class BackupSummary:
    export: Export
    previous: Export | None


class TableBackup:
    def __init__(
        self,
        dynamodb: DynamoDBClient,
        *,
        table_name: str,
        bucket: str,
        prefix: str = BACKUP_PREFIX,
        clock: Clock = utc_now,
    ) -> None:
        self._dynamodb = dynamodb
        self._table_name = table_name
        self._bucket = bucket
        self._prefix = prefix
        self._clock = clock

    def run(self) -> BackupSummary:
        """Start tonight's export (or find it started), then check the one before it."""
        table_arn = self._dynamodb.describe_table(TableName=self._table_name)["Table"]["TableArn"]
        started = self._dynamodb.export_table_to_point_in_time(
            TableArn=table_arn,
            S3Bucket=self._bucket,
            S3Prefix=self._prefix,
            ExportFormat=EXPORT_FORMAT,
            ExportType="FULL_EXPORT",
            ClientToken=self.client_token(table_arn),
        )["ExportDescription"]
        export = Export(started["ExportArn"], started["ExportStatus"])
        previous = self._previous(table_arn, export)
        fields: dict[str, Any] = {
            "table": self._table_name,
            "destination": f"s3://{self._bucket}/{self._prefix}/",
            "exportArn": export.arn,
            "status": export.status,
            "previousArn": previous and previous.arn,
            "previousStatus": previous and previous.status,
        }
        if previous is None or previous.status != "FAILED":
            logger.info("backup started", extra={"fields": fields})
            return BackupSummary(export, previous)
        failure = self._dynamodb.describe_export(ExportArn=previous.arn)["ExportDescription"]
        fields["failureCode"] = failure.get("FailureCode")
        fields["failureMessage"] = failure.get("FailureMessage")
        logger.error("backup started; the previous export failed", extra={"fields": fields})
        raise BackupFailed(f"export {previous.arn} failed: {failure.get('FailureCode')}")

    def client_token(self, table_arn: str) -> str:
        """One per table and UTC date: a re-run the same night asks for the same export."""
        table = hashlib.sha256(table_arn.encode()).hexdigest()[:16]
        return f"nightly-{self._clock().astimezone(UTC).date().isoformat()}-{table}"

    def _previous(self, table_arn: str, current: Export) -> Export | None:
        """The table's newest export other than ``current``. Export ids begin with their start
        time in milliseconds (``01700000000000-1a2b3c4d``), so they sort as they started."""
        exports: list[Export] = []
        request: dict[str, Any] = {"TableArn": table_arn, "MaxResults": 25}
        while True:
            page = self._dynamodb.list_exports(**request)
            exports += [
                Export(summary["ExportArn"], summary["ExportStatus"])
                for summary in page.get("ExportSummaries", [])
                if summary["ExportArn"] != current.arn
            ]
            if not page.get("NextToken"):
                break
            request["NextToken"] = page["NextToken"]
        return max(exports, key=lambda export: export.arn.rsplit("/", 1)[-1], default=None)


@dataclass(frozen=True)
class SweepSummary:
    found: int
    deleted: int
    kept: int
    more: bool


class UploadSweep:
    def __init__(
        self,
        uploads: UploadRepository,
        s3: S3Client,
        *,
        bucket: str,
        clock: Clock = utc_now,
        page_size: int = 50,
        # A run stays well within the Lambda's timeout (each upload is three AWS calls);
        # a larger backlog is worked off over the next runs.
        max_pages: int = 4,
    ) -> None:
        self._uploads = uploads
        self._s3 = s3
        self._bucket = bucket
        self._clock = clock
        self._page_size = page_size
        self._max_pages = max_pages

    def run(self) -> SweepSummary:
        """Delete the objects and records of pending uploads long past their deadline."""
        now = self._clock()
        cutoff = int((now - timedelta(seconds=SWEEP_AFTER_SECONDS)).timestamp())
        found = deleted = 0
        cursor: str | None = None
        for _ in range(self._max_pages):
            page = self._uploads.expired(cutoff, limit=self._page_size, cursor=cursor)
            for candidate in page.uploads:
                found += 1
                owner = Owner(candidate.owner, candidate.owner_id)
                # The index is read eventually consistently; the record itself is not.
                upload = self._uploads.get(owner, candidate.upload_id)
                if upload is None or not sweepable(upload, now):
                    continue
                # The object first: a record left by a failure here is found again next time.
                self._s3.delete_object(Bucket=self._bucket, Key=upload.key)
                self._uploads.delete(owner, upload.upload_id)
                deleted += 1
            cursor = page.cursor
            if cursor is None:
                break
        summary = SweepSummary(found, deleted, found - deleted, more=cursor is not None)
        logger.info(
            "upload sweep done",
            extra={
                "fields": {
                    "found": summary.found,
                    "deleted": summary.deleted,
                    "kept": summary.kept,
                    "more": summary.more,
                }
            },
        )
        return summary


class Jobs:
    """The scheduled jobs of one container; None where the part of the app they serve is off."""

    def __init__(self, *, backup: TableBackup | None, sweep: UploadSweep | None) -> None:
        self._backup = backup
        self._sweep = sweep

    def backup(self) -> BackupSummary:
        if self._backup is None:
            # A deployment without backups is a misconfiguration: fail, so the alarm fires.
            raise BackupsOff("BACKUPS_BUCKET is not set: the table is not being backed up")
        return self._backup.run()

    def sweep(self) -> SweepSummary | None:
        if self._sweep is None:
            # Uploads are off (UPLOADS_BUCKET unset): there are none to sweep.
            logger.info("upload sweep skipped: uploads are off")
            return None
        return self._sweep.run()
