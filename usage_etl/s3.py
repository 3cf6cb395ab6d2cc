"""The boto3 S3 client every part of the project uses (no Dagster import: the CLI stays fast)."""

import boto3
from botocore.config import Config


def s3_client(max_attempts: int = 5):
    """A boto3 S3 client with bounded, backed-off retries for transient errors."""
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path"},
    )
    # A fresh session per client: boto3's default session caches the first credentials it
    # resolves, so a long-lived process (code server, daemon) would miss rotated AWS_* keys.
    return boto3.session.Session().client("s3", config=config)
