"""The latency model on the local cloud: a replicated object's calls wait as a deployed stack's would,
same-region calls the short round trip, the copy into the other region the long one; and a batch
applied concurrently (the template's RecordConcurrency) under that latency."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_.latency import CROSS, SAME, LatencyModel
from tests.support import localcloud as cli
from tests.support.events import load_event, sqs_event

pytestmark = pytest.mark.integration

STACK = "crr-latency"
SOURCE, DESTINATION = "lat-src", "lat-dst"
# Its notifications are unwired: the batch test hands them to the function itself.
BATCH_SOURCE, BATCH_DESTINATION = "lat-batch-src", "lat-batch-dst"


@pytest.fixture(scope="module")
def slow_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of its own with the latency model on (10 ms in a region, 60 ms across), the stack
    deployed in us-west-1 and rules from two us-west-1 buckets to us-east-1 ones."""
    state_dir: Path = tmp_path_factory.mktemp("latency-cloud")
    with LocalCloud(state_dir=state_dir, latency=LatencyModel(same_region_ms=10, cross_region_ms=60)) as cloud:
        cloud.start()
        cli.deploy_pairs(
            cloud, STACK, [(SOURCE, DESTINATION), (BATCH_SOURCE, BATCH_DESTINATION)], MaximumConcurrency="2"
        )
        cli.add_rule(cloud, STACK, SOURCE, DESTINATION)
        cli.add_rule(cloud, STACK, BATCH_SOURCE, BATCH_DESTINATION)
        yield cloud


def test_a_replicated_objects_copy_crosses_regions_and_its_ledger_calls_stay_home(
    slow_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    # Given the latency model on, and nothing delayed yet beyond the pollers' waiting
    before = slow_cloud.latency_counts()
    assert not before[CROSS]
    # When an object is written in us-west-1 and replicated
    slow_cloud.client("s3", cli.WEST).put_object(Bucket=SOURCE, Key="k", Body=b"latency")
    east = slow_cloud.client("s3", cli.EAST)
    eventually(lambda: east.list_objects_v2(Bucket=DESTINATION).get("KeyCount"), timeout=30, what="the replica")
    # Then the ReplicateFunction's copy into us-east-1 waited the cross-region round trip
    counts = eventually(
        lambda: (counts := slow_cloud.latency_counts())[CROSS].get("s3:CopyObject") and counts,
        what="the copy to be counted",
    )
    assert counts[CROSS]["s3:CopyObject"] >= 1
    assert "s3:CopyObject" not in counts[SAME]
    # And its ledger (DynamoDB in its own region) and the poller's queue calls waited the same-region one
    assert any(operation.startswith("dynamodb:") for operation in counts[SAME])
    assert not any(operation.startswith("dynamodb:") for operation in counts[CROSS])
    assert counts[SAME].get("sqs:ReceiveMessage", 0) >= 1
    # And the operator's and the test's own clients were never delayed
    assert "s3:PutObject" not in counts[SAME]
    assert "s3:PutObject" not in counts[CROSS]


def notification(key: str, sequencer: int, sample: str = "s3/object-created-put") -> str:
    """S3's notification of a change of ``key`` in the batch test's source."""
    document = load_event(sample)
    record = document["Records"][0]
    record["s3"]["bucket"].update(name=BATCH_SOURCE, arn=f"arn:aws:s3:::{BATCH_SOURCE}")
    record["s3"]["object"].update(key=key, sequencer=f"{sequencer:018X}")
    record["s3"]["object"].pop("versionId", None)
    record["s3"]["object"].pop("eTag", None)
    return json.dumps(document)


def test_a_batch_applied_concurrently_under_latency_leaves_every_replica_equal_to_its_source(
    slow_cloud: LocalCloud,
) -> None:
    # Given eight objects written, one of them overwritten and another deleted since, and the ten
    #       notifications of those changes in one batch (two keys with two changes each, in order)
    west, east = slow_cloud.client("s3", cli.WEST), slow_cloud.client("s3", cli.EAST)
    west.put_bucket_notification_configuration(Bucket=BATCH_SOURCE, NotificationConfiguration={})
    keys = [f"batch/{index}" for index in range(8)]
    for key in keys:
        west.put_object(Bucket=BATCH_SOURCE, Key=key, Body=f"first {key}".encode())
    west.put_object(Bucket=BATCH_SOURCE, Key=keys[0], Body=b"second")
    west.delete_object(Bucket=BATCH_SOURCE, Key=keys[1])
    bodies = [notification(key, index + 1) for index, key in enumerate(keys)]
    bodies += [notification(keys[0], 9), notification(keys[1], 10, "s3/object-removed-delete")]
    before = slow_cloud.latency_counts()
    # When the ReplicateFunction (its record concurrency the template's default) handles the batch
    invocation = slow_cloud.invoke(f"{STACK}/ReplicateFunction", sqs_event(*bodies))
    # Then no message failed
    assert invocation.ok, invocation.error
    assert invocation.payload == {"batchItemFailures": []}
    # And every replica holds its source's current bytes; the deleted key has none
    for key in keys:
        if key == keys[1]:
            assert east.list_objects_v2(Bucket=BATCH_DESTINATION, Prefix=key).get("KeyCount") == 0
            continue
        expected = west.get_object(Bucket=BATCH_SOURCE, Key=key)["Body"].read()
        assert east.get_object(Bucket=BATCH_DESTINATION, Key=key)["Body"].read() == expected
    # And its copies waited the cross-region round trip
    after = slow_cloud.latency_counts()
    assert after[CROSS].get("s3:CopyObject", 0) - before[CROSS].get("s3:CopyObject", 0) >= len(keys) - 1
