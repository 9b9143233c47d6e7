"""CloudFront's access logs (``cloudFrontLogs``): standard logging v2, with the fields chosen.

Legacy standard logging always writes the query string (``cs-uri-query``), and the site's links
carry single-use credentials there: ``/reset?token=…``, ``/verify-email?token=…`` and the
WebSocket handshake's ``/ws?ticket=…``. Standard logging v2 is CloudWatch Logs' vended delivery
(a delivery source for the distribution, a destination, a delivery naming the record fields),
which CloudFront accepts only in us-east-1: it lives in the edge-monitoring stack, beside the
bucket it writes to, so nothing crosses regions but the distribution's id.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from gatehouse_infra.data import private_bucket
from gatehouse_infra.nag import acknowledge

LOG_DAYS = 90  # like the S3 access logs
OUTPUT_FORMAT = "json"  # one object a line: named fields, so adding one later breaks no reader
# Each request: when, where, who (address, country), what (method, host, path, protocol), how
# it went (status, sizes, timings, the edge's result, the behaviour that served it).
RECORD_FIELDS: tuple[str, ...] = (
    "date",
    "time",
    "x-edge-location",
    "x-edge-request-id",
    "c-ip",
    "c-country",
    "cs-method",
    "cs(Host)",
    "cs-uri-stem",
    "cs-protocol",
    "cs-protocol-version",
    "cs(User-Agent)",
    "cs-bytes",
    "sc-status",
    "sc-bytes",
    "sc-content-type",
    "time-taken",
    "time-to-first-byte",
    "origin-fbl",
    "origin-lbl",
    "x-edge-result-type",
    "x-edge-response-result-type",
    "x-edge-detailed-result-type",
    "cache-behavior-path-pattern",
    "ssl-protocol",
    "ssl-cipher",
)
# Never logged: the query string (reset and verification tokens, the WebSocket ticket); cookies
# (the refresh token); the Referer (same-origin requests send the full URL under the site's
# strict-origin-when-cross-origin policy, so a page opened from a reset link would put its token
# there on every asset and API call); X-Forwarded-For (whatever text the client sent); the
# headers (Authorization among them).
NEVER_LOGGED: tuple[str, ...] = (
    "cs-uri-query",
    "cs(Cookie)",
    "cs(Referer)",
    "x-forwarded-for",
    "cs-headers",
)
DELIVERY_SERVICE = "delivery.logs.amazonaws.com"


class EdgeLogs(Construct):
    """us-east-1: the distribution's access logs, the fields of ``RECORD_FIELDS`` only, to a
    private bucket of their own (ACLs off, SSE-S3, TLS only) kept ``LOG_DAYS`` days."""

    def __init__(self, scope: Construct, id: str, *, prefix: str, distribution_id: str) -> None:
        super().__init__(scope, id)
        if set(RECORD_FIELDS) & set(NEVER_LOGGED):
            raise ValueError("a field that may carry a credential is in RECORD_FIELDS")
        stack = cdk.Stack.of(self)
        # The kmsKey switch's key lives in the primary region: S3's own key here.
        self.bucket = private_bucket(
            self,
            "Bucket",
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(LOG_DAYS))],
        )
        acknowledge(self.bucket, {"S1": "This is a log bucket itself (CloudFront's access logs)."})
        self.source = logs.CfnDeliverySource(
            self,
            "Source",
            name=f"{prefix}-cloudfront",
            log_type="ACCESS_LOGS",
            resource_arn=stack.format_arn(
                service="cloudfront",
                region="",
                resource="distribution",
                resource_name=distribution_id,
            ),
        )
        # The policy CloudWatch Logs would otherwise add itself, narrowed to this delivery
        # source (aws:SourceArn) in this account; the bucket owns every object (no ACLs).
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudFrontLogDelivery",
                principals=[iam.ServicePrincipal(DELIVERY_SERVICE)],
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"AWSLogs/{stack.account}/*")],
                conditions={
                    "StringEquals": {
                        "s3:x-amz-acl": "bucket-owner-full-control",
                        "aws:SourceAccount": stack.account,
                    },
                    "ArnLike": {"aws:SourceArn": self.source.attr_arn},
                },
            )
        )
        self.destination = logs.CfnDeliveryDestination(
            self,
            "Destination",
            name=f"{prefix}-cloudfront-s3",
            destination_resource_arn=self.bucket.bucket_arn,
            output_format=OUTPUT_FORMAT,
        )
        self.delivery = logs.CfnDelivery(
            self,
            "Delivery",
            delivery_source_name=self.source.ref,
            delivery_destination_arn=self.destination.attr_arn,
            record_fields=list(RECORD_FIELDS),
        )
        # The bucket's policy first: without it CloudWatch Logs would write one of its own.
        if self.bucket.policy is not None:
            self.destination.node.add_dependency(self.bucket.policy)
            self.delivery.node.add_dependency(self.bucket.policy)
