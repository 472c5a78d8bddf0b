"""Parity: S3 → EventBridge → SQS on the local cloud behaves as on AWS (`crr_cli.localcloud.seams.eventbridge`).

Each test names the AWS documentation it follows. moto alone sends every event with one fixed
sequencer and moto's own field names, offers it to disabled and scheduled rules and other buses,
delivers to a queue whatever its policy says, and hides EventBridgeConfiguration on GET.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket
from tests.support.events import load_event

pytestmark = pytest.mark.integration

REGION = "us-west-1"


@dataclass(frozen=True)
class Route:
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    rule_arn: str


def _queue(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _allow_events(sqs: Any, url: str, arn: str, rule_arn: str) -> None:
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }
    sqs.set_queue_attributes(
        QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [statement]})}
    )


@pytest.fixture
def route(local_cloud: LocalCloud) -> Iterator[Route]:
    """A versioned bucket sending to EventBridge, a default-bus rule for its object events whose SQS
    target has a DLQ; the DLQ admits the rule, the target queue's policy is left to each test."""
    suffix = uuid.uuid4().hex[:8]
    s3, sqs, events = (local_cloud.client(name, REGION) for name in ("s3", "sqs", "events"))
    bucket = f"parity-eb-{suffix}"
    create_bucket(s3, bucket, REGION, versioned=True)
    queue_url, queue_arn = _queue(sqs, f"parity-eb-{suffix}")
    dlq_url, dlq_arn = _queue(sqs, f"parity-eb-dlq-{suffix}")
    pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [bucket]}}}
    rule_arn = events.put_rule(Name=f"parity-eb-{suffix}", EventPattern=json.dumps(pattern))["RuleArn"]
    events.put_targets(
        Rule=f"parity-eb-{suffix}",
        Targets=[{"Id": "queue", "Arn": queue_arn, "DeadLetterConfig": {"Arn": dlq_arn}}],
    )
    _allow_events(sqs, dlq_url, dlq_arn, rule_arn)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})
    yield Route(bucket, queue_url, queue_arn, dlq_url, rule_arn)
    events.remove_targets(Rule=f"parity-eb-{suffix}", Ids=["queue"])
    events.delete_rule(Name=f"parity-eb-{suffix}")


def _receive(local_cloud: LocalCloud, queue_url: str, eventually: Callable[..., Any], count: int) -> list[Any]:
    sqs = local_cloud.client("sqs", REGION)
    received: list[Any] = []

    def enough() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        received.extend(answer.get("Messages", []))
        return len(received) >= count

    eventually(enough, timeout=10, what=f"{count} message(s) on {queue_url}")
    return received


def _nothing_arrives(local_cloud: LocalCloud, queue_url: str) -> bool:
    answer = local_cloud.client("sqs", REGION).receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
    return not answer.get("Messages")


def test_s3_events_reach_an_sqs_target_shaped_as_the_s3_user_guide_shows(
    local_cloud: LocalCloud, route: Route, eventually: Callable[..., Any]
) -> None:
    """AWS: "EventBridge event message structure", Amazon S3 User Guide,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html — `detail-type`,
    `source: aws.s3`, `time` without fraction, `resources: [bucket ARN]`, and in `detail.object` the
    key, size, `etag`, `version-id` and `sequencer`; `reason: PutObject`; a delete on a versioned
    bucket says `deletion-type: Delete Marker Created` and carries no size or ETag. Sequencers of one
    key grow with its writes (S3 User Guide, "Event message structure", sequencer)."""
    s3 = local_cloud.client("s3", REGION)
    _allow_events(local_cloud.client("sqs", REGION), route.queue_url, route.queue_arn, route.rule_arn)
    # Given a bucket whose events go to EventBridge, When a key is written twice and deleted
    first = s3.put_object(Bucket=route.bucket, Key="a+b c ü.txt", Body=b"one")
    s3.put_object(Bucket=route.bucket, Key="a+b c ü.txt", Body=b"two!")
    s3.delete_object(Bucket=route.bucket, Key="a+b c ü.txt")
    # Then the queue receives three EventBridge events in AWS's shape
    events = [json.loads(message["Body"]) for message in _receive(local_cloud, route.queue_url, eventually, 3)]
    created = [event for event in events if event["detail-type"] == "Object Created"]
    [deleted] = [event for event in events if event["detail-type"] == "Object Deleted"]
    assert len(created) == 2
    one = next(event for event in created if event["detail"]["object"]["size"] == 3)
    two = next(event for event in created if event["detail"]["object"]["size"] == 4)
    assert one["source"] == "aws.s3"
    assert one["resources"] == [f"arn:aws:s3:::{route.bucket}"]
    assert one["time"].endswith("Z")
    assert "." not in one["time"]
    assert one["detail"]["bucket"] == {"name": route.bucket}
    assert one["detail"]["reason"] == "PutObject"
    assert set(one["detail"]["object"]) == {"key", "size", "etag", "version-id", "sequencer"}
    assert one["detail"]["object"]["etag"] == first["ETag"].strip('"')
    assert one["detail"]["object"]["version-id"] == first["VersionId"]
    assert int(two["detail"]["object"]["sequencer"], 16) > int(one["detail"]["object"]["sequencer"], 16)
    # And the fields are exactly those of the user guide's examples (events/eventbridge/ holds them)
    documented_created, documented_deleted = (
        load_event("eventbridge/object-created"),
        load_event("eventbridge/object-deleted"),
    )
    assert set(one) == set(documented_created)
    assert set(one["detail"]) == set(documented_created["detail"])
    assert set(deleted["detail"]) == set(documented_deleted["detail"])
    assert set(deleted["detail"]["object"]) == set(documented_deleted["detail"]["object"])
    assert deleted["detail"]["deletion-type"] == "Delete Marker Created"
    assert {"size", "etag"}.isdisjoint(deleted["detail"]["object"])
    assert int(deleted["detail"]["object"]["sequencer"], 16) > int(two["detail"]["object"]["sequencer"], 16)


