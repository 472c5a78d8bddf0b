"""The failure log (DynamoDB) and the queue side of failures (SQS), over moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crr.adapters.dynamodb import DynamoFailureLog
from crr.adapters.sqs import SqsDeadLetterQueue, SqsFailedMessages, SqsQueueSender
from crr.failures import FailureKind, FailureReason
from crr.models import QueueMessage
from crr.replay import DeadLetters, ReplayRequest
from tests.support.aws import client, create_rules_table


@pytest.fixture
def queues(aws: None) -> dict[str, Any]:
    sqs = client("sqs", "us-west-1")
    dynamodb = client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, "rules")
    return {
        "sqs": sqs,
        "dynamodb": dynamodb,
        "queue": sqs.create_queue(QueueName="replication")["QueueUrl"],
        "dlq": sqs.create_queue(QueueName="replication-dlq")["QueueUrl"],
    }


def test_each_failed_attempt_counts_and_keeps_the_first_failure_time(queues: dict[str, Any]) -> None:
    times = iter([datetime(2026, 11, 25, 10, tzinfo=UTC), datetime(2026, 11, 25, 10, 5, tzinfo=UTC)])
    log = DynamoFailureLog(queues["dynamodb"], "rules", clock=lambda: next(times))
    message = QueueMessage("m-1", "{}", "rh", 1)
    log.record(message, FailureReason(FailureKind.TRANSIENT, "SlowDown", "slow"), rule_id="r", bucket="b", key="k")
    second = log.record(
        message, FailureReason(FailureKind.TRANSIENT, "503", "unavailable"), rule_id="r", bucket="b", key="k"
    )
    assert (second.attempts, second.reason.code, second.key) == (2, "503", "k")
    assert second.last_failure - second.first_failure == timedelta(minutes=5)
    assert log.find("m-1") == second
    assert log.find("unknown") is None


def test_a_dead_lettered_message_carries_its_reason_and_can_be_replayed(queues: dict[str, Any]) -> None:
    # Given a message dead-lettered with its failure record
    sqs, log = queues["sqs"], DynamoFailureLog(queues["dynamodb"], "rules")
    message = QueueMessage("m-2", '{"Records": []}', "rh", 3)
    record = log.record(
        message, FailureReason(FailureKind.PERMANENT, "AccessDenied", "denied"), rule_id="r", bucket="b", key=None
    )
    SqsFailedMessages(sqs, queues["queue"], queues["dlq"]).dead_letter(message, record)
    letters = DeadLetters(SqsDeadLetterQueue(sqs, queues["dlq"]), log)
    # When the DLQ is summarised, Then the reason comes from the message's attributes
    summary = letters.summarize()
    assert [(reason.code, reason.count) for reason in summary.reasons] == [("AccessDenied", 1)]
    # When it is replayed, Then it is back in the replication queue and gone from the DLQ
    report = letters.replay(ReplayRequest(), SqsQueueSender(sqs, queues["queue"]))
    assert report.replayed == 1
    back = sqs.receive_message(QueueUrl=queues["queue"])["Messages"]
    assert [m["Body"] for m in back] == ['{"Records": []}']
    assert sqs.receive_message(QueueUrl=queues["dlq"]).get("Messages", []) == []


def test_retry_later_delays_only_that_message(queues: dict[str, Any]) -> None:
    sqs = queues["sqs"]
    sqs.send_message(QueueUrl=queues["queue"], MessageBody="a")
    [received] = sqs.receive_message(QueueUrl=queues["queue"], VisibilityTimeout=0)["Messages"]
    message = QueueMessage(received["MessageId"], "a", received["ReceiptHandle"], 1)
    SqsFailedMessages(sqs, queues["queue"], queues["dlq"]).retry_later(message, 300)
    assert sqs.receive_message(QueueUrl=queues["queue"]).get("Messages", []) == []
