"""Failure classification, backoff, and what the message handler does with each kind of failure."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from crr.errors import (
    AccessDeniedError,
    BucketMissingError,
    MalformedEventError,
    ReconcileContentionError,
    StateStoreError,
    StorageError,
)
from crr.failures import Backoff, FailureKind, FailureReason, FailureRecord, classify
from crr.message_handling import RecordFailedError, ReplicationMessageHandler
from crr.models import QueueMessage
from crr.replication import Replicator
from crr.rules import ReplicationRule
from tests.support.events import load_body
from tests.support.fakes import FakeFailedMessages, FakeFailureLog, FakeLedger, FakeProgress, FakeRules, FakeS3
from tests.support.rules import make_rule
from tests.unit.test_replication import DST


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (
            StorageError("CopyObject", "b", "k", "SlowDown", "reduce your request rate"),
            FailureKind.TRANSIENT,
            "SlowDown",
        ),
        (StorageError("CopyObject", "b", "k", "503", "unavailable"), FailureKind.TRANSIENT, "503"),
        (StorageError("CopyObject", "b", "k", "InternalError", "oops"), FailureKind.TRANSIENT, "InternalError"),
        (
            StateStoreError("throttled", "ProvisionedThroughputExceededException"),
            FailureKind.TRANSIENT,
            "ProvisionedThroughputExceededException",
        ),
        (ReconcileContentionError("busy key"), FailureKind.TRANSIENT, "ReconcileContention"),
        (TimeoutError("read timed out"), FailureKind.TRANSIENT, "TimeoutError"),
        (AccessDeniedError("CopyObject", "b", "k", "AccessDenied", "denied"), FailureKind.PERMANENT, "AccessDenied"),
        (BucketMissingError("CopyObject", "b", "k", "NoSuchBucket", "gone"), FailureKind.PERMANENT, "NoSuchBucket"),
        (
            StorageError("CopyObject", "b", "k", "InvalidObjectState", "archived"),
            FailureKind.PERMANENT,
            "InvalidObjectState",
        ),
        (
            StorageError("CopyObject", "b", "k", "KMS.AccessDeniedException", "no key"),
            FailureKind.PERMANENT,
            "KMS.AccessDeniedException",
        ),
        (StateStoreError("no table", "ResourceNotFoundException"), FailureKind.PERMANENT, "ResourceNotFoundException"),
        (MalformedEventError("not JSON"), FailureKind.PERMANENT, "MalformedEvent"),
    ],
)
def test_failures_are_classified_by_whether_retrying_can_help(error: Exception, kind: FailureKind, code: str) -> None:
    reason = classify(error)
    assert (reason.kind, reason.code) == (kind, code)


@pytest.mark.parametrize("attempt", range(1, 20))
def test_backoff_grows_within_its_bounds(attempt: int) -> None:
    backoff = Backoff(base_seconds=5, cap_seconds=900)
    ceiling = min(900, 5 * 2 ** (attempt - 1))
    delays = [backoff.delay(attempt, random.Random(seed)) for seed in range(50)]
    assert all(ceiling // 2 <= delay <= ceiling for delay in delays)
    assert all(1 <= delay <= 900 for delay in delays)


def message_handler_with(s3: FakeS3) -> tuple[ReplicationMessageHandler, FakeFailureLog, FakeFailedMessages]:
    failures, queues = FakeFailureLog(), FakeFailedMessages(refuse_hand_back=True)
    replicator = Replicator(FakeRules(make_rule(source_bucket="crr-demo-source")), s3, FakeLedger(), FakeProgress())
    return ReplicationMessageHandler(replicator, failures, queues, Backoff(base_seconds=4)), failures, queues


def message(body: str, receive_count: int = 1) -> QueueMessage:
    return QueueMessage(message_id="m-1", body=body, receipt_handle="r-1", receive_count=receive_count)


def test_a_transient_failure_is_recorded_delayed_with_backoff_and_reported_failed() -> None:
    # Given a destination that answers SlowDown
    s3 = slowed_down_s3()
    message_handler, failures, queues = message_handler_with(s3)
    # When its third delivery fails
    with pytest.raises(RecordFailedError, match="SlowDown"):
        message_handler.handle(message(load_body("s3/object-created-put"), receive_count=3))
    # Then the reason is recorded with rule and key, and only this message is delayed by its backoff
    [recorded] = failures.recorded
    assert (recorded.message_id, recorded.reason.code, recorded.rule_id, recorded.key) == (
        "m-1",
        "SlowDown",
        "r1",
        "reports/2026/summary.csv",
    )
    [(delayed_id, delay)] = queues.delayed
    assert delayed_id == "m-1"
    assert 8 <= delay <= 16
    assert queues.dead == []


def test_a_permanent_failure_goes_to_the_dlq_at_once_and_is_acknowledged() -> None:
    # Given a destination bucket that no longer exists
    s3 = FakeS3()
    s3.create_bucket("crr-demo-source", "us-west-1")
    s3.put("crr-demo-source", "reports/2026/summary.csv", b"x")
    message_handler, failures, queues = message_handler_with(s3)
    # When its first delivery fails, Then it is dead-lettered with its code and not retried
    assert message_handler.handle(message(load_body("s3/object-created-put"))) == []
    assert queues.dead == [("m-1", "NoSuchBucket")]
    assert queues.delayed == []
    assert failures.recorded[0].reason.kind is FailureKind.PERMANENT


def test_a_failed_dead_letter_send_fails_the_record_so_nothing_is_lost() -> None:
    # Given a DLQ that cannot be written to
    s3 = FakeS3()
    message_handler, _, queues = message_handler_with(s3)

    def unavailable(message: QueueMessage, record: FailureRecord) -> None:
        raise StorageError("SendMessage", "dlq", None, "ServiceUnavailable", "try later")

    queues.dead_letter = unavailable  # type: ignore[method-assign]
    # When a malformed message must be dead-lettered, Then the error escapes and the record is retried
    with pytest.raises(StorageError, match="ServiceUnavailable"):
        message_handler.handle(message("{garbage"))


class UnreachableTable:
    """The rules table during a DynamoDB outage of the function: rules and failure log both fail."""

    def __init__(self) -> None:
        self.attempts = 0

    def _fail(self, operation: str) -> StateStoreError:
        self.attempts += 1
        return StateStoreError(f"{operation} failed: InternalServerError: injected outage", "InternalServerError")

    def rule_for_source(self, bucket: str) -> ReplicationRule | None:
        raise self._fail("GetItem")

    def record(
        self, message: QueueMessage, reason: FailureReason, *, rule_id: str | None, bucket: str | None, key: str | None
    ) -> FailureRecord:
        raise self._fail("UpdateItem")

    def find(self, message_id: str) -> FailureRecord | None:
        raise self._fail("GetItem")


def outage_message_handler(
    max_receive_count: int,
) -> tuple[ReplicationMessageHandler, UnreachableTable, FakeFailedMessages]:
    table, queues = UnreachableTable(), FakeFailedMessages(refuse_hand_back=True)
    replicator = Replicator(table, FakeS3(), FakeLedger(), FakeProgress())
    message_handler = ReplicationMessageHandler(
        replicator, table, queues, Backoff(base_seconds=4), max_receive_count=max_receive_count
    )
    return message_handler, table, queues


def slowed_down_s3() -> FakeS3:
    """A source holding reports/2026/summary.csv and a destination whose CopyObject answers SlowDown."""
    s3 = FakeS3()
    s3.create_bucket("crr-demo-source", "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    s3.put("crr-demo-source", "reports/2026/summary.csv", b"x")

    def slow_down(request: object) -> str:
        raise StorageError("CopyObject", DST, "reports/2026/summary.csv", "SlowDown", "reduce your request rate")

    s3.copy = slow_down  # type: ignore[method-assign]
    return s3


def slow_down_message_handler(
    max_receive_count: int,
) -> tuple[ReplicationMessageHandler, FakeFailureLog, FakeFailedMessages]:
    s3 = slowed_down_s3()
    failures, queues = FakeFailureLog(), FakeFailedMessages(refuse_hand_back=True)
    replicator = Replicator(FakeRules(make_rule(source_bucket="crr-demo-source")), s3, FakeLedger(), FakeProgress())
    message_handler = ReplicationMessageHandler(
        replicator, failures, queues, Backoff(base_seconds=4), max_receive_count=max_receive_count
    )
    return message_handler, failures, queues


@pytest.mark.parametrize(("receive_count", "dead_lettered"), [(1, False), (2, False), (3, True), (4, True)])
def test_a_transient_failure_at_the_queues_last_delivery_is_dead_lettered_with_its_reason(
    receive_count: int, dead_lettered: bool
) -> None:
    # Given a destination answering SlowDown, and a queue whose redrive allows 3 deliveries
    message_handler, failures, queues = slow_down_message_handler(max_receive_count=3)
    # When delivery number `receive_count` fails
    if dead_lettered:
        assert message_handler.handle(message(load_body("s3/object-created-put"), receive_count)) == []
    else:
        with pytest.raises(RecordFailedError, match="SlowDown"):
            message_handler.handle(message(load_body("s3/object-created-put"), receive_count))
    # Then at the last delivery (or later) the function dead-letters it with its reason and acknowledges
    # it, instead of leaving SQS's redrive to move it without one; before that it backs off
    assert queues.dead == ([("m-1", "SlowDown")] if dead_lettered else [])
    assert [delayed for delayed, _ in queues.delayed] == ([] if dead_lettered else ["m-1"])
    # And the failure is recorded either way
    assert [recorded.reason.code for recorded in failures.recorded] == ["SlowDown"]


def test_during_a_table_outage_a_failure_still_backs_off_then_reaches_the_dlq_with_its_reason() -> None:
    # Given a function that cannot reach its table at all (the rule, the ledger, the failure log)
    message_handler, table, queues = outage_message_handler(max_receive_count=2)
    first_received = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    delivery = QueueMessage("m-1", load_body("s3/object-created-put"), "r-1", 1, first_received_at=first_received)
    # When its first delivery fails, Then the failure is reported and the message backs off
    with pytest.raises(RecordFailedError, match="InternalServerError"):
        message_handler.handle(delivery)
    assert [message_id for message_id, _ in queues.delayed] == ["m-1"]
    assert queues.dead == []
    # When its last delivery fails too
    last = QueueMessage("m-1", delivery.body, "r-2", 2, first_received_at=first_received)
    assert message_handler.handle(last) == []
    # Then it goes to the DLQ with the reason the table could not keep, and is acknowledged
    [(_, record)] = queues.dead_letters
    assert (record.reason.code, record.reason.kind) == ("InternalServerError", FailureKind.TRANSIENT)
    assert (record.attempts, record.first_failure, record.key) == (2, first_received, "reports/2026/summary.csv")
    assert record.bucket == "crr-demo-source"
    # And the failure log was tried each time (and failed: the outage), without stopping any of this
    assert table.attempts >= 2


def test_a_permanent_failure_reaches_the_dlq_with_its_reason_when_the_failure_log_cannot_be_written() -> None:
    # Given a failure log that cannot be written, and a malformed message
    message_handler, _, queues = outage_message_handler(max_receive_count=5)
    # When its first delivery is handled, Then it is dead-lettered with its reason and acknowledged
    assert message_handler.handle(message("{garbage")) == []
    assert queues.dead == [("m-1", "MalformedEvent")]
