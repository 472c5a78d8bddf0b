"""Replication that cannot stop silently, on the local cloud: other tooling overwrites a source bucket's
notification configuration; `crr status` and the WiringWatchFunction name the rule and what is missing,
and `crr rules rewire` brings replication back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.snapshot import list_keys
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-it-wiring"
SOURCE, DESTINATION = "it-src-wiring", "it-dst-wiring"
RULE = SOURCE


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    deployed = cli.deploy_pairs(local_cloud, STACK, [(SOURCE, DESTINATION)])
    cli.add_rule(local_cloud, STACK, SOURCE, DESTINATION)
    return deployed


def watch(local_cloud: LocalCloud, stack: DeployedStack) -> dict[str, Any]:
    invocation = local_cloud.invoke(stack.function("WiringWatchFunction").name, {})
    assert invocation.ok, invocation.error
    report: dict[str, Any] = invocation.payload
    return report


def test_an_overwritten_notification_configuration_is_reported_and_rewire_restores_replication(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # Given a wired rule: status and the watch both say so
    assert [
        rule["wiring"] for rule in json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)["rules"]
    ] == ["wired"]
    assert watch(local_cloud, stack)["unwired"] == []
    # When infrastructure-as-code writes the bucket's notification configuration without crr's entry
    west.put_bucket_notification_configuration(Bucket=SOURCE, NotificationConfiguration={})
    west.put_object(Bucket=SOURCE, Key="written-while-unwired.txt", Body=b"lost?")
    # Then status names the rule and the missing configuration, in the JSON and in the text
    report = json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)
    [rule] = report["rules"]
    assert rule["wiring"] == "missing"
    assert f"'crr-{RULE}'" in rule["wiring_problem"]
    assert "missing" in rule["wiring_problem"]
    text = cli.run_crr(local_cloud, STACK, WEST, "status")
    assert text.returncode == 0, text.stderr
    assert f"rule {RULE} is NOT WIRED" in text.stdout
    assert f"crr rules rewire {RULE}" in text.stdout
    # And the scheduled watch reports it (its RulesUnwired metric feeds ReplicationWiringAlarm)
    [finding] = watch(local_cloud, stack)["unwired"]
    assert (finding["rule_id"], finding["source_bucket"]) == (RULE, SOURCE)
    # And nothing reached the replica: the rule really had stopped
    assert "written-while-unwired.txt" not in list_keys(east, DESTINATION)
    # When the rule is rewired, Then new changes replicate again and both checks say wired
    rewired = cli.run_crr(local_cloud, STACK, WEST, "rules", "rewire", RULE)
    assert rewired.returncode == 0, rewired.stderr
    west.put_object(Bucket=SOURCE, Key="after-rewire.txt", Body=b"back")
    eventually(lambda: "after-rewire.txt" in list_keys(east, DESTINATION), timeout=30, what="replication to resume")
    assert watch(local_cloud, stack)["unwired"] == []
