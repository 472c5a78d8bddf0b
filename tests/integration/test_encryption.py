"""Encryption as AWS has it (the local cloud reports SSE-S3 on every object and enforces bucket policies
that require SSE-KMS): replicas take the destination's encryption, never the source's SSE-S3."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.snapshot import list_keys
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

STACK = "crr-encryption"
SOURCE, DESTINATION = "enc-src", "enc-dst"
MIB = 1024 * 1024


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, cli.WEST, *args)


def _require_sse_kms(bucket: str, key_arn: str) -> str:
    """The bucket policy the SSE-KMS user guide documents: every write names SSE-KMS and this key."""
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    key_id = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {**deny, "Sid": "DenyNotSSEKMS", "Condition": {"Null": {key_id: "true"}}},
                {**deny, "Sid": "DenyOtherKeys", "Condition": {"StringNotEquals": {key_id: key_arn}}},
            ],
        }
    )


def test_replicas_land_in_a_destination_that_requires_its_own_sse_kms_key(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    # Given a destination whose default is SSE-KMS with its key and whose policy refuses any other write,
    # and a source whose objects are SSE-S3 (as every object on AWS reports since 2023)
    destination_key = local_cloud.client("kms", cli.EAST).create_key()["KeyMetadata"]["Arn"]
    cli.deploy_pairs(
        local_cloud,
        STACK,
        [(SOURCE, DESTINATION)],
        ReplicaKmsKeyArns=destination_key,
        FunctionTimeoutSeconds="30",
        MultipartThresholdBytes=str(5 * MIB),  # so a 6 MiB object is copied in parts
        PartSizeBytes=str(5 * MIB),
    )
    west, east = local_cloud.client("s3", cli.WEST), local_cloud.client("s3", cli.EAST)
    east.put_bucket_encryption(
        Bucket=DESTINATION,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": destination_key,
                    },
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    east.put_bucket_policy(Bucket=DESTINATION, Policy=_require_sse_kms(DESTINATION, destination_key))
    west.put_object(Bucket=SOURCE, Key="old.txt", Body=b"before the rule")
    assert west.head_object(Bucket=SOURCE, Key="old.txt")["ServerSideEncryption"] == "AES256"
    misses = local_cloud.region_misses()

    # When a rule with a backfill is added and two more objects are written
    added = run_crr(local_cloud, "rules", "add", "--source", SOURCE, "--destination", DESTINATION, "--backfill")
    assert added.returncode == 0, added.stderr
    # (after the backfill's only page, so that the live path, not the backfill, copies them)
    eventually(lambda: list_keys(east, DESTINATION) == ["old.txt"], timeout=30, what="the backfilled replica")
    west.put_object(Bucket=SOURCE, Key="new file é.txt", Body=b"after the rule")
    west.put_object(Bucket=SOURCE, Key="large.bin", Body=b"L" * (6 * MIB))

    # Then every replica exists (the large one copied in parts), encrypted with the destination's key,
    # none dead-lettered
    eventually(
        lambda: list_keys(east, DESTINATION) == ["large.bin", "new file é.txt", "old.txt"],
        timeout=30,
        what="the three replicas",
    )
    assert east.head_object(Bucket=DESTINATION, Key="large.bin")["ETag"].strip('"').endswith("-2")
    for key in ("old.txt", "new file é.txt", "large.bin"):
        replica = east.head_object(Bucket=DESTINATION, Key=key)
        assert (replica["ServerSideEncryption"], replica["SSEKMSKeyId"]) == ("aws:kms", destination_key)
    dead: dict[str, Any] = json.loads(run_crr(local_cloud, "dlq", "list", "--json").stdout)
    assert dead["reasons"] == []
    # And no S3 request of crr's was sent to another region than its bucket's
    assert local_cloud.region_misses() == misses


def test_rules_add_resolves_a_replica_key_alias_and_refuses_keys_the_stack_is_not_granted(
    local_cloud: LocalCloud,
) -> None:
    # Given a stack granted one destination-region key by ARN, which has an alias, and another key
    kms = local_cloud.client("kms", cli.EAST)
    granted, other = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    kms.create_alias(AliasName="alias/crr-replicas", TargetKeyId=granted)
    kms.create_alias(AliasName="alias/crr-other", TargetKeyId=other)
    stack = "crr-key-alias"
    cli.deploy_pairs(
        local_cloud, stack, [("alias-src", "alias-dst"), ("alias-src2", "alias-dst2")], ReplicaKmsKeyArns=granted
    )

    def add(source: str, destination: str, alias: str) -> subprocess.CompletedProcess[str]:
        alias_arn = granted.split(":key/")[0] + f":alias/{alias}"
        return cli.run_crr(
            local_cloud, stack, cli.WEST, "rules", "add", "--json",
            "--source", source, "--destination", destination, "--replica-kms-key", alias_arn,
        )  # fmt: skip

    # When a rule names the granted key by its alias, Then the rule holds the key ARN
    added = add("alias-src", "alias-dst", "crr-replicas")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)[0]["replica_kms_key_arn"] == granted
    # When a rule names a key the stack is not granted, Then it is refused, saying what to redeploy
    refused = add("alias-src2", "alias-dst2", "crr-other")
    assert refused.returncode != 0
    assert f"{other} (alias" in refused.stderr
    assert "ReplicaKmsKeyArns" in refused.stderr
