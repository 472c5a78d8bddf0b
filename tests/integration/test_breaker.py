"""The mass-delete breaker on the local cloud: a wipe of the source stops at the threshold, the replica
keeps the rest, and `crr rules resume-deletes` releases the held deletes through the normal path."""

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
STACK, SOURCE, DESTINATION = "crr-breaker", "bk-source", "bk-replica"


def run_crr(cloud: LocalCloud, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run_crr(cloud, STACK, WEST, *args)


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    """Breaker at 5 deletes that are at least a quarter of the window's changes."""
    deployed = cli.deploy_pairs(
        local_cloud,
        STACK,
        [(SOURCE, DESTINATION)],
        FunctionTimeoutSeconds="30",
        DeleteBreakerCount="5",
        DeleteBreakerPercent="25",
        DeleteBreakerWindowSeconds="600",
    )
    added = run_crr(local_cloud, "rules", "add", "--source", SOURCE, "--destination", DESTINATION)
    assert added.returncode == 0, added.stderr
    return deployed


def test_a_wipe_is_held_at_the_threshold_and_released_on_resume(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    keys = [f"precious/{index:02d}" for index in range(12)]
    # Given twelve replicated objects
    for key in keys:
        west.put_object(Bucket=SOURCE, Key=key, Body=key.encode())
    eventually(lambda: list_keys(east, DESTINATION) == keys, timeout=30, what="twelve replicas")
    # When the source is wiped
    for key in keys:
        west.delete_object(Bucket=SOURCE, Key=key)

    def tripped() -> dict[str, Any] | None:
        shown = json.loads(run_crr(local_cloud, "rules", "show", SOURCE, "--json").stdout)[0]
        return shown if shown["deletes_held"] else None

    # Then the breaker trips and, once the queue is quiet, the replica still holds the rest
    eventually(tripped, timeout=30, what="the breaker to trip")
    eventually(
        lambda: cli.queue_drained(local_cloud, WEST, stack.outputs["ReplicationQueueUrl"]),
        timeout=30,
        what="the queue to drain",
    )
    kept = list_keys(east, DESTINATION)
    assert 1 <= len(kept) <= 8
    assert list_keys(west, SOURCE) == []
    # When the held deletes are released
    resumed = run_crr(local_cloud, "rules", "resume-deletes", SOURCE, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["released"] == len(kept)
    # Then they reach the replica, which equals the (empty) source again, and the breaker is closed
    eventually(lambda: list_keys(east, DESTINATION) == [], timeout=30, what="the released deletes")
    assert tripped() is None
