"""Replication over the real path on the local cloud: S3 notification → SQS → local Lambda running
the real handler → destination bucket in another region, with the CLI run as its own process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.localcloud.scenario import create_bucket
from crr_cli.snapshot import compare, list_keys, snapshot
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
STACK = "crr-it"
PAIRS = {
    "main": ("it-src-main", "it-dst-main"),
    "prefix": ("it-src-prefix", "it-dst-prefix"),
    "pause": ("it-src-pause", "it-dst-pause"),
    "broken": ("it-src-broken", "it-dst-broken"),
    "multipart": ("it-src-parts", "it-dst-parts"),
}


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, WEST, *args)


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    """The real template, with a 2 s function timeout (12 s visibility) and redrive after 2 receives."""
    return cli.deploy_pairs(
        local_cloud, STACK, PAIRS.values(), FunctionTimeoutSeconds="2", MaxReceiveCount="2", MaximumConcurrency="2"
    )


def add_rule(local_cloud: LocalCloud, pair: str, *options: str) -> None:
    source, destination = PAIRS[pair]
    added = run_crr(local_cloud, "rules", "add", "--source", source, "--destination", destination, *options)
    assert added.returncode == 0, added.stderr


def queue_drained(cloud: LocalCloud, stack: DeployedStack) -> bool:
    return cli.queue_drained(cloud, WEST, stack.outputs["ReplicationQueueUrl"])


def test_creates_overwrites_and_deletes_reach_the_other_region(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a rule added with the CLI
    source, destination = PAIRS["main"]
    add_rule(local_cloud, "main")
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # When objects with awkward keys are created, overwritten and deleted
    for key in ("a b.txt", "c++/x+y.txt", "100%.txt", "ünï/日本.txt", "deep/er/key", "empty"):
        west.put_object(
            Bucket=source,
            Key=key,
            Body=key.encode() if key != "empty" else b"",
            Metadata={"k": "v"},
            Tagging="t=1",
            ContentType="text/plain",
            CacheControl="no-cache",
        )
    west.put_object(Bucket=source, Key="a b.txt", Body=b"overwritten", ContentType="text/markdown")
    west.delete_object(Bucket=source, Key="deep/er/key")
    # Then the destination converges on the source in keys, bytes, headers, metadata and tags
    difference = eventually(
        lambda: (d := compare(snapshot(west, source), snapshot(east, destination))).equal and d,
        timeout=30,
        what="the replica to equal the source",
    )
    assert difference.equal
    replica = east.head_object(Bucket=destination, Key="a b.txt")
    assert replica["ContentType"] == "text/markdown"
    assert replica["Metadata"]["crr-origin-bucket"] == source


def test_a_prefix_rule_replicates_only_its_prefix(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a rule limited to data/
    source, destination = PAIRS["prefix"]
    add_rule(local_cloud, "prefix", "--prefix", "data/")
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # When keys inside and outside the prefix are written
    west.put_object(Bucket=source, Key="logs/outside", Body=b"no")
    west.put_object(Bucket=source, Key="data/inside", Body=b"yes")
    # Then the inside key arrives, and once the queue is drained the outside key has not
    eventually(lambda: "data/inside" in list_keys(east, destination), timeout=30, what="data/inside")
    eventually(lambda: queue_drained(local_cloud, stack), timeout=30, what="the queue to drain")
    assert list_keys(east, destination) == ["data/inside"]


def test_a_paused_rule_acknowledges_changes_and_a_resumed_one_replicates_again(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["pause"]
    add_rule(local_cloud, "pause")
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given the rule paused with the CLI
    paused = run_crr(local_cloud, "rules", "pause", source, "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)[0]["status"] == "paused"
    # When an object is written, Then its record is acknowledged without a copy
    west.put_object(Bucket=source, Key="while-paused", Body=b"x")
    eventually(lambda: queue_drained(local_cloud, stack), timeout=30, what="the queue to drain")
    assert list_keys(east, destination) == []
    # When the rule is resumed (the function's rule cache lasts 5 s), Then new writes replicate again
    assert run_crr(local_cloud, "rules", "resume", source).returncode == 0

    def replicated_after_resume() -> bool:
        west.put_object(Bucket=source, Key="after-resume", Body=b"y")
        return "after-resume" in list_keys(east, destination)

    eventually(replicated_after_resume, timeout=30, what="after-resume in the replica")


def test_hopeless_records_are_dead_lettered_with_reasons_and_replayed_once_fixed(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a rule whose destination bucket disappears after the rule was added
    source, destination = PAIRS["broken"]
    add_rule(local_cloud, "broken")
    east, west, sqs = local_cloud.client("s3", EAST), local_cloud.client("s3", WEST), local_cloud.client("sqs", WEST)
    east.delete_bucket(Bucket=destination)
    # When an object is written (its copy fails: NoSuchBucket) and a malformed message arrives
    west.put_object(Bucket=source, Key="doomed/one.txt", Body=b"x")
    sqs.send_message(QueueUrl=stack.outputs["ReplicationQueueUrl"], MessageBody="{not json")

    def listed() -> dict[str, Any] | None:
        answer = run_crr(local_cloud, "dlq", "list", "--json")
        summary: dict[str, Any] = json.loads(answer.stdout)
        return summary if summary["total"] == 2 else None

    # Then both reach the DLQ at once (no retries can help), and `crr dlq list` says why
    summary = eventually(listed, timeout=30, what="two dead letters")
    reasons = {reason["code"]: reason for reason in summary["reasons"]}
    assert set(reasons) == {"NoSuchBucket", "MalformedEvent"}
    assert reasons["NoSuchBucket"]["sample_keys"] == ["doomed/one.txt"]
    assert "it-dst-broken" in reasons["NoSuchBucket"]["sample_message"]
    # And the source keeps its object: a failure never touches it
    assert west.head_object(Bucket=source, Key="doomed/one.txt")["ContentLength"] == 1
    # When the bucket is back and the NoSuchBucket records are replayed
    create_bucket(east, destination, EAST, versioned=False)
    dry = run_crr(local_cloud, "dlq", "replay", "--reason", "NoSuchBucket", "--dry-run", "--json")
    assert json.loads(dry.stdout)["matched"] == 1
    replayed = run_crr(local_cloud, "dlq", "replay", "--reason", "NoSuchBucket", "--json")
    assert json.loads(replayed.stdout)["replayed"] == 1, replayed.stderr
    # Then the object replicates, and only the malformed message is left in the DLQ
    eventually(lambda: "doomed/one.txt" in list_keys(east, destination), timeout=30, what="the replayed object")
    left = json.loads(run_crr(local_cloud, "dlq", "list", "--json").stdout)
    assert [reason["code"] for reason in left["reasons"]] == ["MalformedEvent"]


def test_the_cli_refuses_unknown_buckets_with_a_clear_error(local_cloud: LocalCloud, stack: DeployedStack) -> None:
    refused = run_crr(local_cloud, "rules", "add", "--source", "no-such-source-bucket", "--destination", "it-dst-main")
    assert refused.returncode == 1
    assert "bucket 'no-such-source-bucket' does not exist" in refused.stderr


def test_an_object_uploaded_in_parts_replicates_with_the_same_etag_and_fidelity(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a rule, and an object uploaded in three parts with headers, metadata and tags
    source, destination = PAIRS["multipart"]
    add_rule(local_cloud, "multipart")
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    mib = 1024 * 1024
    upload = west.create_multipart_upload(
        Bucket=source,
        Key="archive.tar",
        ContentType="application/x-tar",
        Metadata={"owner": "ana"},
        Tagging="tier=gold",
    )["UploadId"]
    parts = [
        {
            "PartNumber": number,
            "ETag": west.upload_part(
                Bucket=source, Key="archive.tar", UploadId=upload, PartNumber=number, Body=bytes([number]) * size
            )["ETag"],
        }
        for number, size in ((1, 5 * mib), (2, 5 * mib), (3, 4321))
    ]
    west.complete_multipart_upload(Bucket=source, Key="archive.tar", UploadId=upload, MultipartUpload={"Parts": parts})
    # When its CompleteMultipartUpload notification is processed
    eventually(lambda: "archive.tar" in list_keys(east, destination), timeout=30, what="the multipart replica")
    # Then the replica's ETag equals the source's ("-3": same part layout) and everything else matches
    assert (
        east.head_object(Bucket=destination, Key="archive.tar")["ETag"]
        == west.head_object(Bucket=source, Key="archive.tar")["ETag"]
    )
    assert compare(snapshot(west, source), snapshot(east, destination)).equal
    assert east.list_multipart_uploads(Bucket=destination).get("Uploads", []) == []
