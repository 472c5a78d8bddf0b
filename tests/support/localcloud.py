"""Helpers for tests on the embedded local cloud: run the CLI as a user would, and watch a queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.localcloud.lambda_.faults import FAULTS_VARIABLE
from crr_cli.localcloud.scenario import create_bucket


def run_crr(
    cloud: LocalCloud, stack: str, region: str, *args: str, environment_changes: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The operator CLI as its own process, pointed at the local cloud through the standard environment
    (then ``environment_changes``, to point one service elsewhere, say).

    A stale AWS_ENDPOINT_URL_<SERVICE> in the shell would override the local cloud's endpoints, so
    every inherited endpoint variable is dropped first.
    """
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_ENDPOINT_URL")}
    environment.update(cloud.aws_environment(), AWS_REGION=region)
    environment.pop("AWS_PROFILE", None)
    environment.update(environment_changes or {})
    return subprocess.run(
        [sys.executable, "-m", "crr_cli.main", "--stack", stack, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def queue_drained(cloud: LocalCloud, region: str, queue_url: str) -> bool:
    """No message waiting and none in flight."""
    attributes = cloud.client("sqs", region).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return bool(attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0")


TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
WEST, EAST = "us-west-1", "us-east-1"


def deploy_pairs(cloud: LocalCloud, stack: str, pairs: Iterable[tuple[str, str]], **parameters: str) -> DeployedStack:
    """The real template deployed in us-west-1 for these (source, destination) buckets, which it creates:
    each source versioned in us-west-1, each destination in us-east-1."""
    pairs = list(pairs)
    deployed = cloud.deploy(
        TEMPLATE,
        stack,
        WEST,
        {
            "SourceBuckets": ",".join(source for source, _ in pairs),
            "DestinationBuckets": ",".join(destination for _, destination in pairs),
            **parameters,
        },
    )
    west, east = cloud.client("s3", WEST), cloud.client("s3", EAST)
    for source, destination in pairs:
        create_bucket(west, source, WEST, versioned=True)
        create_bucket(east, destination, EAST)
    return deployed


def deploy_pairs_with_faults(
    cloud: LocalCloud, stack: str, pairs: Iterable[tuple[str, str]], faults: Path, **parameters: str
) -> DeployedStack:
    """``deploy_pairs``, its function workers consulting the fault-control file ``faults`` (written
    with no fault first; a test rewrites it to inject some, see crr_cli.localcloud.lambda_.faults)."""
    faults.write_text(json.dumps({"mode": "none"}), encoding="utf-8")
    previous = os.environ.get(FAULTS_VARIABLE)
    os.environ[FAULTS_VARIABLE] = str(faults)
    try:
        return deploy_pairs(cloud, stack, pairs, **parameters)
    finally:
        if previous is None:
            del os.environ[FAULTS_VARIABLE]
        else:
            os.environ[FAULTS_VARIABLE] = previous


def add_rule(cloud: LocalCloud, stack: str, source: str, destination: str) -> None:
    """`crr rules add` for a one-way rule of the stack in us-west-1, which must succeed."""
    added = run_crr(cloud, stack, WEST, "rules", "add", "--source", source, "--destination", destination)
    assert added.returncode == 0, added.stderr
