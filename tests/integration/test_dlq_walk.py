"""`crr dlq list` / `crr dlq replay` walk the whole DLQ on a queue whose short polls sample, as SQS's do."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from crr.adapters.sqs import SqsDeadLetterQueue, SqsQueueSender
from crr.failures import FailureRecord
from crr.replay import DeadLetters, ReplayRequest
from crr_cli.localcloud.cloud import LocalCloud
from tests.support.events import load_event

pytestmark = pytest.mark.integration

REGION = "us-west-1"
LETTERS = 35


class NoFailureLog:
    """Every letter here carries its reason as attributes: the failure log is never asked."""

    def find(self, message_id: str) -> FailureRecord | None:
        raise AssertionError(f"letter {message_id} should carry its reason")

    def record(self, *args: object, **kwargs: object) -> FailureRecord:
        raise AssertionError("walking the DLQ records no failure")


@pytest.fixture
def queues(local_cloud: LocalCloud) -> Iterator[tuple[str, str]]:
    sqs = local_cloud.client("sqs", REGION)
    names = (f"walk-dlq-{uuid.uuid4().hex[:8]}", f"walk-main-{uuid.uuid4().hex[:8]}")
    urls = tuple(sqs.create_queue(QueueName=name)["QueueUrl"] for name in names)
    yield urls[0], urls[1]
    for url in urls:
        sqs.delete_queue(QueueUrl=url)


def _dead_letter(sqs: Any, url: str, key: str) -> None:
    document = load_event("s3/object-created-put")
    document["Records"][0]["s3"]["object"]["key"] = key
    attributes = {
        "crr-error-code": "NoSuchBucket",
        "crr-error-message": "the destination bucket is gone",
        "crr-attempts": "1",
        "crr-last-failure": datetime.now(UTC).isoformat(),
    }
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(document),
        MessageAttributes={name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()},
    )


def test_list_and_replay_walk_every_dead_letter_although_short_polls_sample(
    local_cloud: LocalCloud, queues: tuple[str, str]
) -> None:
    # Given a DLQ holding 35 dead letters, on a local cloud whose short polls ask only some servers
    dlq_url, main_url = queues
    sqs = local_cloud.client("sqs", REGION)
    for index in range(LETTERS):
        _dead_letter(sqs, dlq_url, f"k/{index}")
    letters = DeadLetters(SqsDeadLetterQueue(sqs, dlq_url), NoFailureLog())

    # When they are listed
    summary = letters.summarize()

    # Then every one is counted, and the listing leaves them all in the DLQ
    assert summary.total == LETTERS
    assert summary.complete

    # When they are all replayed
    report = letters.replay(ReplayRequest(), SqsQueueSender(sqs, main_url))

    # Then every one went back to the replication queue, and the DLQ is empty
    assert (report.examined, report.replayed, report.complete) == (LETTERS, LETTERS, True)
    counts = sqs.get_queue_attributes(QueueUrl=main_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert counts["Attributes"]["ApproximateNumberOfMessages"] == str(LETTERS)
    left = sqs.get_queue_attributes(
        QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
