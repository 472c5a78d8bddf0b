"""Work that fits the time it has: records of a message within the invocation's working time, the rest
handed back; messages not started failed with a reason; malformed records dead-lettered alone; single
copies that do not fit handed to the large-copy workflow; AWS calls cut to the time left."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest

from crr import deadline as deadlines
from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoLedger
from crr.deadline import Deadline, OutOfTimeError
from crr.errors import StateStoreError
from crr.events import ChangeEvent, ChangeKind
from crr.failures import FailureKind, FailureReason, FailureRecord, classify
from crr.large_copy import LargeObjectSettings
from crr.message_handling import OUT_OF_TIME, RecordFailedError, ReplicationMessageHandler
from crr.models import CopyRequest, ProgressDelta, QueueMessage
from crr.replication import Outcome, Replicator
from crr.rules import ReplicationRule
from tests.support.events import load_event, load_raw_body
from tests.support.fakes import (
    FakeFailedMessages,
    FakeFailureLog,
    FakeLargeCopyLauncher,
    FakeLedger,
    FakeProgress,
    FakeRules,
    FakeS3,
)
from tests.support.rules import make_rule

SRC, DST, WEST, EAST = "crr-demo-source", "crr-demo-replica", "us-west-1", "us-east-1"


class Clock:
    """Invocation time that passes only when the fake S3 copies (``copy_seconds`` per copy)."""

    def __init__(self, timeout: float, copy_seconds: float) -> None:
        self.timeout = timeout
        self.copy_seconds = copy_seconds
        self.elapsed = 0.0

    def remaining(self) -> float:
        return self.timeout - self.elapsed


def world(
    clock: Clock, keys: list[str], progress: FakeProgress | None = None
) -> tuple[ReplicationMessageHandler, FakeS3, FakeFailureLog, FakeFailedMessages]:
    s3 = FakeS3()
    s3.create_bucket(SRC, WEST, versioned=True)
    s3.create_bucket(DST, EAST)
    for key in keys:
        s3.put(SRC, key, b"x")
    copy = s3.copy

    def timed_copy(request: CopyRequest) -> str:
        clock.elapsed += clock.copy_seconds
        return copy(request)

    s3.copy = timed_copy  # type: ignore[method-assign]
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)
    replicator = Replicator(FakeRules(rule), s3, FakeLedger(), progress or FakeProgress())
    failures, queues = FakeFailureLog(), FakeFailedMessages()
    return ReplicationMessageHandler(replicator, failures, queues), s3, failures, queues


def many_records(keys: list[str]) -> str:
    """One message carrying a record per key (S3's sample record, each with its own sequencer)."""
    template = load_event("s3/object-created-put")["Records"][0]
    records = []
    for index, key in enumerate(keys):
        record = json.loads(json.dumps(template))
        record["s3"]["object"].update(key=key, sequencer=f"{index + 1:018X}")
        records.append(record)
    return json.dumps({"Records": records})


def message(body: str, message_id: str = "m-1") -> QueueMessage:
    return QueueMessage(message_id=message_id, body=body, receipt_handle="r-1", receive_count=1)


def test_a_message_of_a_thousand_records_is_applied_within_the_time_left_and_the_rest_handed_back() -> None:
    # Given a 2 s invocation whose copies take 10 ms each, and one message carrying 1,000 records
    keys = [f"k/{index:04d}" for index in range(1000)]
    clock = Clock(timeout=2.0, copy_seconds=0.01)
    message_handler, s3, failures, queues = world(clock, keys)
    # When the message is handled
    with message_handler.batch(remaining_seconds=clock.remaining):
        results = message_handler.handle(message(many_records(keys)))
    # Then it stopped within its working time, with the reserve left to hand back and answer
    assert clock.remaining() >= 0.25
    applied = len(results)
    assert 100 <= applied < 1000
    assert s3.keys(DST) == set(keys[:applied])
    # And every record it did not apply went back to the queue, in order, in messages of at most 100
    handed = [json.loads(body)["Records"] for body in queues.handed_back]
    assert all(1 <= len(records) <= 100 for records in handed)
    assert [record["s3"]["object"]["key"] for records in handed for record in records] == keys[applied:]
    # And nothing failed: the message is acknowledged
    assert failures.recorded == []
    assert queues.delayed == []
    assert queues.dead == []


def test_a_record_that_runs_out_of_time_goes_back_with_the_rest_of_its_message() -> None:
    # Given a message of 20 records whose fifth copy finds no time left for its call
    keys = [f"k/{index:02d}" for index in range(20)]
    clock = Clock(timeout=60.0, copy_seconds=0.0)
    message_handler, s3, failures, queues = world(clock, keys)
    copy = s3.copy
    copies = {"count": 0}

    def running_out(request: CopyRequest) -> str:
        copies["count"] += 1
        if copies["count"] == 5:
            raise OutOfTimeError("no time left in this invocation for CopyObject (0.01s)")
        return copy(request)

    s3.copy = running_out  # type: ignore[method-assign]
    # When the message is handled
    with message_handler.batch(remaining_seconds=clock.remaining):
        results = message_handler.handle(message(many_records(keys)))
    # Then the four records before it are applied, and it goes back with the rest, as groups of four
    assert len(results) == 4
    handed = [json.loads(body)["Records"] for body in queues.handed_back]
    assert [len(records) for records in handed] == [4, 4, 4, 4]
    assert [record["s3"]["object"]["key"] for records in handed for record in records] == keys[4:]
    # And running out of time is no failure: nothing recorded, nothing delayed
    assert failures.recorded == []
    assert queues.delayed == []


def test_a_message_reached_after_the_working_time_goes_back_to_the_queue_unstarted() -> None:
    # Given an invocation whose working time is over (0.3 s left of 2 s)
    keys = ["k/late"]
    clock = Clock(timeout=2.0, copy_seconds=0.0)
    message_handler, s3, failures, queues = world(clock, keys)
    body = many_records(keys)
    with message_handler.batch(remaining_seconds=clock.remaining):
        clock.elapsed = 1.7
        # When the next message of the batch comes up, it is deferred (reported failed for now)
        with pytest.raises(RecordFailedError, match=OUT_OF_TIME):
            message_handler.handle(message(body, "m-late"))
        # And when the batch is settled
        answer = message_handler.settle({"batchItemFailures": [{"itemIdentifier": "m-late"}]})
    # Then it was not applied but sent back whole as a new message, and this delivery is acknowledged
    # (a reported failure would count against the redrive limit although nothing was attempted)
    assert answer == {"batchItemFailures": []}
    assert s3.keys(DST) == set()
    assert queues.handed_back == [body]
    assert failures.recorded == []
    assert queues.delayed == []


def test_a_deferred_message_that_cannot_be_handed_back_stays_failed_with_a_recorded_reason() -> None:
    # Given an invocation whose working time is over, and a queue refusing the hand-back
    keys = ["k/late"]
    clock = Clock(timeout=2.0, copy_seconds=0.0)
    message_handler, _, failures, queues = world(clock, keys)

    def refuse(message: QueueMessage, bodies: list[str]) -> None:
        raise StateStoreError("SendMessageBatch failed", "ServiceUnavailable")

    queues.hand_back = refuse  # type: ignore[method-assign]
    with message_handler.batch(remaining_seconds=clock.remaining):
        clock.elapsed = 1.7
        with pytest.raises(RecordFailedError, match=OUT_OF_TIME):
            message_handler.handle(message(many_records(keys), "m-late"))
        # When the batch is settled
        answer = message_handler.settle({"batchItemFailures": [{"itemIdentifier": "m-late"}]})
    # Then it stays failed (it comes back after its visibility timeout), its reason recorded
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-late"}]}
    [recorded] = failures.recorded
    assert (recorded.message_id, recorded.reason.code, recorded.reason.kind) == (
        "m-late",
        OUT_OF_TIME,
        FailureKind.TRANSIENT,
    )


def test_a_deferred_message_at_its_last_delivery_that_cannot_be_handed_back_goes_to_the_dlq_with_its_reason() -> None:
    # Given an invocation whose working time is over, a queue refusing the hand-back, and a message at
    # the last delivery its queue's redrive allows (2 of 2)
    keys = ["k/late"]
    clock = Clock(timeout=2.0, copy_seconds=0.0)
    _, s3, failures, queues = world(clock, keys)
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)
    message_handler = ReplicationMessageHandler(
        Replicator(FakeRules(rule), s3, FakeLedger(), FakeProgress()), failures, queues, max_receive_count=2
    )

    def refuse(message: QueueMessage, bodies: list[str]) -> None:
        raise StateStoreError("SendMessageBatch failed", "ServiceUnavailable")

    queues.hand_back = refuse  # type: ignore[method-assign]
    last = QueueMessage(message_id="m-late", body=many_records(keys), receipt_handle="r-2", receive_count=2)
    with message_handler.batch(remaining_seconds=clock.remaining):
        clock.elapsed = 1.7
        with pytest.raises(RecordFailedError, match=OUT_OF_TIME):
            message_handler.handle(last)
        # When the batch is settled
        answer = message_handler.settle({"batchItemFailures": [{"itemIdentifier": "m-late"}]})
    # Then it is dead-lettered with its reason and acknowledged, not left to SQS's redrive (no reason)
    assert answer == {"batchItemFailures": []}
    assert [(letter.message_id, why.reason.code, letter.body) for letter, why in queues.dead_letters] == [
        ("m-late", OUT_OF_TIME, last.body)
    ]


