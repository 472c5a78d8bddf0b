"""Objects too large for one invocation, end to end on the local cloud: the ReplicateFunction hands the
copy to the LargeCopyStateMachine (the real ASL, run by the local Step Functions interpreter, its
Lambda tasks by the local workers), which copies part batches in separate invocations.

The budgets are tiny so this stays fast: parts of 5 MiB, an assumed copy rate of 1 MiB/s, so the
ReplicateFunction (30 s) copies up to 15 MiB itself, and each LargeCopyFunction invocation (10 s) is
planned one 5 MiB part.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from tests.support import localcloud as cli
from tests.support.aws import upload_in_parts

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-large"
SOURCE, DESTINATION = "lo-src", "lo-dst"
MIB = 1024 * 1024
PARAMETERS = {
    "FunctionTimeoutSeconds": "30",
    "MultipartThresholdBytes": str(5 * MIB),
    "PartSizeBytes": str(5 * MIB),
    "CopyBytesPerSecond": str(MIB),
    "LargeCopyTimeoutSeconds": "10",
    "MaximumConcurrency": "2",
}


@dataclass(frozen=True)
class LargeCopyStack:
    stack: DeployedStack
    faults: Path

    @property
    def state_machine(self) -> str:
        return self.stack.state_machine("LargeCopyStateMachine").arn

    def inject(self, **settings: Any) -> None:
        self.faults.write_text(json.dumps(settings), encoding="utf-8")


@pytest.fixture(scope="module")
def large(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> LargeCopyStack:
    """The real template with tiny large-object budgets; its workers consult a fault-control file."""
    faults = tmp_path_factory.mktemp("large-objects") / "faults.json"
    stack = cli.deploy_pairs_with_faults(local_cloud, STACK, [(SOURCE, DESTINATION)], faults, **PARAMETERS)
    cli.add_rule(local_cloud, STACK, SOURCE, DESTINATION)
    return LargeCopyStack(stack, faults)


def executions(cloud: LocalCloud, machine: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cloud.client("stepfunctions", WEST).list_executions(stateMachineArn=machine)[
        "executions"
    ]
    return found


def finished(cloud: LocalCloud, machine: str, count: int) -> list[dict[str, Any]] | None:
    """The executions, once ``count`` of them exist and none is running."""
    found = executions(cloud, machine)
    if len(found) < count or any(execution["status"] == "RUNNING" for execution in found):
        return None
    return found


def invocations_of(cloud: LocalCloud, execution_arn: str, action: str) -> int:
    history = cloud.client("stepfunctions", WEST).get_execution_history(executionArn=execution_arn)["events"]
    payloads = [
        json.loads(event["taskScheduledEventDetails"]["parameters"])["Payload"]
        for event in history
        if event["type"] == "TaskScheduled"
    ]
    return sum(1 for payload in payloads if payload.get("action") == action)


def test_an_object_too_large_for_one_invocation_is_copied_by_the_workflow_with_full_fidelity(
    local_cloud: LocalCloud, large: LargeCopyStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given a 40 MiB source uploaded in eight parts, with headers, metadata and tags
    etag = upload_in_parts(
        west,
        SOURCE,
        "media/film one.mp4",
        [5 * MIB] * 8,
        ContentType="video/mp4",
        CacheControl="max-age=60",
        Metadata={"owner": "ana"},
        Tagging=urlencode({"team": "media"}),
    )
    # When its notification is handled (40 s at 1 MiB/s does not fit half of 30 s)
    [execution] = eventually(lambda: finished(local_cloud, large.state_machine, 1), timeout=60, what="the workflow")
    # Then the workflow copied it in eight batches, each its own invocation, and succeeded
    assert execution["status"] == "SUCCEEDED"
    assert invocations_of(local_cloud, execution["executionArn"], "copy_batch") == 8
    # And the replica is the source: same ETag (same part layout), headers, metadata, tags
    replica = east.head_object(Bucket=DESTINATION, Key="media/film one.mp4")
    assert replica["ETag"] == etag
    assert (replica["ContentType"], replica["CacheControl"], replica["Metadata"]["owner"]) == (
        "video/mp4",
        "max-age=60",
        "ana",
    )
    assert east.get_object_tagging(Bucket=DESTINATION, Key="media/film one.mp4")["TagSet"] == [
        {"Key": "team", "Value": "media"}
    ]
    assert east.list_multipart_uploads(Bucket=DESTINATION).get("Uploads", []) == []
    # And the rule's progress counts the copy
    status = cli.run_crr(local_cloud, STACK, WEST, "status", "--json")
    assert status.returncode == 0, status.stderr
    [rule] = json.loads(status.stdout)["rules"]
    assert rule["objects_copied"] == 1  # counted once, when the workflow completed


def test_a_copy_that_fails_for_good_leaves_no_upload_and_waits_in_the_dlq_until_replayed(
    local_cloud: LocalCloud, large: LargeCopyStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    before = len(executions(local_cloud, large.state_machine))
    # Given a destination that refuses part copies
    large.inject(mode="outage", buckets=[DESTINATION], operations=["UploadPartCopy"], code="AccessDenied")
    # When a 20 MiB multipart object is written
    etag = upload_in_parts(west, SOURCE, "denied/archive.tar", [5 * MIB] * 4)
    found = eventually(lambda: finished(local_cloud, large.state_machine, before + 1), timeout=60, what="the workflow")
    failed = next(execution for execution in found if execution["status"] == "FAILED")
    # Then the workflow gave up: no incomplete upload, no replica, and the key is in the DLQ with its reason
    assert east.list_multipart_uploads(Bucket=DESTINATION).get("Uploads", []) == []
    assert "Contents" not in east.list_objects_v2(Bucket=DESTINATION, Prefix="denied/")
    listed = cli.run_crr(local_cloud, STACK, WEST, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [reason] = json.loads(listed.stdout)["reasons"]
    assert (reason["code"], reason["sample_keys"]) == ("AccessDeniedError", ["denied/archive.tar"])
    assert "UploadPartCopy" in reason["sample_message"]
    assert failed["name"].startswith("lo-src-")
    # And once the destination accepts again, a replay copies it through a second attempt
    large.inject(mode="none")
    replayed = cli.run_crr(local_cloud, STACK, WEST, "dlq", "replay", "--reason", "AccessDeniedError")
    assert replayed.returncode == 0, replayed.stderr
    eventually(lambda: finished(local_cloud, large.state_machine, before + 2), timeout=60, what="the second attempt")
    assert east.head_object(Bucket=DESTINATION, Key="denied/archive.tar")["ETag"] == etag


def test_a_retried_complete_recognises_the_replica_under_the_template_s_own_permissions(
    local_cloud: LocalCloud, large: LargeCopyStack, eventually: Callable[..., Any]
) -> None:
    """Defect 6: the LargeCopyFunction's role lacked s3:GetObject and s3:ListBucket on destinations, so
    the HEAD by which a retried Complete recognises its replica was denied (IAM is enforced locally)."""
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    before = len(executions(local_cloud, large.state_machine))
    # Given a 20 MiB object the workflow copied
    etag = upload_in_parts(west, SOURCE, "retried/complete.bin", [5 * MIB] * 4)
    found = eventually(lambda: finished(local_cloud, large.state_machine, before + 1), timeout=60, what="the workflow")
    execution = next(item for item in found if item["name"].startswith("lo-src-") and item["status"] == "SUCCEEDED")
    history = local_cloud.client("stepfunctions", WEST).get_execution_history(executionArn=execution["executionArn"])
    [complete] = [
        json.loads(event["taskScheduledEventDetails"]["parameters"])["Payload"]
        for event in history["events"]
        if event["type"] == "TaskScheduled"
        and json.loads(event["taskScheduledEventDetails"]["parameters"])["Payload"].get("action") == "complete"
        and json.loads(event["taskScheduledEventDetails"]["parameters"])["Payload"]["job"]["request"]["state"]["key"]
        == "retried/complete.bin"
    ]
    assert east.head_object(Bucket=DESTINATION, Key="retried/complete.bin")["ETag"] == etag

    # When its Complete step runs again, as a Step Functions retry after a lost answer would
    retried = local_cloud.invoke(large.stack.function("LargeCopyFunction").name, complete)

    # Then the function finds the replica it made (the upload is gone) instead of failing
    assert retried.ok, retried.error
    assert retried.payload["etag"] == etag


def test_a_retried_complete_whose_replica_is_gone_reports_the_lost_upload_not_a_denial(
    local_cloud: LocalCloud, large: LargeCopyStack, eventually: Callable[..., Any]
) -> None:
    """Defect 6, the ListBucket half: without s3:ListBucket on the destination, the HEAD of a missing
    replica answers 403, and the retried Complete failed as AccessDenied instead of NoSuchUpload."""
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    before = len(executions(local_cloud, large.state_machine))
    # Given a copied object whose replica someone deleted afterwards
    upload_in_parts(west, SOURCE, "retried/gone.bin", [5 * MIB] * 4)  # 20 MiB: more than the function copies
    found = eventually(lambda: finished(local_cloud, large.state_machine, before + 1), timeout=60, what="the workflow")
    execution = next(item for item in found if item["status"] == "SUCCEEDED" and item["name"].startswith("lo-src-"))
    history = local_cloud.client("stepfunctions", WEST).get_execution_history(executionArn=execution["executionArn"])
    payloads = [
        json.loads(event["taskScheduledEventDetails"]["parameters"])["Payload"]
        for event in history["events"]
        if event["type"] == "TaskScheduled"
    ]
    [complete] = [
        p
        for p in payloads
        if p.get("action") == "complete" and p["job"]["request"]["state"]["key"] == "retried/gone.bin"
    ]
    east.delete_object(Bucket=DESTINATION, Key="retried/gone.bin")

    # When its Complete step runs again
    retried = local_cloud.invoke(large.stack.function("LargeCopyFunction").name, complete)

    # Then it fails for the upload it cannot find, not for a permission
    assert not retried.ok
    assert "NoSuchUpload" in str(retried.error)
    assert "AccessDenied" not in str(retried.error)