def test_a_queue_whose_policy_does_not_admit_the_rule_gets_nothing_and_the_event_is_dead_lettered(
    local_cloud: LocalCloud, route: Route, eventually: Callable[..., Any]
) -> None:
    """AWS: "Using resource-based policies for Amazon EventBridge", Amazon SQS permissions,
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html — the queue
    policy must allow events.amazonaws.com to send; and "Using dead-letter queues to process
    undelivered events in EventBridge", https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html
    — a permission error is not retried: the event goes to the target's DLQ with ERROR_CODE,
    ERROR_MESSAGE, RULE_ARN and TARGET_ARN attributes."""
    sqs = local_cloud.client("sqs", REGION)
    # Given a target queue whose policy admits only S3 (as crr's did before the EventBridge route)
    s3_only = {
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": route.queue_arn,
    }
    sqs.set_queue_attributes(
        QueueUrl=route.queue_url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": [s3_only]})}
    )
    # When an object is created
    local_cloud.client("s3", REGION).put_object(Bucket=route.bucket, Key="k", Body=b"x")
    # Then the event waits in the rule target's DLQ with EventBridge's reason, and the queue stays empty
    [letter] = _receive(local_cloud, route.dlq_url, eventually, 1)
    attributes = {name: value["StringValue"] for name, value in letter["MessageAttributes"].items()}
    assert attributes["RULE_ARN"] == route.rule_arn
    assert attributes["TARGET_ARN"] == route.queue_arn
    assert attributes["ERROR_CODE"] == "AccessDenied"
    assert json.loads(letter["Body"])["detail"]["object"]["key"] == "k"
    assert _nothing_arrives(local_cloud, route.queue_url)


def test_only_enabled_rules_of_the_default_bus_receive_s3_events(
    local_cloud: LocalCloud, route: Route, eventually: Callable[..., Any]
) -> None:
    """AWS: "Using EventBridge", Amazon S3 User Guide,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/EventBridge.html — S3 sends its events to
    the default event bus; and "Disabling or deleting a rule in Amazon EventBridge",
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-delete-rule.html — a disabled rule
    matches no events."""
    sqs, events = local_cloud.client("sqs", REGION), local_cloud.client("events", REGION)
    _allow_events(sqs, route.queue_url, route.queue_arn, route.rule_arn)
    name = route.rule_arn.rsplit("/", 1)[1]
    # Given the route's rule disabled, and the same rule on a custom bus
    events.disable_rule(Name=name)
    bus = f"{name}-bus"
    events.create_event_bus(Name=bus)
    pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [route.bucket]}}}
    custom_arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))["RuleArn"]
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": route.queue_arn}])
    _allow_events(sqs, route.queue_url, route.queue_arn, custom_arn)
    try:
        # When an object is created, Then no message arrives
        local_cloud.client("s3", REGION).put_object(Bucket=route.bucket, Key="quiet", Body=b"x")
        assert _nothing_arrives(local_cloud, route.queue_url)
        # When the default bus's rule is enabled again, Then the next change arrives
        events.enable_rule(Name=name)
        _allow_events(sqs, route.queue_url, route.queue_arn, route.rule_arn)
        local_cloud.client("s3", REGION).put_object(Bucket=route.bucket, Key="heard", Body=b"x")
        [message] = _receive(local_cloud, route.queue_url, eventually, 1)
        assert json.loads(message["Body"])["detail"]["object"]["key"] == "heard"
    finally:
        events.remove_targets(Rule=name, EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name=name, EventBusName=bus)
        events.delete_event_bus(Name=bus)


def test_the_notification_configuration_shows_eventbridge_when_it_is_on(local_cloud: LocalCloud, route: Route) -> None:
    """AWS: "GetBucketNotificationConfiguration", Amazon S3 API Reference,
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketNotificationConfiguration.html —
    the answer holds `EventBridgeConfiguration` when the bucket sends its events to EventBridge, so a
    read-modify-write of the configuration keeps it on."""
    s3 = local_cloud.client("s3", REGION)
    # Given a bucket with EventBridge on, Then GET shows it
    assert "EventBridgeConfiguration" in s3.get_bucket_notification_configuration(Bucket=route.bucket)
    # When the configuration is replaced without it, Then GET no longer shows it
    s3.put_bucket_notification_configuration(Bucket=route.bucket, NotificationConfiguration={})
    assert "EventBridgeConfiguration" not in s3.get_bucket_notification_configuration(Bucket=route.bucket)
