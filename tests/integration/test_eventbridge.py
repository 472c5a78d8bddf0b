"""The EventBridge route end to end on the local cloud: S3 → EventBridge (default bus) → the stack's
rule → ReplicationQueue (admitted by its policy) → the real handler → the destination bucket."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack
from crr_cli.snapshot import compare, list_keys, snapshot
from tests.support import localcloud as cli

pytestmark = pytest.mark.integration

WEST, EAST = cli.WEST, cli.EAST
STACK = "crr-it-eventbridge"
SOURCE, DESTINATION = "it-src-eventbridge", "it-dst-eventbridge"
# A '+' that is a plus, a space, and non-ASCII: unquote_plus would have read 'a b c ünï'.
AWKWARD_KEYS = ("docs/a+b c ünï.txt", "c++/x+y=z.txt", "100% done/日本.txt")


@pytest.fixture(scope="module")
def stack(local_cloud: LocalCloud) -> DeployedStack:
    deployed = cli.deploy_pairs(local_cloud, STACK, [(SOURCE, DESTINATION)], ChangeRoute="EventBridge")
    cli.add_rule(local_cloud, STACK, SOURCE, DESTINATION)
    return deployed


def test_rules_add_turns_on_the_buckets_eventbridge_delivery_instead_of_a_queue_notification(
    local_cloud: LocalCloud, stack: DeployedStack
) -> None:
    # Given a stack deployed with ChangeRoute=EventBridge and a rule added with the CLI
    configuration = local_cloud.client("s3", WEST).get_bucket_notification_configuration(Bucket=SOURCE)
    # Then the bucket sends its events to EventBridge and has no queue configuration of crr's
    assert "EventBridgeConfiguration" in configuration
    assert configuration.get("QueueConfigurations", []) == []
    # And the stack's queue policy admits EventBridge only for the stack's own rule
    queue_url = stack.outputs["ReplicationQueueUrl"]
    policy = json.loads(
        local_cloud.client("sqs", WEST).get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )
    [from_events] = [s for s in policy["Statement"] if s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert from_events["Condition"] == {"ArnEquals": {"aws:SourceArn": stack.outputs["SourceChangesRuleArn"]}}


def test_awkward_keys_created_and_deleted_are_replicated_through_eventbridge(
    local_cloud: LocalCloud, stack: DeployedStack, eventually: Callable[..., Any]
) -> None:
    west, east = local_cloud.client("s3", WEST), local_cloud.client("s3", EAST)
    # When objects whose keys hold '+', spaces, '%' and non-ASCII are created
    for key in AWKWARD_KEYS:
        west.put_object(Bucket=SOURCE, Key=key, Body=key.encode(), ContentType="text/plain", Metadata={"k": "v"})
    # Then each reaches the destination under exactly its key, with its bytes and metadata
    difference = eventually(
        lambda: (d := compare(snapshot(west, SOURCE), snapshot(east, DESTINATION))).equal and d,
        timeout=30,
        what="the replica to equal the source",
    )
    assert sorted(list_keys(east, DESTINATION)) == sorted(AWKWARD_KEYS)
    assert difference.equal
    # When one of them is deleted (a delete marker in the versioned source)
    west.delete_object(Bucket=SOURCE, Key=AWKWARD_KEYS[0])
    # Then its replica goes, and only it
    eventually(
        lambda: sorted(list_keys(east, DESTINATION)) == sorted(AWKWARD_KEYS[1:]),
        timeout=30,
        what="the deleted key's replica to go",
    )


def test_status_reports_the_rule_wired_and_names_it_once_eventbridge_delivery_is_switched_off(
    local_cloud: LocalCloud, stack: DeployedStack
) -> None:
    # Given the wired rule, status says so
    wired = cli.run_crr(local_cloud, STACK, WEST, "status", "--json")
    assert wired.returncode == 0, wired.stderr
    assert [rule["wiring"] for rule in json.loads(wired.stdout)["rules"]] == ["wired"]
    # When other tooling rewrites the bucket's notification configuration without EventBridge
    local_cloud.client("s3", WEST).put_bucket_notification_configuration(Bucket=SOURCE, NotificationConfiguration={})
    try:
        # Then status names the rule and says what is missing
        report = json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)
        [rule] = report["rules"]
        assert rule["wiring"] == "missing"
        assert "EventBridge" in rule["wiring_problem"]
        assert SOURCE in rule["wiring_problem"]
        assert any(SOURCE in warning and "NOT WIRED" in warning for warning in report["warnings"])
    finally:
        # And `crr rules rewire` restores it
        rewired = cli.run_crr(local_cloud, STACK, WEST, "rules", "rewire", SOURCE)
        assert rewired.returncode == 0, rewired.stderr
    again = json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)
    assert [rule["wiring"] for rule in again["rules"]] == ["wired"]


def test_a_disabled_eventbridge_rule_is_reported_by_status_and_the_wiring_watch(
    local_cloud: LocalCloud, stack: DeployedStack
) -> None:
    # Given the stack's EventBridge rule disabled by hand (a console click, a drifted stack)
    events = local_cloud.client("events", WEST)
    name = stack.outputs["SourceChangesRuleArn"].rsplit("/", 1)[1]
    events.disable_rule(Name=name)
    try:
        # Then status names the rule, and says the stack's EventBridge rule is disabled
        [rule] = json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)["rules"]
        assert rule["wiring"] == "missing"
        assert f"the stack's EventBridge rule '{name}' is DISABLED" in rule["wiring_problem"]
        # And the scheduled watch reports it too
        invocation = local_cloud.invoke(stack.function("WiringWatchFunction").name, {})
        assert invocation.ok, invocation.error
        [finding] = invocation.payload["unwired"]
        assert finding["source_bucket"] == SOURCE
        assert "DISABLED" in finding["problem"]
    finally:
        events.enable_rule(Name=name)
    # When it is enabled again, Then the rule is wired
    [rule] = json.loads(cli.run_crr(local_cloud, STACK, WEST, "status", "--json").stdout)["rules"]
    assert rule["wiring"] == "wired"
