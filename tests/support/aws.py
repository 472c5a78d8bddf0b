"""Helpers for tests that talk to moto (in-process ``mock_aws``) or the local cloud."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from crr_cli.localcloud.scenario import create_bucket

__all__ = ["LOCAL_CONFIG", "client", "create_bucket", "create_rules_table", "upload_in_parts"]

LOCAL_CONFIG = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")


def client(service: str, region: str, endpoint_url: str | None = None) -> Any:
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        config=LOCAL_CONFIG,  # type: ignore[call-overload]
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_rules_table(dynamodb: Any, name: str) -> None:
    """The RulesTable's key schema, as template.yaml declares it."""
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )


def upload_in_parts(s3: Any, bucket: str, key: str, sizes: list[int], **extra: Any) -> str:
    """A multipart upload whose part n holds the byte n repeated; returns the object's ETag."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts = [
        {
            "PartNumber": number,
            "ETag": s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=bytes([number]) * size
            )["ETag"],
        }
        for number, size in enumerate(sizes, start=1)
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return str(s3.head_object(Bucket=bucket, Key=key)["ETag"])
