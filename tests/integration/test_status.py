"""`crr status` on the local cloud: the real template and handler replicate, the CLI (as its own
process) reports what happened, and a hopeless message shows up in the DLQ depth and the failures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from tests.support import localcloud as cli
from tests.support.events import load_body

pytestmark = pytest.mark.integration

WEST, EAST = "us-west-1", "us-east-1"
STACK = "crr-st"
SOURCE, DESTINATION = "st-src", "st-dst"
OBJECTS = {f"status/{index}.bin": b"x" * (100 * index + 1) for index in range(5)}


def replicated(s3: Any, key: str) -> bool:
    listed = s3.list_objects_v2(Bucket=DESTINATION, Prefix=key).get("Contents", [])
    return any(entry["Key"] == key for entry in listed)


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, WEST, *args)


def status(cloud: LocalCloud, *args: str) -> dict[str, Any]:
    answer = run_crr(cloud, "status", "--json", *args)
    assert answer.returncode == 0, answer.stderr
    document: dict[str, Any] = json.loads(answer.stdout)
    return document


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    """The real template with a 2 s function timeout; buckets in two regions; a rule added by the CLI."""
    deployed = cli.deploy_pairs(
        local_cloud,
        STACK,
        [(SOURCE, DESTINATION)],
        FunctionTimeoutSeconds="2",
        MaxReceiveCount="2",
        MaximumConcurrency="2",
    )
    added = run_crr(local_cloud, "rules", "add", "--source", SOURCE, "--destination", DESTINATION)
    assert added.returncode == 0, added.stderr
    return deployed


def test_status_reports_replication_then_a_dead_lettered_message(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    west, east, sqs = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST), local_cloud.client("sqs", WEST)
    queue_url = stack.outputs["ReplicationQueueUrl"]
    # Given objects written to the source one at a time, each replicated before the next is written
    for key, body in OBJECTS.items():
        west.put_object(Bucket=SOURCE, Key=key, Body=body)
        eventually(lambda key=key: replicated(east, key), timeout=30, what=f"{key} in the replica")

    def caught_up() -> dict[str, Any] | None:
        document = status(local_cloud)
        [rule] = document["rules"]
        if rule["objects_copied"] < len(OBJECTS):
            # A warm worker writes progress at the end of a batch, at most once a second: the counts of
            # a batch that ends sooner wait in the worker for its next batch. An s3:TestEvent (which
            # crr acknowledges and ignores) is such a batch, so nudge until the counts are written.
            sqs.send_message(QueueUrl=queue_url, MessageBody=load_body("s3/test-event"))
            return None
        return document if document["stack"]["queue"]["depth"] == 0 else None

    # When `crr status --json` runs (once the worker has written the counts of every copy)
    document = eventually(caught_up, timeout=30, what="status to count every copy with an empty queue")
    # Then the rule's counters are what was written, its last sync is recent and it is idle
    [rule] = document["rules"]
    assert (rule["rule_id"], rule["state"]) == (SOURCE, "enabled")
    assert (rule["source_region"], rule["destination_region"]) == (WEST, EAST)
    assert rule["objects_copied"] == len(OBJECTS)
    assert rule["bytes_copied"] == sum(len(body) for body in OBJECTS.values())
    last_sync = datetime.fromisoformat(rule["last_sync_at"])
    assert datetime.now(UTC) - last_sync < timedelta(seconds=60)
    assert (rule["lag"], rule["lag_seconds"]) == ("idle", None)
    # And the stack's shared numbers: nothing queued, nothing dead-lettered, no CloudWatch datapoint here
    assert document["stack"]["queue"]["depth"] == 0
    assert document["stack"]["idle"] is True
    assert document["stack"]["dead_letters"]["depth"] == 0
    assert document["stack"]["failures_last_hour"] == 0
    assert document["stack"]["oldest_message_age_seconds"] is None

    # When a malformed message reaches the replication queue (it is dead-lettered at once)
    sqs.send_message(QueueUrl=queue_url, MessageBody="{not json")

    def dead_lettered() -> dict[str, Any] | None:
        document = status(local_cloud)
        return document if document["stack"]["dead_letters"]["depth"] == 1 else None

    # Then status shows one dead letter and at least one failure in the last hour
    after = eventually(dead_lettered, timeout=30, what="the DLQ to hold the malformed message")
    assert after["stack"]["failures_last_hour"] >= 1
    assert after["stack"]["failures_counted_completely"] is True


def test_status_of_one_rule_as_text_and_of_an_unknown_rule(local_cloud: LocalCloud, stack: DeployedStack) -> None:
    # When one rule's status is asked for as text
    shown = run_crr(local_cloud, "status", SOURCE)
    # Then the stack's header comes once, then the rule with its route
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"stack {STACK} ({WEST})")
    assert lines[1].startswith("queue: ")
    assert f"{SOURCE} ({WEST}) -> {DESTINATION} ({EAST})" in lines[4]
    # When an unknown rule is asked for, Then the CLI says so and fails
    unknown = run_crr(local_cloud, "status", "no-such-rule")
    assert unknown.returncode == 1
    assert "no rule 'no-such-rule'" in unknown.stderr
