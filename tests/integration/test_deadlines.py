"""Work that fits the time it has, end to end on the local cloud with a 2 s ReplicateFunction timeout:
a message of 1,000 records, a message with one malformed record of two, and a copy slower than the
time left (the local cloud's copy-rate seam makes server-side copies take size / rate seconds)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from tests.support import localcloud as cli
from tests.support.events import load_event, load_raw_body

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-deadlines"
MIB = 1024 * 1024
PAIRS = {
    "many": ("dl-src-many", "dl-dst-many"),
    "mixed": ("dl-src-mixed", "dl-dst-mixed"),
    "slow": ("dl-src-slow", "dl-dst-slow"),
}
RECORDS = 1000
PARAMETERS = {
    "FunctionTimeoutSeconds": "2",
    "CopyBytesPerSecond": str(MIB),  # what the function assumes; the seam makes the slow destination this slow
    "LargeCopyTimeoutSeconds": "10",
    "MaximumConcurrency": "4",
}


def list_keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> Iterator[DeployedStack]:
    """The real template with a 2 s function timeout. The objects the hand-made messages name are
    written before their rules exist, so their own notifications replicate nothing."""
    deployed = cli.deploy_pairs(local_cloud, STACK, PAIRS.values(), **PARAMETERS)
    west = local_cloud.client("s3", WEST)
    for index in range(RECORDS):
        west.put_object(Bucket=PAIRS["many"][0], Key=f"many/{index:04d}", Body=f"object {index}".encode())
    west.put_object(Bucket=PAIRS["mixed"][0], Key="mixed/good.txt", Body=b"the good sibling")
    queue = deployed.outputs["ReplicationQueueUrl"]
    _wait(lambda: cli.queue_drained(local_cloud, WEST, queue), 120, "the notifications of unruled buckets")
    for source, destination in PAIRS.values():
        added = cli.run_crr(local_cloud, STACK, WEST, "rules", "add", "--source", source, "--destination", destination)
        assert added.returncode == 0, added.stderr
    yield deployed
    local_cloud.configure_seams(copy_bytes_per_second_by_bucket={})


def _wait(probe: Callable[[], Any], timeout: float, what: str) -> None:
    from tests.integration.conftest import _eventually

    _eventually(probe, timeout=timeout, what=what)


def dead_letters(local_cloud: LocalCloud) -> dict[str, Any]:
    listed = cli.run_crr(local_cloud, STACK, WEST, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    summary: dict[str, Any] = json.loads(listed.stdout)
    return summary


def test_a_message_of_a_thousand_records_is_applied_in_full_under_a_two_second_timeout(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given one queue message carrying 1,000 records (about 200 KB), for 1,000 existing objects
    source, destination = PAIRS["many"]
    sample = load_event("s3/object-created-put")["Records"][0]
    records = [
        {
            **{name: sample[name] for name in ("eventVersion", "eventSource", "awsRegion", "eventTime", "eventName")},
            "s3": {
                "bucket": {"name": source},
                "object": {"key": f"many/{index:04d}", "sequencer": f"{index + 1:018X}"},
            },
        }
        for index in range(RECORDS)
    ]
    body = json.dumps({"Records": records})
    assert 150_000 < len(body) < 256 * 1024
    # When it is sent to the replication queue
    local_cloud.client("sqs", WEST).send_message(QueueUrl=stack.outputs["ReplicationQueueUrl"], MessageBody=body)
    # Then every record is applied, across invocations that each stop within their time
    east = local_cloud.client("s3", EAST)
    expected = {f"many/{index:04d}" for index in range(RECORDS)}
    eventually(lambda: list_keys(east, destination, "many/") == expected, timeout=240, what="1,000 replicas")
    # And nothing of it reached the DLQ (no "Unknown", no timeout)
    summary = dead_letters(local_cloud)
    assert not [reason for reason in summary["reasons"] if any(k.startswith("many/") for k in reason["sample_keys"])]
    assert "Unknown" not in {reason["code"] for reason in summary["reasons"]}


def test_a_malformed_record_is_dead_lettered_alone_and_its_valid_sibling_applied(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a message whose first record names a real object and whose second is malformed
    source, destination = PAIRS["mixed"]
    document = json.loads(load_raw_body("bad/second-record-malformed"))
    good = document["Records"][0]["s3"]
    good["bucket"].update(name=source, arn=f"arn:aws:s3:::{source}")
    good["object"]["key"] = "mixed/good.txt"
    # When it is sent to the replication queue
    local_cloud.client("sqs", WEST).send_message(
        QueueUrl=stack.outputs["ReplicationQueueUrl"], MessageBody=json.dumps(document)
    )
    # Then the valid record is applied
    east = local_cloud.client("s3", EAST)
    eventually(lambda: "mixed/good.txt" in list_keys(east, destination, "mixed/"), timeout=30, what="the sibling")
    # And only the malformed record waits in the DLQ, as a message of its own, with its reason
    malformed = eventually(
        lambda: [r for r in dead_letters(local_cloud)["reasons"] if r["code"] == "MalformedEvent"] or None,
        timeout=30,
        what="the malformed record in the DLQ",
    )
    assert [reason["count"] for reason in malformed] == [1]
    letters = local_cloud.client("sqs", WEST).receive_message(
        QueueUrl=stack.outputs["ReplicationDLQUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=1
    )["Messages"]
    bodies = [json.loads(letter["Body"]) for letter in letters]
    assert {"Records": document["Records"][1:]} in bodies


def test_a_copy_slower_than_the_time_left_goes_to_the_large_copy_workflow(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    # Given a destination whose server-side copies run at 1 MiB/s (as the function is told), and a
    # 4 MiB single-part object: its CopyObject would take 4 s, twice the function's timeout
    source, destination = PAIRS["slow"]
    local_cloud.configure_seams(copy_bytes_per_second_by_bucket={destination: MIB})
    data = bytes(range(256)) * (4 * MIB // 256)
    # When it is written
    local_cloud.client("s3", WEST).put_object(Bucket=source, Key="slow/big.bin", Body=data)
    # Then the large-copy workflow copies it (its invocations have 10 s) instead of the function timing out
    east = local_cloud.client("s3", EAST)
    eventually(lambda: "slow/big.bin" in list_keys(east, destination, "slow/"), timeout=60, what="the slow replica")
    assert east.get_object(Bucket=destination, Key="slow/big.bin")["Body"].read() == data
    machine = stack.state_machine("LargeCopyStateMachine").arn
    executions = local_cloud.client("stepfunctions", WEST).list_executions(stateMachineArn=machine)["executions"]
    assert [execution["status"] for execution in executions] == ["SUCCEEDED"]
    summary = dead_letters(local_cloud)
    assert not [reason for reason in summary["reasons"] if "slow/big.bin" in reason["sample_keys"]]
