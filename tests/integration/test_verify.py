"""`crr verify` on the local cloud: the real template and function, the CLI as its own process, known
differences made directly in the destination bucket, and `--repair` going through the replication
queue until the replica equals the source again."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.snapshot import list_keys
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
STACK = "crr-vf"
PAIRS = {"prefix": ("vf-src", "vf-dst"), "keep": ("vf-src-keep", "vf-dst-keep"), "kms": ("vf-src-kms", "vf-dst-kms")}
UNICODE_KEY = "data/ünï cödé+100%.txt"


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, WEST, *args)


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    return cli.deploy_pairs(local_cloud, STACK, PAIRS.values(), FunctionTimeoutSeconds="2", MaximumConcurrency="2")


def queue_drained(cloud: LocalCloud, stack: DeployedStack) -> bool:
    return cli.queue_drained(cloud, WEST, stack.outputs["ReplicationQueueUrl"])


def verified_equal(cloud: LocalCloud, rule: str) -> Callable[[], dict[str, Any] | None]:
    """A probe for `eventually`: the JSON report once `crr verify RULE` exits 0."""

    def probe() -> dict[str, Any] | None:
        answer = run_crr(cloud, "verify", rule, "--json")
        assert answer.returncode in {0, 1}, answer.stderr
        if answer.returncode != 0:
            return None
        report: dict[str, Any] = json.loads(answer.stdout)
        return report

    return probe


def test_verify_counts_known_differences_and_repair_removes_them(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["prefix"]
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given a rule for data/ whose source objects (and one outside the prefix) have replicated
    added = run_crr(local_cloud, "rules", "add", "--source", source, "--destination", destination, "--prefix", "data/")
    assert added.returncode == 0, added.stderr
    for key in ("data/same", "data/lost", "data/over", UNICODE_KEY, "logs/outside"):
        west.put_object(Bucket=source, Key=key, Body=f"body of {key}".encode())
    converged = eventually(verified_equal(local_cloud, source), timeout=60, what="verify to report equal")
    assert (converged["matching"], converged["equal"]) == (4, True)
    eventually(lambda: queue_drained(local_cloud, stack), timeout=30, what="the queue to drain")
    # And the replica then damaged directly: two keys lost (one unicode), one overwritten with bytes of the
    # same size, one stray key added, and a stray key outside the prefix
    east.delete_object(Bucket=destination, Key="data/lost")
    east.delete_object(Bucket=destination, Key=UNICODE_KEY)
    east.put_object(Bucket=destination, Key="data/over", Body=b"BODY OF DATA/OVER")
    east.put_object(Bucket=destination, Key="data/stray", Body=b"?")
    east.put_object(Bucket=destination, Key="logs/only-in-replica", Body=b"?")

    # When verified
    checked = run_crr(local_cloud, "verify", source, "--json")
    # Then it exits 1 and counts each difference exactly, ignoring keys outside data/
    assert checked.returncode == 1, checked.stderr
    report = json.loads(checked.stdout)
    assert report["matching"] == 1
    assert report["missing"] == {"count": 2, "samples": ["data/lost", UNICODE_KEY]}
    assert report["stale"] == {"count": 1, "samples": ["data/over"]}
    assert report["extra"] == {"count": 1, "samples": ["data/stray"]}
    assert report["kept"]["count"] == 0
    assert (report["differing"], report["equal"], report["queued"]) == (4, False, None)
    assert (report["source_objects"], report["destination_objects"]) == (4, 3)
    # And the text form says so too
    text = run_crr(local_cloud, "verify", source, "--samples", "1")
    assert text.returncode == 1
    assert "DIFFERENT: 4 key(s) differ" in text.stdout
    assert "'data/lost', ..." in text.stdout

    # When repaired
    repaired = run_crr(local_cloud, "verify", source, "--repair", "--json")
    # Then the four keys are queued (the report still describes the listing before repair)
    assert repaired.returncode == 1, repaired.stderr
    assert json.loads(repaired.stdout)["queued"] == 4
    # And the replicator brings the replica back in line through the normal path
    final = eventually(verified_equal(local_cloud, source), timeout=60, what="verify to report equal after repair")
    assert (final["matching"], final["destination_objects"]) == (4, 4)
    assert east.get_object(Bucket=destination, Key="data/over")["Body"].read() == b"body of data/over"
    assert east.head_object(Bucket=destination, Key=UNICODE_KEY)["Metadata"]["crr-origin-bucket"] == source
    # And keys outside the rule's prefix were left alone on both sides
    assert "logs/only-in-replica" in list_keys(east, destination)
    assert "logs/outside" not in list_keys(east, destination)


def test_without_delete_replication_replica_only_keys_are_kept_and_never_repaired(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["keep"]
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given a rule that does not replicate deletes, a replicated key deleted at the source, and a
    # key written only into the replica
    added = run_crr(local_cloud, "rules", "add", "--source", source, "--destination", destination, "--no-deletes")
    assert added.returncode == 0, added.stderr
    west.put_object(Bucket=source, Key="stays", Body=b"1")
    west.put_object(Bucket=source, Key="deleted-at-source", Body=b"2")
    eventually(verified_equal(local_cloud, source), timeout=60, what="the keys to replicate")
    west.delete_object(Bucket=source, Key="deleted-at-source")
    east.put_object(Bucket=destination, Key="replica-only", Body=b"3")
    eventually(lambda: queue_drained(local_cloud, stack), timeout=30, what="the queue to drain")
    # When verified with repair
    answer = run_crr(local_cloud, "verify", source, "--repair", "--json")
    # Then the replica counts as equal, the replica-only keys as kept, and nothing is queued
    assert answer.returncode == 0, answer.stderr
    report = json.loads(answer.stdout)
    assert report["kept"] == {"count": 2, "samples": ["deleted-at-source", "replica-only"]}
    assert (report["matching"], report["extra"]["count"], report["queued"]) == (1, 0, 0)


def test_fast_path_backfill_replicas_in_an_sse_kms_destination_verify_equal_until_a_user_overwrites_one(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    source, destination = PAIRS["kms"]
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given a destination whose default encryption is SSE-KMS (its objects get ETags of their own, not
    # MD5s), and objects written to the source before its rule
    key_arn = local_cloud.client("kms", EAST).create_key()["KeyMetadata"]["Arn"]
    east.put_bucket_encryption(
        Bucket=destination,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}]
        },
    )
    keys = ["old/a.txt", "old/b.txt", "old/c.txt"]
    for key in keys:
        west.put_object(Bucket=source, Key=key, Body=f"body of {key}".encode(), Metadata={"era": "old"})
    added = run_crr(local_cloud, "rules", "add", "--source", source, "--destination", destination, "--id", "kms")
    assert added.returncode == 0, added.stderr

    # When a backfill copies them (the one-request fast path: no crr marker on the replicas)
    done = run_crr(local_cloud, "backfill", "start", "kms", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    for key in keys:
        replica = east.head_object(Bucket=destination, Key=key)
        assert replica["ServerSideEncryption"] == "aws:kms"
        assert "crr-origin-bucket" not in replica["Metadata"]
        assert replica["ETag"] != west.head_object(Bucket=source, Key=key)["ETag"]
    eventually(lambda: queue_drained(local_cloud, stack), timeout=30, what="the queue to drain")

    # Then verify says equal (the ledger recorded each replica's own ETag), and repair queues nothing
    checked = run_crr(local_cloud, "verify", "kms", "--json", "--repair")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert (report["matching"], report["stale"]["count"], report["queued"]) == (3, 0, 0)

    # When a user overwrites one replica in the destination (bytes of the same size: a new ETag)
    east.put_object(Bucket=destination, Key="old/b.txt", Body=b"BODY OF OLD/B.TXT")
    # Then verify reports it stale, and only it
    checked = run_crr(local_cloud, "verify", "kms", "--json")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["stale"] == {"count": 1, "samples": ["old/b.txt"]}
    assert report["matching"] == 2


def test_verify_of_an_unknown_rule_is_an_error(local_cloud: LocalCloud, stack: DeployedStack) -> None:
    answer = run_crr(local_cloud, "verify", "no-such-rule")
    assert answer.returncode == 1
    assert answer.stderr.strip() == "error: no rule 'no-such-rule'"
