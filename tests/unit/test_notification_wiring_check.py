"""A rule whose source bucket no longer reaches the queue is named, with what is missing: the
notification adapter's check (moto), ``check_wiring`` and ``crr status``'s report (fakes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.notifications import S3BucketNotifications, WiringCheck
from crr.errors import StorageError
from crr.models import QueueDepth
from crr.notification_wiring_check import check_wiring
from crr_cli.operations.status import StackStatus, WiringState
from tests.support.aws import client, create_bucket
from tests.support.fakes import (
    FakeBacklogAgeGauge,
    FakeFailureCounter,
    FakeProgress,
    FakeQueueGauge,
    FakeRules,
    FakeWiringProbe,
)
from tests.support.rules import make_rule, named_rule

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def denied(bucket: str) -> StorageError:
    return StorageError("GetBucketNotificationConfiguration", bucket, None, "AccessDenied", "Access Denied")


def test_check_wiring_names_unwired_rules_and_keeps_going_past_one_it_cannot_read() -> None:
    # Given three rules: one wired, one whose configuration was rewritten, one whose bucket denies reading
    rules = FakeRules(named_rule("fine"), named_rule("gone"), named_rule("hidden"))
    probe = FakeWiringProbe(gone="notification configuration 'crr-gone' is missing", hidden=denied("hidden-src"))
    # When the wiring is checked
    report = check_wiring(rules, probe, NOW)
    # Then the rewritten one is unwired with its reason, the unreadable one unchecked, all three counted
    assert report.rules_checked == 3
    assert [(f.rule_id, f.source_bucket, f.problem) for f in report.unwired] == [
        ("gone", "gone-src", "notification configuration 'crr-gone' is missing")
    ]
    assert [f.rule_id for f in report.unchecked] == ["hidden"]
    assert "AccessDenied" in report.unchecked[0].problem


def test_status_marks_each_rules_wiring_and_warns_by_name_about_the_unwired_one() -> None:
    # Given a stack with a wired rule, an unwired one and one whose wiring cannot be read
    status = StackStatus(
        stack="crr-test",
        region="us-west-1",
        rules=FakeRules(named_rule("fine"), named_rule("gone"), named_rule("hidden")),
        progress=FakeProgress(),
        queue=FakeQueueGauge(QueueDepth(visible=0, in_flight=0)),
        dead_letters=FakeQueueGauge(QueueDepth(visible=0, in_flight=0)),
        backlog_age=FakeBacklogAgeGauge(),
        failures=FakeFailureCounter(),
        wiring=FakeWiringProbe(
            gone="bucket 'gone-src': configuration 'crr-gone' is missing", hidden=denied("hidden-src")
        ),
        clock=lambda: NOW,
    )
    # When the report is read
    report = status.report()
    # Then each rule says whether it is wired, the unwired one says what is missing
    by_id = {health.rule_id: health for health in report.rules}
    assert by_id["fine"].wiring is WiringState.WIRED
    assert by_id["gone"].wiring is WiringState.MISSING
    assert by_id["gone"].wiring_problem == "bucket 'gone-src': configuration 'crr-gone' is missing"
    assert by_id["hidden"].wiring is WiringState.UNKNOWN
    # And the warnings name the unwired rule and how to restore it, and the unreadable one
    assert any("rule gone is NOT WIRED" in w and "crr rules rewire gone" in w for w in report.warnings)
    assert any(w.startswith("rule hidden: wiring could not be checked") for w in report.warnings)


SRC, QUEUE = "wired-src", "replication"


@pytest.fixture
def wiring(aws: None) -> dict[str, Any]:
    s3, sqs = client("s3", "us-west-1"), client("sqs", "us-west-1")
    create_bucket(s3, SRC, "us-west-1")
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = make_rule(
        rule_id="photos",
        source_bucket=SRC,
        destination_bucket="dst",
        prefixes=("a/", "b/"),
    )
    notifications = S3BucketNotifications(ClientFactory())
    notifications.subscribe(rule, arn)
    return {"s3": s3, "rule": rule, "check": WiringCheck(notifications, arn), "arn": arn}


def test_a_subscribed_rule_is_wired(wiring: dict[str, Any]) -> None:
    assert wiring["check"].problem(wiring["rule"]) is None


def test_a_rewritten_configuration_names_what_is_missing(wiring: dict[str, Any]) -> None:
    # Given other tooling kept one of the rule's two configurations but narrowed it to creates
    s3 = wiring["s3"]
    [first, _] = s3.get_bucket_notification_configuration(Bucket=SRC)["QueueConfigurations"]
    first["Events"] = ["s3:ObjectCreated:*"]
    s3.put_bucket_notification_configuration(Bucket=SRC, NotificationConfiguration={"QueueConfigurations": [first]})
    # When the wiring is checked
    problem = wiring["check"].problem(wiring["rule"])
    # Then it names the bucket, the configuration that lost deletes and the one that is gone
    assert problem is not None
    assert problem.startswith(f"bucket '{SRC}': ")
    assert "'crr-photos-0' lacks s3:ObjectRemoved:*" in problem
    assert "'crr-photos-1' to the replication queue is missing" in problem


def test_a_configuration_pointing_elsewhere_is_not_wiring(wiring: dict[str, Any]) -> None:
    # Given the rule's configurations rewritten to send to another queue
    s3 = wiring["s3"]
    configurations = s3.get_bucket_notification_configuration(Bucket=SRC)["QueueConfigurations"]
    other = wiring["arn"].replace(QUEUE, "someone-else")
    for configuration in configurations:
        configuration["QueueArn"] = other
    client("sqs", "us-west-1").create_queue(QueueName="someone-else")
    s3.put_bucket_notification_configuration(
        Bucket=SRC, NotificationConfiguration={"QueueConfigurations": configurations}
    )
    # Then the check says where they send instead
    problem = wiring["check"].problem(wiring["rule"])
    assert problem is not None
    assert f"'crr-photos-0' sends to {other}" in problem
