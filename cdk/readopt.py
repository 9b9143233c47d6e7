"""Prints the ``make deploy`` context that adopts what ``make destroy`` retained.

``make destroy`` keeps the table and the uploads bucket, whose names are fixed, so a plain
redeploy fails on them. This looks both up in the account your credentials name and prints the
switches (cdk/README.md, "Redeploy after make destroy")::

    make deploy CONTEXT="$(.venv/bin/python cdk/readopt.py --environment production)"

Only what exists is adopted; the rest is created as usual. Reads only (DescribeTable, HeadBucket,
GetCallerIdentity).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

CDK_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(CDK_DIR.parent), str(CDK_DIR)]  # chalicelib/, gatehouse_infra/

from gatehouse_infra import runtime  # noqa: E402

MISSING = ("ResourceNotFoundException", "404", "NoSuchBucket", "NotFound")


def readoption_context(environment: str, *, dynamodb: Any, s3: Any, account: str) -> list[str]:
    """The ``-c key=value`` switches for the retained table and uploads bucket that exist."""
    switches: list[str] = []
    table_name = runtime.prefix(environment)
    try:
        table = dynamodb.describe_table(TableName=table_name)["Table"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in MISSING:
            raise
    else:
        stream = table.get("LatestStreamArn")
        if not stream or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise SystemExit(f"{table_name} has no stream: the change handler needs one")
        switches += [f"existingTableName={table_name}", f"existingTableStreamArn={stream}"]
    bucket = f"{runtime.uploads_bucket_stem(environment)}-{account}"
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] not in MISSING:
            raise
    else:
        switches.append(f"existingUploadsBucketName={bucket}")
    return [part for switch in switches for part in ("-c", switch)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--environment", default=runtime.DEFAULT_ENVIRONMENT)
    parser.add_argument("--region", help="primaryRegion (default: your AWS configuration's)")
    args = parser.parse_args(argv)
    session = boto3.Session(region_name=args.region)
    account = session.client("sts").get_caller_identity()["Account"]
    context = readoption_context(
        args.environment,
        dynamodb=session.client("dynamodb"),
        s3=session.client("s3"),
        account=account,
    )
    print(" ".join(context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
