"""The data unit: the single table, the uploads bucket, the backups bucket and their access logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from chalicelib.objectkeys import UPLOAD_PREFIX
from chalicelib.table import INDEXES, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from gatehouse_infra.config import BillingMode
from gatehouse_infra.nag import acknowledge

UPLOAD_TEMP_PREFIX = "uploads/temp/"
BACKUP_PREFIX = "backups/"
# Provisioned billing's auto scaling keeps consumed capacity near this share of provisioned.
TARGET_UTILIZATION_PERCENT = 70
# uploadsVersioning: how long a replaced or deleted file's old version is kept (the window in
# which a mistake can be undone), and so how long after an account's deletion its files linger.
NONCURRENT_UPLOAD_DAYS = 30
# Intelligent-Tiering: objects below 128 KB are never moved and pay no monitoring fee; moving
# them would only cost the transition request. Above it, $0.0025 per 1,000 objects a month buys
# 40 % off after 30 days without access and 68 % off after 90.
INTELLIGENT_TIERING_MIN_BYTES = 128 * 1024
INTELLIGENT_TIERING_AFTER = cdk.Duration.days(0)


def private_bucket(
    scope: Construct, id: str, *, key: kms.IKey | None = None, **kwargs: Any
) -> s3.Bucket:
    """A bucket nobody outside the account reaches: no public access, TLS only, encrypted (with
    ``key``, SSE-KMS under it with an S3 bucket key, which cuts the KMS requests to one per
    bucket key lifetime instead of one per object; otherwise SSE-S3)."""
    encryption: dict[str, Any] = (
        {"encryption": s3.BucketEncryption.S3_MANAGED}
        if key is None
        else {
            "encryption": s3.BucketEncryption.KMS,
            "encryption_key": key,
            "bucket_key_enabled": True,
        }
    )
    return s3.Bucket(
        scope,
        id,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        **encryption,
        enforce_ssl=True,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        **kwargs,
    )


class Data(Construct):
    """What outlives every deployment: all retained, the table deletion-protected.

    ``existing_table`` (a name and its stream's ARN) and ``existing_uploads_bucket`` adopt what a
    previous deployment retained (``make destroy``) or the original system's table, instead of
    creating them: CloudFormation cannot create a fixed-name resource that already exists.

    The table is a global table (``AWS::DynamoDB::GlobalTable``) whether or not it has replicas,
    so adding or removing ``replica_regions`` later updates it in place. ``key`` (the ``kmsKey``
    switch's multi-Region key) encrypts the table, every replica (``replica_key_arns``: the key's
    replica in each region), the uploads and backups buckets; it is exposed as ``key`` for the
    other units to encrypt with.
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
        replica_regions: tuple[str, ...] = (),
        min_capacity: int = 1,
        max_capacity: int = 10,
        uploads_versioning: bool = False,
        key: kms.IKey | None = None,
        replica_key_arns: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.key = key
        self.table: dynamodb.ITable = (
            self._table(
                table_name,
                billing,
                replica_regions=replica_regions,
                min_capacity=min_capacity,
                max_capacity=max_capacity,
                key=key,
                replica_key_arns=dict(replica_key_arns or {}),
            )
            if existing_table is None
            else dynamodb.Table.from_table_attributes(
                self,
                "Table",
                table_name=existing_table[0],
                table_stream_arn=existing_table[1],
                global_indexes=[index.name for index in INDEXES],
                encryption_key=key,
            )
        )
        # S3 delivers server access logs only to a bucket under SSE-S3, never SSE-KMS: this one
        # keeps S3's own key whatever kmsKey says.
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
            else self._uploads(uploads_bucket_name, versioned=uploads_versioning, key=key)
        )
        self.backups = private_bucket(
            self,
            "Backups",
            key=key,
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

    def _uploads(self, name: str, *, versioned: bool, key: kms.IKey | None) -> s3.Bucket:
        rules = [
            s3.LifecycleRule(
                id="temporary-files",
                prefix=UPLOAD_TEMP_PREFIX,
                expiration=cdk.Duration.days(1),
            ),
            s3.LifecycleRule(
                id="abandoned-multipart",
                abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
            ),
            # Users' files (not the temporary prefix, which expires in a day) above 128 KB:
            # smaller ones would pay the transition and never be tiered.
            s3.LifecycleRule(
                id="intelligent-tiering",
                prefix=UPLOAD_PREFIX,
                object_size_greater_than=INTELLIGENT_TIERING_MIN_BYTES,
                transitions=[
                    s3.Transition(
                        storage_class=s3.StorageClass.INTELLIGENT_TIERING,
                        transition_after=INTELLIGENT_TIERING_AFTER,
                    )
                ],
            ),
        ]
        if versioned:
            rules.append(
                s3.LifecycleRule(
                    id="noncurrent-versions",
                    # A deleted or replaced file stays recoverable this long, then is gone; a
                    # delete marker left with no versions behind it is removed.
                    noncurrent_version_expiration=cdk.Duration.days(NONCURRENT_UPLOAD_DAYS),
                    expired_object_delete_marker=True,
                )
            )
        bucket = private_bucket(
            self,
            "Uploads",
            key=key,
            bucket_name=name,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            versioned=versioned or None,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="uploads/",
            lifecycle_rules=rules,
        )
        # CloudFormation's schema types the size as a string; CDK writes a number, which
        # CloudFormation coerces with a warning (W9003 in the validation report).
        resource = bucket.node.default_child
        if isinstance(resource, s3.CfnBucket):
            tiering = [rule.id for rule in rules].index("intelligent-tiering")
            resource.add_property_override(
                f"LifecycleConfiguration.Rules.{tiering}.ObjectSizeGreaterThan",
                str(INTELLIGENT_TIERING_MIN_BYTES),
            )
        return bucket

    def _table(
        self,
        name: str,
        billing: BillingMode,
        *,
        replica_regions: tuple[str, ...],
        min_capacity: int,
        max_capacity: int,
        key: kms.IKey | None,
        replica_key_arns: dict[str, str],
    ) -> dynamodb.TableV2:
        def attribute(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)

        def capacity() -> dynamodb.Capacity:
            return dynamodb.Capacity.autoscaled(
                min_capacity=min_capacity,
                max_capacity=max_capacity,
                target_utilization_percent=TARGET_UTILIZATION_PERCENT,
            )

        # On-demand costs nothing idle; provisioned scales between the bounds at 70 %.
        provisioned = billing == "provisioned"
        if key is not None and set(replica_key_arns) != set(replica_regions):
            raise ValueError("the table's key needs a replica key in every replica region")
        pitr = dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True)
        return dynamodb.TableV2(
            self,
            "Table",
            table_name=name,
            partition_key=attribute(PARTITION_KEY),
            sort_key=attribute(SORT_KEY),
            billing=(
                dynamodb.Billing.provisioned(read_capacity=capacity(), write_capacity=capacity())
                if provisioned
                else dynamodb.Billing.on_demand()
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            point_in_time_recovery_specification=pitr,
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            dynamo_stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            encryption=(
                dynamodb.TableEncryptionV2.aws_managed_key()
                if key is None
                else dynamodb.TableEncryptionV2.customer_managed_key(key, replica_key_arns)
            ),
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=index.name,
                    partition_key=attribute(index.partition_key),
                    sort_key=attribute(index.sort_key),
                    projection_type=dynamodb.ProjectionType.ALL,
                    read_capacity=capacity() if provisioned else None,
                    write_capacity=capacity() if provisioned else None,
                )
                for index in INDEXES
            ],
            # Each replica: its own stream (the same view type: a global table has one),
            # point-in-time recovery and deletion protection, as the primary.
            replicas=[
                dynamodb.ReplicaTableProps(
                    region=region,
                    point_in_time_recovery_specification=pitr,
                    deletion_protection=True,
                )
                for region in replica_regions
            ],
        )
