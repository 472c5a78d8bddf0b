"""The latency model on the local cloud: a replicated object's calls wait as a deployed stack's would,
same-region calls the short round trip, the copy into the other region the long one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_.latency import CROSS, SAME, LatencyModel
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

STACK = "crr-latency"
SOURCE, DESTINATION = "lat-src", "lat-dst"


@pytest.fixture(scope="module")
def slow_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """A local cloud of its own with the latency model on (10 ms in a region, 60 ms across), the stack
    deployed in us-west-1 and a rule from a us-west-1 bucket to a us-east-1 one."""
    state_dir: Path = tmp_path_factory.mktemp("latency-cloud")
    with LocalCloud(state_dir=state_dir, latency=LatencyModel(same_region_ms=10, cross_region_ms=60)) as cloud:
        cloud.start()
        cli.deploy_pairs(cloud, STACK, [(SOURCE, DESTINATION)], MaximumConcurrency="2")
        cli.add_rule(cloud, STACK, SOURCE, DESTINATION)
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
