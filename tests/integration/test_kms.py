"""SSE-KMS on the local cloud (moto KMS): a KMS-encrypted source object is replicated under the rule's
destination-region key; without one, it is dead-lettered with its reason instead of being downgraded."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket
from crr_cli.snapshot import list_keys
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
STACK = "crr-kms"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, WEST, *args)


def test_sse_kms_objects_replicate_under_the_destination_key_or_are_dead_lettered(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    # Given KMS keys in both regions, and two rules: one naming a replica key, one not
    source_key = local_cloud.client("kms", WEST).create_key()["KeyMetadata"]["Arn"]
    replica_key = local_cloud.client("kms", EAST).create_key()["KeyMetadata"]["Arn"]
    local_cloud.deploy(
        TEMPLATE,
        STACK,
        WEST,
        {
            "SourceBuckets": "km-src,km-src-nokey",
            "DestinationBuckets": "km-dst,km-dst-nokey",
            "SourceKmsKeyArns": source_key,
            "ReplicaKmsKeyArns": replica_key,
            "FunctionTimeoutSeconds": "30",
        },
    )
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    for source, destination in (("km-src", "km-dst"), ("km-src-nokey", "km-dst-nokey")):
        create_bucket(west, source, WEST, versioned=True)
        create_bucket(east, destination, EAST, versioned=False)
    with_key = run_crr(
        local_cloud, "rules", "add", "--source", "km-src", "--destination", "km-dst", "--replica-kms-key", replica_key
    )
    assert with_key.returncode == 0, with_key.stderr
    without = run_crr(local_cloud, "rules", "add", "--source", "km-src-nokey", "--destination", "km-dst-nokey")
    assert without.returncode == 0, without.stderr
    # When SSE-KMS and SSE-S3 objects are written to both sources
    for bucket in ("km-src", "km-src-nokey"):
        west.put_object(
            Bucket=bucket, Key="secret.txt", Body=b"s", ServerSideEncryption="aws:kms", SSEKMSKeyId=source_key
        )
        west.put_object(Bucket=bucket, Key="plain.txt", Body=b"p", ServerSideEncryption="AES256")
    # Then with a replica key both replicate, the KMS one under the destination key
    eventually(lambda: list_keys(east, "km-dst") == ["plain.txt", "secret.txt"], timeout=30, what="both replicas")
    secret = east.head_object(Bucket="km-dst", Key="secret.txt")
    assert (secret["ServerSideEncryption"], secret["SSEKMSKeyId"]) == ("aws:kms", replica_key)
    assert east.head_object(Bucket="km-dst", Key="plain.txt")["ServerSideEncryption"] == "AES256"

    # And without one, the SSE-S3 object replicates and the KMS one waits in the DLQ with its reason
    def dead_lettered() -> dict[str, Any] | None:
        summary: dict[str, Any] = json.loads(run_crr(local_cloud, "dlq", "list", "--json").stdout)
        codes = {reason["code"]: reason for reason in summary["reasons"]}
        return codes.get("ReplicaKmsKeyMissing")

    reason = eventually(dead_lettered, timeout=30, what="the KMS object in the DLQ")
    assert reason["sample_keys"] == ["secret.txt"]
    eventually(lambda: list_keys(east, "km-dst-nokey") == ["plain.txt"], timeout=30, what="the SSE-S3 replica")
