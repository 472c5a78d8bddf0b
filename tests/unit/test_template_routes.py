"""template.yaml's EventBridge route and wiring watch, after the SAM transform: what the manual promises
(docs/deploying.md, the EventBridge route; docs/operations.md, status and verify)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template
from crr_cli.localcloud.deploy.transform import transform_offline

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PARAMETERS = {"SourceBuckets": "src-a,src-b", "DestinationBuckets": "dst-a", "ChangeRoute": "EventBridge"}


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    sam = load_cfn_template(TEMPLATE)
    for resource in sam["Resources"].values():
        for uri in ("CodeUri", "ContentUri", "DefinitionUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = "s3://artifacts/code.zip"
    template: dict[str, Any] = transform_offline(sam, PARAMETERS, "us-west-1")
    assert template["Conditions"]["UseEventBridge"] == {"Fn::Equals": [{"Ref": "ChangeRoute"}, "EventBridge"]}
    return dict(template["Resources"])


def test_the_eventbridge_route_forwards_the_source_buckets_object_events_to_the_queue(
    resources: dict[str, Any],
) -> None:
    # Given the rule the EventBridge route creates
    rule = resources["SourceChangesRule"]
    properties = rule["Properties"]
    # Then it exists only on that route, listens on the default bus (where S3 sends), to S3's object
    # events of exactly the stack's source buckets
    assert rule["Condition"] == "UseEventBridge"
    assert properties["EventBusName"] == "default"
    assert properties["State"] == "ENABLED"
    pattern = properties["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert {"Object Created", "Object Deleted"} <= set(pattern["detail-type"])
    assert pattern["detail"] == {"bucket": {"name": {"Ref": "SourceBuckets"}}}
    # And it targets the replication queue, dead-lettering what it cannot deliver
    [target] = properties["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ReplicationQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ReplicationDLQ", "Arn"]}


def _events_statement(statement: Any) -> dict[str, Any]:
    condition, allowed, otherwise = statement["Fn::If"]
    assert (condition, otherwise) == ("UseEventBridge", {"Ref": "AWS::NoValue"})
    return dict(allowed)


def test_the_queues_admit_eventbridge_only_for_the_stacks_own_rule(resources: dict[str, Any]) -> None:
    # Given the replication queue's policy
    statements = resources["ReplicationQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    # Then S3 is still admitted for the named buckets, and EventBridge only on its route, only for the rule
    assert statements[0]["Principal"] == {"Service": "s3.amazonaws.com"}
    admitted = _events_statement(statements[1])
    assert admitted["Principal"] == {"Service": "events.amazonaws.com"}
    assert admitted["Action"] == "sqs:SendMessage"
    assert admitted["Resource"] == {"Fn::GetAtt": ["ReplicationQueue", "Arn"]}
    assert admitted["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["SourceChangesRule", "Arn"]}}}
    # And the DLQ admits the same rule's undeliverable events, on that route only
    dlq_policy = resources["ReplicationDLQPolicy"]
    assert dlq_policy["Condition"] == "UseEventBridge"
    [dead_letters] = dlq_policy["Properties"]["PolicyDocument"]["Statement"]
    assert dead_letters["Principal"] == {"Service": "events.amazonaws.com"}
    assert dead_letters["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["SourceChangesRule", "Arn"]}}}


def test_the_wiring_watch_runs_every_five_minutes_with_read_only_grants(resources: dict[str, Any]) -> None:
    # Given the watch function, its schedule and its role
    function = resources["WiringWatchFunction"]["Properties"]
    [schedule] = [
        r for r in resources.values() if r["Type"] == "AWS::Events::Rule" and "ScheduleExpression" in r["Properties"]
    ]
    [policy] = resources["WiringWatchFunctionRole"]["Properties"]["Policies"]
    # Then it runs every 5 minutes, knows the queue and the route, and may only list rules and read
    # the source buckets' notification configurations
    assert schedule["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    assert function["Environment"]["Variables"]["CHANGE_ROUTE"] == {"Ref": "ChangeRoute"}
    grants = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"] if "Sid" in s}
    assert grants["ListRules"]["Action"] == "dynamodb:Scan"
    assert grants["ListRules"]["Resource"] == {"Fn::GetAtt": ["RulesTable", "Arn"]}
    assert grants["ReadSourceNotificationConfigurations"]["Action"] == "s3:GetBucketNotification"
    assert "SourceBuckets" in str(grants["ReadSourceNotificationConfigurations"]["Resource"])
    # And on the EventBridge route it may read the state of the stack's own rule, nothing else
    [conditional] = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" in s]
    assert _events_statement(conditional) == {
        "Sid": "CheckSourceChangesRule",
        "Effect": "Allow",
        "Action": "events:DescribeRule",
        "Resource": {"Fn::GetAtt": ["SourceChangesRule", "Arn"]},
    }


def test_the_wiring_alarm_fires_on_an_unwired_rule_and_when_the_watch_stops(resources: dict[str, Any]) -> None:
    # Given the alarm on the watch's metric
    alarm = resources["ReplicationWiringAlarm"]["Properties"]
    # Then any unwired rule of this stack breaches it
    assert (alarm["Namespace"], alarm["MetricName"]) == ("crr", "RulesUnwired")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}]
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Maximum",
        "GreaterThanThreshold",
        0,
    )
    # And a period without any datapoint (the watch stopped) counts as breaching, over 3 scheduled runs
    assert alarm["TreatMissingData"] == "breaching"
    assert alarm["Period"] >= 3 * 5 * 60
