"""A DynamoDB outage of the functions, end to end on the local cloud (issue 12): while the functions
cannot reach their table, `crr status` still counts their failures (CloudWatch, from the metrics
their logs publish) and every change reaching the DLQ carries its reason; once the outage ends the
changes are replayed and nothing is lost. The operator's own reads of the table are untouched by the
outage (the fault seam lives in the functions' processes); a status run that cannot read the table
says so instead of failing or claiming no failures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.localcloud.lambda_.faults import injected_counts
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-outage"
SOURCE, DESTINATION = "outage-src", "outage-dst"
KEYS = [f"outage/{index}.txt" for index in range(4)]
# A 2 s function, 2 deliveries per message, retries 1 s apart: the outage plays out in seconds.
PARAMETERS = {"FunctionTimeoutSeconds": "2", "MaxReceiveCount": "2", "RetryBaseSeconds": "1", "MaximumConcurrency": "2"}


@dataclass(frozen=True)
class OutageStack:
    cloud: LocalCloud
    stack: DeployedStack
    faults: Path

    def crr(self, *args: str, **environment: str) -> subprocess.CompletedProcess[str]:
        return cli.run_crr(self.cloud, STACK, WEST, *args, environment_changes=environment)

    def crr_json(self, *args: str) -> dict[str, Any]:
        answer = self.crr(*args, "--json")
        assert answer.returncode == 0, answer.stderr
        document: dict[str, Any] = json.loads(answer.stdout)
        return document

    def inject(self, **settings: Any) -> None:
        self.faults.write_text(json.dumps(settings), encoding="utf-8")


@pytest.fixture(scope="module")
def outage(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> OutageStack:
    """The real template on the local cloud, its functions' calls passing through the fault seam; a rule."""
    faults = tmp_path_factory.mktemp("outage") / "faults.json"
    stack = cli.deploy_pairs_with_faults(local_cloud, STACK, [(SOURCE, DESTINATION)], faults, **PARAMETERS)
    cli.add_rule(local_cloud, STACK, SOURCE, DESTINATION)
    return OutageStack(local_cloud, stack, faults)


def replica_bodies(cloud: LocalCloud) -> dict[str, bytes]:
    east = cloud.client("s3", EAST)
    listed = east.list_objects_v2(Bucket=DESTINATION).get("Contents", [])
    return {item["Key"]: east.get_object(Bucket=DESTINATION, Key=item["Key"])["Body"].read() for item in listed}


def test_failures_stay_visible_through_a_dynamodb_outage_and_nothing_is_lost(
    outage: OutageStack, eventually: Callable[..., Any]
) -> None:
    cloud = outage.cloud
    west = cloud.client("s3", WEST)
    # Given a rule that replicates
    west.put_object(Bucket=SOURCE, Key="before.txt", Body=b"before the outage")
    eventually(lambda: "before.txt" in replica_bodies(cloud), timeout=30, what="the first replica")

    # When every DynamoDB call of the functions fails, and objects are written to the source
    outage.inject(mode="outage", services=["dynamodb"], code="InternalServerError")
    for key in KEYS:
        west.put_object(Bucket=SOURCE, Key=key, Body=f"written during the outage: {key}".encode())

    # Then, while the outage lasts, `crr status` shows failed attempts (CloudWatch) and says why the
    # table holds no failure record, where it used to show 0 failures
    def failing() -> dict[str, Any] | None:
        document = outage.crr_json("status")
        return document if (document["stack"]["failed_attempts"] or 0) > 0 else None

    during = eventually(failing, timeout=60, what="status to count failed attempts")
    assert during["stack"]["rules_table_readable"] is True
    assert during["stack"]["failures_last_hour"] == 0  # the functions could record none
    assert any("the rules table holds no failure record" in warning for warning in during["warnings"])

    # And every change reaches the DLQ with its reason (their last delivery dead-letters them), none Unknown
    def all_dead_lettered() -> dict[str, Any] | None:
        summary = outage.crr_json("dlq", "list")
        return summary if summary["total"] == len(KEYS) and summary["complete"] else None

    summary = eventually(all_dead_lettered, timeout=60, what="every change of the outage in the DLQ")
    [reason] = summary["reasons"]
    assert (reason["code"], reason["count"]) == ("InternalServerError", len(KEYS))
    assert set(reason["sample_keys"]) <= set(KEYS)
    assert injected_counts(outage.faults).get("InternalServerError", 0) > 0

    # And a status run that cannot read the table itself says so, instead of failing or claiming 0
    blind = outage.crr("status", "--json", AWS_ENDPOINT_URL_DYNAMODB=cloud.endpoint_url)
    assert blind.returncode == 0, blind.stderr
    unreadable = json.loads(blind.stdout)
    assert (unreadable["stack"]["rules_table_readable"], unreadable["rules"]) == (False, [])
    assert unreadable["stack"]["failures_last_hour"] is None
    assert unreadable["stack"]["failed_attempts"] > 0
    assert unreadable["warnings"][0].startswith("the rules table cannot be read")

    # When the outage ends and the dead letters are replayed
    outage.inject(mode="none")
    replayed = outage.crr_json("dlq", "replay", "--reason", "InternalServerError")
    assert (replayed["replayed"], replayed["complete"]) == (len(KEYS), True)

    # Then every object is replicated with its bytes, and the DLQ is empty: nothing was lost
    expected = {"before.txt": b"before the outage"} | {
        key: f"written during the outage: {key}".encode() for key in KEYS
    }
    eventually(lambda: replica_bodies(cloud) == expected, timeout=60, what="every replica after the outage")
    after = outage.crr_json("status")
    assert after["stack"]["dead_letters"]["depth"] == 0
    [rule] = after["rules"]
    assert rule["rule_id"] == SOURCE
