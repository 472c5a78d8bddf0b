"""The mass-delete breaker on the local cloud: a wipe of the source stops at the threshold, the replica
keeps the rest, and `crr rules resume-deletes` releases the held deletes through the normal path."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


BURST_STACK, BURST_SOURCE, BURST_DESTINATION = "crr-breaker-burst", "bk-burst-source", "bk-burst-replica"
# Long enough that the discard and the burst's last deletes land inside it even on a loaded machine (at
# 20 s, one run where six test processes shared two cores let the window pass before the last deletes).
BURST_WINDOW = 30


@pytest.fixture(scope="module")
def burst_stack(local_cloud: LocalCloud) -> DeployedStack:
    """Breaker at 20 deletes per BURST_WINDOW seconds, whatever the copies (percent 0: the test is about the count).

    Two function workers, as in the other burst-heavy tests: with ten, one run on a loaded two-core machine
    left messages in flight past the drain deadline (a batch waiting out its visibility timeout)."""
    deployed = cli.deploy_pairs(
        local_cloud,
        BURST_STACK,
        [(BURST_SOURCE, BURST_DESTINATION)],
        FunctionTimeoutSeconds="30",
        MaximumConcurrency="2",
        DeleteBreakerCount="20",
        DeleteBreakerPercent="0",
        DeleteBreakerWindowSeconds=str(BURST_WINDOW),
    )
    added = cli.run_crr(
        local_cloud, BURST_STACK, WEST, "rules", "add", "--source", BURST_SOURCE, "--destination", BURST_DESTINATION
    )
    assert added.returncode == 0, added.stderr
    return deployed


def test_a_discard_while_the_burst_is_arriving_keeps_every_later_delete_of_it_from_the_replica(
    local_cloud: LocalCloud, burst_stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    queue_url = burst_stack.outputs["ReplicationQueueUrl"]

    def crr(*args: str) -> subprocess.CompletedProcess[str]:
        done = cli.run_crr(local_cloud, BURST_STACK, WEST, *args)
        assert done.returncode == 0, done.stderr
        return done

    def in_parallel(action: Callable[[str], object], keys: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(action, keys))

    # Given 240 replicated objects, and one more a user will delete deliberately later
    keys = [f"wiped/{index:03d}" for index in range(240)]
    in_parallel(lambda key: west.put_object(Bucket=BURST_SOURCE, Key=key, Body=b"x"), [*keys, "kept/deliberate"])
    eventually(lambda: len(list_keys(east, BURST_DESTINATION)) == 241, timeout=90, what="241 replicas")
    # When a wipe deletes 160 of them and the breaker trips
    in_parallel(lambda key: west.delete_object(Bucket=BURST_SOURCE, Key=key), keys[:160])
    eventually(
        lambda: json.loads(crr("rules", "show", BURST_SOURCE, "--json").stdout)[0]["deletes_held"],
        timeout=30,
        what="the breaker to trip",
    )
    # And the operator discards while the wipe is still arriving (its last 80 deletes come after the discard)
    discarded = json.loads(crr("rules", "resume-deletes", BURST_SOURCE, "--discard", "--yes", "--json").stdout)
    kept_at_discard = set(list_keys(east, BURST_DESTINATION))
    in_parallel(lambda key: west.delete_object(Bucket=BURST_SOURCE, Key=key), keys[160:])
    eventually(lambda: cli.queue_drained(local_cloud, WEST, queue_url), timeout=60, what="the queue to drain")
    # Then no delete of the burst reached the replica after the discard, and at most 19 before the trip
    assert discarded["discarded"] >= 1
    assert set(list_keys(east, BURST_DESTINATION)) == kept_at_discard
    assert len(kept_at_discard) >= 241 - 19
    assert set(keys[160:]) <= kept_at_discard
    # When the burst is over (crr status shows the breaker closed) and a user deletes an object deliberately
    eventually(
        lambda: json.loads(crr("status", BURST_SOURCE, "--json").stdout)["rules"][0]["breaker"]["state"] == "closed",
        timeout=BURST_WINDOW + 30,
        what="the burst to age out of the window",
    )
    west.delete_object(Bucket=BURST_SOURCE, Key="kept/deliberate")
    # Then it replicates, and no held delete is left behind
    eventually(
        lambda: "kept/deliberate" not in list_keys(east, BURST_DESTINATION), timeout=30, what="the deliberate delete"
    )
    resumed = json.loads(crr("rules", "resume-deletes", BURST_SOURCE, "--json").stdout)
    assert (resumed["nothing_held"], resumed["released"]) == (True, 0)
