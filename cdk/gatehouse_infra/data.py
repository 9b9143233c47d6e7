"""The data unit: the single table, the uploads bucket, the backups bucket and their access logs."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from gatehouse_infra.config import BillingMode
from gatehouse_infra.nag import acknowledge

UPLOAD_TEMP_PREFIX = "uploads/temp/"
BACKUP_PREFIX = "backups/"


def private_bucket(scope: Construct, id: str, **kwargs: Any) -> s3.Bucket:
    """A bucket nobody outside the account reaches: no public access, TLS only, encrypted."""
    return s3.Bucket(
        scope,
        id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        **kwargs,
    )


class Data(Construct):
    """What outlives every deployment: all retained, the table deletion-protected.

    ``existing_table`` (a name and its stream's ARN) and ``existing_uploads_bucket`` adopt what a
    previous deployment retained (``make destroy``) or the original system's table, instead of
    creating them: CloudFormation cannot create a fixed-name resource that already exists.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        table_name: str,
        billing: BillingMode,
        uploads_bucket_name: str,
        existing_table: tuple[str, str] | None = None,
        existing_uploads_bucket: bool = False,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.key = key
        self.table: dynamodb.ITable = (
            self._table(table_name, billing)
            if existing_table is None
            else dynamodb.Table.from_table_attributes(
                self,
                "Table",
                table_name=existing_table[0],
                table_stream_arn=existing_table[1],
                global_indexes=[index.name for index in INDEXES],
            )
        )
        self.access_logs = private_bucket(
            self,
            "AccessLogs",
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
        )
        acknowledge(self.access_logs, {"S1": "This is the access-log bucket itself."})
        self.uploads: s3.IBucket = (
            s3.Bucket.from_bucket_name(self, "Uploads", uploads_bucket_name)
            if existing_uploads_bucket
            else self._uploads(uploads_bucket_name)
        )
        self.backups = private_bucket(
            self,
            "Backups",
            removal_policy=cdk.RemovalPolicy.RETAIN,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="backups/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="archive-backups",
                    prefix=BACKUP_PREFIX,
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.GLACIER,
                            transition_after=cdk.Duration.days(90),
                        )
                    ],
                    noncurrent_version_expiration=cdk.Duration.days(365),
                )
            ],
        )

    def _uploads(self, name: str) -> s3.Bucket:
        return private_bucket(
            self,
            "Uploads",
            bucket_name=name,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="uploads/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="temporary-files",
                    prefix=UPLOAD_TEMP_PREFIX,
                    expiration=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="abandoned-multipart",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
            ],
        )

    def _table(self, name: str, billing: BillingMode) -> dynamodb.Table:
        def attribute(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)

        # The seed's 1 RCU / 1 WCU is the cheapest steady load; on-demand costs nothing idle.
        provisioned = billing == "provisioned"
        capacity = 1 if provisioned else None
        table = dynamodb.Table(
            self,
            "Table",
            table_name=name,
            partition_key=attribute(PARTITION_KEY),
            sort_key=attribute(SORT_KEY),
            billing_mode=(
                dynamodb.BillingMode.PROVISIONED
                if provisioned
                else dynamodb.BillingMode.PAY_PER_REQUEST
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            read_capacity=capacity,
            write_capacity=capacity,
        )
        for index in INDEXES:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=attribute(index.partition_key),
                sort_key=attribute(index.sort_key),
                projection_type=dynamodb.ProjectionType.ALL,
                read_capacity=capacity,
                write_capacity=capacity,
            )
        return table