def test_a_malformed_record_is_dead_lettered_alone_and_its_good_sibling_applied() -> None:
    # Given a message whose first record is valid and whose second is malformed
    body = load_raw_body("bad/second-record-malformed")
    first = json.loads(body)["Records"][0]["s3"]["object"]["key"]
    clock = Clock(timeout=60.0, copy_seconds=0.0)
    message_handler, s3, failures, queues = world(clock, [first])
    # When it is handled
    with message_handler.batch(remaining_seconds=clock.remaining):
        results = message_handler.handle(message(body, "m-mixed"))
    # Then the good record is applied
    assert [result.outcome for result in results] == [Outcome.COPIED]
    assert s3.keys(DST) == {first}
    # And only the bad record went to the DLQ, as a message of its own, with its reason
    [(letter, why)] = queues.dead_letters
    assert (letter.message_id, why.reason.code) == ("m-mixed#record-2", "MalformedEvent")
    assert json.loads(letter.body)["Records"] == json.loads(body)["Records"][1:]
    assert [recorded.message_id for recorded in failures.recorded] == ["m-mixed#record-2"]
    assert queues.delayed == []


def test_a_single_copy_slower_than_the_time_left_goes_to_the_large_copy_workflow() -> None:
    # Given a 64-byte single-part object that copies at 1 byte/s, and a workflow to hand copies to
    s3 = FakeS3()
    s3.create_bucket(SRC, WEST, versioned=True)
    s3.create_bucket(DST, EAST)
    s3.put(SRC, "slow.bin", b"x" * 64)
    launcher = FakeLargeCopyLauncher()
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)
    replicator = Replicator(
        FakeRules(rule),
        s3,
        FakeLedger(),
        FakeProgress(),
        large_objects=LargeObjectSettings(copy_bytes_per_second=1.0),
        large_copies=launcher,
    )
    event = ChangeEvent(
        bucket=SRC,
        key="slow.bin",
        kind=ChangeKind.CREATED,
        event_name="ObjectCreated:Put",
        event_time=datetime.now(UTC),
    )
    # When its change is applied with 100 s left (its copy would take 64 s: more than half)
    with replicator.invocation_scope(remaining_seconds=lambda: 100):
        result = replicator.apply(event)
    # Then no CopyObject is attempted: the workflow copies it, in one part
    assert result.outcome is Outcome.COPY_STARTED
    assert s3.calls.get("CopyObject", 0) == 0
    [job] = launcher.started
    assert job.part_sizes == [64]


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """An endpoint that accepts connections and never answers (a DynamoDB outage as clients see it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_a_hung_call_fails_within_the_working_time_as_a_transient_failure(
    hung_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB hanging, and an invocation with 3 s left (0.75 s of it the reserve)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", hung_endpoint)
    clients = ClientFactory(boto3.session.Session())
    ledger = DynamoLedger(clients.client("dynamodb", WEST), "rules")
    ends = time.monotonic() + 3.0
    started = time.monotonic()
    # When the ledger is read (boto3 would wait 60 s per attempt, and retry)
    with deadlines.active(Deadline.starting_now(lambda: ends - time.monotonic())):
        with pytest.raises((OutOfTimeError, StateStoreError)) as failed:
            ledger.read("r1", "k")
        # Then it failed within the first half of the reserve (0.75 s), leaving the rest to record why
        assert time.monotonic() - started < 3.0 - 0.375 + 0.1
        # And a call made while wrapping up may still use the reserve, but not beyond the deadline
        with deadlines.wrapping_up():
            assert 0 < deadlines.seconds_for_a_call() <= 0.75
    assert not classify(failed.value).permanent


def test_without_an_active_deadline_calls_are_not_bounded() -> None:
    assert deadlines.seconds_for_a_call() == float("inf")
    assert classify(OutOfTimeError("no time")) == FailureReason(FailureKind.TRANSIENT, "OutOfTime", "no time")


def test_a_progress_write_that_fails_at_the_end_of_a_batch_does_not_fail_the_batch() -> None:
    # Given a batch whose record is applied, and a progress store refusing the write at its end
    class Refusing(FakeProgress):
        def add(self, rule_id: str, delta: ProgressDelta, applied_at: datetime) -> None:
            raise OutOfTimeError("no time left in this invocation for UpdateItem (0.01s)")

    clock = Clock(timeout=60.0, copy_seconds=0.0)
    message_handler, s3, _, _ = world(clock, ["k/one"], progress=Refusing())
    # When the batch ends, Then it ends normally, the record applied
    with message_handler.batch(remaining_seconds=clock.remaining):
        message_handler.handle(message(many_records(["k/one"])))
    assert s3.keys(DST) == {"k/one"}


def test_a_hung_table_leaves_the_dead_letter_of_a_failed_record_its_time() -> None:
    # Given a 2 s invocation whose table hangs: every call to it waits all the time it may (fake clock)
    clock = Clock(timeout=2.0, copy_seconds=0.0)

    class HungTable:
        def hang(self, operation: str) -> StateStoreError:
            clock.elapsed += max(deadlines.seconds_for_a_call(), 0.0)
            return StateStoreError(f"{operation} failed: Read timeout", "ReadTimeout")

        def rule_for_source(self, bucket: str) -> ReplicationRule | None:
            raise self.hang("GetItem")

        def record(
            self,
            message: QueueMessage,
            reason: FailureReason,
            *,
            rule_id: str | None,
            bucket: str | None,
            key: str | None,
        ) -> FailureRecord:
            raise self.hang("UpdateItem")

        def find(self, message_id: str) -> FailureRecord | None:
            raise self.hang("GetItem")

    class TimedQueues(FakeFailedMessages):
        time_left = 0.0

        def dead_letter(self, message: QueueMessage, record: FailureRecord) -> None:
            self.time_left = deadlines.seconds_for_a_call()
            super().dead_letter(message, record)

    table, queues = HungTable(), TimedQueues()
    message_handler = ReplicationMessageHandler(
        Replicator(table, FakeS3(), FakeLedger(), FakeProgress()), table, queues, max_receive_count=1
    )
    # When the last delivery of a message fails on the hung table
    with message_handler.batch(remaining_seconds=clock.remaining):
        assert message_handler.handle(message(json.dumps(load_event("s3/object-created-put")))) == []
    # Then the lookup of its rule (for the report) took only a share of the wrap-up time, and the dead
    # letter still had time to carry the reason: the record's hang did not take it all
    assert queues.dead == [("m-1", "ReadTimeout")]
    assert queues.time_left >= 0.1
    # And the invocation ended before its timeout
    assert clock.remaining() > 0
