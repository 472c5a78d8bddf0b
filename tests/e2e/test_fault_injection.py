"""Failures lose nothing: ~500 creates, overwrites and deletes while the destination first fails 10 % of
its calls (500, 503 SlowDown, read timeouts), then refuses everything for 20 s (AccessDenied), then
recovers. After `crr dlq replay` and the queue draining, the replica equals the source exactly."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_.faults import FAULTS_VARIABLE, injected_counts
from crr_cli.localcloud.scenario import create_bucket, run_cli
from crr_cli.snapshot import compare, snapshot

pytestmark = pytest.mark.e2e

WEST, EAST = "us-west-1", "us-east-1"
SOURCE, DESTINATION, STACK = "fi-source", "fi-replica", "crr-faults"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
OPERATIONS, OUTAGE_SECONDS = 500, 20.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def drained(cloud: LocalCloud, queue_url: str) -> bool:
    attributes = cloud.client("sqs", WEST).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return bool(attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0")


def cli_json(cloud: LocalCloud, *args: str) -> Any:
    out = StringIO()
    with redirect_stdout(out):
        assert run_cli(cloud, STACK, WEST, [*args, "--json"]) == 0
    return json.loads(out.getvalue())


def test_the_replica_matches_the_source_after_flaky_calls_an_outage_and_a_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose workers consult a fault-control file, with quick retries
    control = tmp_path / "faults.json"
    control.write_text(json.dumps({"mode": "none"}))
    monkeypatch.setenv(FAULTS_VARIABLE, str(control))
    with LocalCloud(state_dir=tmp_path / "cloud") as cloud:
        cloud.start()
        stack = cloud.deploy(
            TEMPLATE,
            STACK,
            WEST,
            {
                "SourceBuckets": SOURCE,
                "DestinationBuckets": DESTINATION,
                "FunctionTimeoutSeconds": "2",
                "MaxReceiveCount": "8",
                "RetryBaseSeconds": "1",
                "MaximumConcurrency": "2",
            },
        )
        queue_url = stack.outputs["ReplicationQueueUrl"]
        source_s3, replica_s3 = cloud.client("s3", WEST), cloud.client("s3", EAST)
        create_bucket(source_s3, SOURCE, WEST, versioned=True)
        create_bucket(replica_s3, DESTINATION, EAST, versioned=False)
        cli_json(cloud, "rules", "add", "--source", SOURCE, "--destination", DESTINATION)
        rng = random.Random(2026)
        keys = [f"data/{index:03d}.txt" for index in range(120)]

        def change(number: int) -> None:
            key = rng.choice(keys)
            if rng.random() < 0.2:
                source_s3.delete_object(Bucket=SOURCE, Key=key)
            else:
                source_s3.put_object(
                    Bucket=SOURCE, Key=key, Body=f"{key} #{number}".encode(), Metadata={"n": str(number)}
                )

        # When 250 changes happen while 10 % of destination calls fail transiently
        control.write_text(json.dumps({"mode": "flaky", "rate": 0.1, "buckets": [DESTINATION], "seed": 7}))
        for number in range(250):
            change(number)
        # And 150 more during a 20 s outage of the destination (AccessDenied)
        control.write_text(json.dumps({"mode": "outage", "buckets": [DESTINATION], "code": "AccessDenied"}))
        outage_started = time.monotonic()
        for number in range(250, 400):
            change(number)
            # Spread over the outage on purpose: crr must retry and back off across a destination
            # that stays down for a real length of time (the thing under test).
            time.sleep(max(0.0, outage_started + (number - 249) * OUTAGE_SECONDS / 150 - time.monotonic()))
        wait_for(lambda: time.monotonic() - outage_started >= OUTAGE_SECONDS, OUTAGE_SECONDS + 5, "the outage")
        # And 100 more after the destination recovered
        control.write_text(json.dumps({"mode": "none"}))
        for number in range(400, OPERATIONS):
            change(number)
        wait_for(lambda: drained(cloud, queue_url), 180, "the replication queue to drain")
        dead = cli_json(cloud, "dlq", "list")
        # And the dead letters are replayed
        replay = cli_json(cloud, "dlq", "replay")
        wait_for(lambda: drained(cloud, queue_url), 180, "the replayed records to drain")
        difference = compare(snapshot(source_s3, SOURCE), snapshot(replica_s3, DESTINATION))
        retries = sum(path.read_text().count("record failed; retrying later") for path in cloud.log_dir.glob("*.log"))
        left = cli_json(cloud, "dlq", "list")
    # Then nothing is missing, stale or extra
    injected = injected_counts(control)
    with capsys.disabled():
        print(
            f"\n  fault injection: {OPERATIONS} changes; injected {injected}; retries {retries}; "
            f"DLQ arrivals {dead['total']} {[(r['code'], r['count']) for r in dead['reasons']]}; "
            f"replayed {replay['replayed']}; missing {len(difference.missing)}, "
            f"stale {len(difference.different)}, extra {len(difference.extra)}"
        )
    assert difference.equal, difference.describe()
    assert injected.get("AccessDenied", 0) > 0
    assert sum(injected.get(kind, 0) for kind in ("InternalError", "SlowDown", "ReadTimeout")) > 0
    assert dead["total"] > 0
    assert replay["replayed"] == dead["total"]
    assert left["total"] == 0
