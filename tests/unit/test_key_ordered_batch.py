"""A queue batch applied concurrently across keys and in arrival order within a key (crr.key_ordered_batch
through ReplicationMessageHandler.handle_batch), with the guarantees of a sequential batch: the partial
batch response, the deadline's hand-back and the delete breaker's count.

No assertion here is timed: concurrency is shown by barriers that pass only with that many records in
flight (their timeout only turns a hang into a failure), and order by what was recorded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import pytest

from crr.breaker import BreakerSettings, DeleteBreaker
from crr.errors import StorageError
from crr.events import ChangeEvent
from crr.key_ordered_batch import (
    InlineRunner,
    TaskRunner,
    ThreadPoolRunner,
    apply_in_key_order,
    key_ordered_groups,
    record_runner,
)
from crr.message_handling import ReplicationMessageHandler
from crr.models import BreakerRecord, CopyRequest, QueueMessage
from crr.replication import Replicator
from tests.support.events import load_event
from tests.support.fakes import (
    FakeBreakerStore,
    FakeFailedMessages,
    FakeFailureLog,
    FakeLedger,
    FakeProgress,
    FakeRules,
    FakeS3,
)
from tests.support.rules import make_rule

SRC, DST, WEST, EAST = "crr-demo-source", "crr-demo-replica", "us-west-1", "us-east-1"
# Only turns a broken barrier (fewer records in flight than expected) into a failure instead of a hang.
HANG_SECONDS = 20


def notification(key: str, sequencer: int, sample: str = "s3/object-created-put") -> str:
    """The sample notification, for ``key`` with its own sequencer."""
    document = load_event(sample)
    document["Records"][0]["s3"]["object"].update(key=key, sequencer=f"{sequencer:018X}")
    document["Records"][0]["s3"]["object"].pop("versionId", None)
    document["Records"][0]["s3"]["object"].pop("eTag", None)
    return json.dumps(document)


def messages(bodies: Iterable[str]) -> list[QueueMessage]:
    return [
        QueueMessage(message_id=f"m-{index}", body=body, receipt_handle=f"r-{index}", receive_count=1)
        for index, body in enumerate(bodies)
    ]


def source_with(keys: Iterable[str]) -> FakeS3:
    s3 = FakeS3()
    s3.create_bucket(SRC, WEST, versioned=True)
    s3.create_bucket(DST, EAST)
    for key in keys:
        s3.put(SRC, key, f"bytes of {key}".encode())
    return s3


def handler_over(
    s3: FakeS3, runner: TaskRunner, breaker: DeleteBreaker | None = None
) -> tuple[ReplicationMessageHandler, FakeFailureLog, FakeFailedMessages]:
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)
    replicator = Replicator(FakeRules(rule), s3, FakeLedger(), FakeProgress(), breaker=breaker)
    failures, queues = FakeFailureLog(), FakeFailedMessages()
    return ReplicationMessageHandler(replicator, failures, queues, runner=runner), failures, queues


def copies_meet_at(barrier: threading.Barrier, s3: FakeS3, keys: set[str] | None = None) -> None:
    """Each copy (of ``keys``, or all) waits at ``barrier`` before it is made."""
    copy = s3.copy

    def meeting_copy(request: CopyRequest) -> str:
        if keys is None or request.state.key in keys:
            barrier.wait(timeout=HANG_SECONDS)
        return copy(request)

    s3.copy = meeting_copy  # type: ignore[method-assign]


def test_groups_keep_items_of_a_shared_key_together_in_arrival_order() -> None:
    # Given items naming keys, two of them sharing a key only through a third, and one naming none
    items = [["a"], ["b"], ["a", "c"], [], ["c"], ["d"], ["b"]]
    # When they are grouped
    groups = key_ordered_groups(items, lambda keys: keys)
    # Then items sharing a key, even through another item, are one group in arrival order; a keyless item is alone
    assert groups == [[0, 2, 4], [1, 6], [3], [5]]


def test_each_item_answers_its_own_result_or_error_and_a_failure_does_not_stop_its_group() -> None:
    # Given items of one key, the second of which fails
    def apply(item: int) -> int:
        if item == 2:
            raise ValueError("the second fails")
        return item * 10

    # When they are applied
    outcomes = apply_in_key_order([1, 2, 3], lambda _: ["same"], apply, ThreadPoolRunner(4))
    # Then each answers for itself, and the item after the failure was applied
    assert outcomes[0] == 10
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == 30


def test_a_record_concurrency_of_one_applies_in_the_calling_thread() -> None:
    # Given the runner for a concurrency of 1
    runner = record_runner(1)
    seen: list[threading.Thread] = []
    # When it applies a batch
    apply_in_key_order(["a", "b"], lambda key: [key], lambda _: seen.append(threading.current_thread()), runner)
    # Then no other thread took part
    assert seen == [threading.current_thread()] * 2


def test_a_batch_s_records_are_in_flight_at_once_up_to_the_record_concurrency() -> None:
    # Given eight objects, and copies that can only be made once eight copies are in flight together
    keys = [f"parallel/{index}" for index in range(8)]
    s3 = source_with(keys)
    copies_meet_at(threading.Barrier(8), s3)
    message_handler, failures, _ = handler_over(s3, ThreadPoolRunner(8))
    # When a batch of their eight notifications is handled with a record concurrency of 8
    with message_handler.batch():
        response = message_handler.handle_batch(messages(notification(key, n + 1) for n, key in enumerate(keys)))
    # Then every copy passed the barrier (so eight records were in flight), and nothing failed
    assert response == {"batchItemFailures": []}
    assert failures.recorded == []
    assert all(s3.current(DST, key) is not None for key in keys)


def test_records_of_one_key_are_applied_in_arrival_order_while_other_keys_run() -> None:
    # Given a batch: three changes of one key, between changes of two other keys
    s3 = source_with(["a", "b", "c"])
    order: list[tuple[str, str]] = []
    others_done = threading.Event()
    remaining_others = [2]
    lock = threading.Lock()
    rule = make_rule(source_bucket=SRC, destination_bucket=DST)

    class RecordingReplicator(Replicator):
        def apply(self, event: ChangeEvent) -> Any:
            if event.sequencer == f"{1:018X}":
                # The first change of "a" waits for the other keys: were the later changes of "a" not
                # queued behind it, they would be recorded first.
                others_done.wait(timeout=HANG_SECONDS)
            with lock:
                order.append((event.key, event.sequencer or ""))
            result = super().apply(event)
            if event.key != "a":
                with lock:
                    remaining_others[0] -= 1
                    if not remaining_others[0]:
                        others_done.set()
            return result

    replicator = RecordingReplicator(FakeRules(rule), s3, FakeLedger(), FakeProgress())
    message_handler = ReplicationMessageHandler(
        replicator, FakeFailureLog(), FakeFailedMessages(), runner=ThreadPoolRunner(4)
    )
    bodies = [notification("a", 1), notification("b", 2), notification("a", 3), notification("c", 4)]
    bodies.append(notification("a", 5))
    # When it is handled with a record concurrency of 4
    with message_handler.batch():
        assert message_handler.handle_batch(messages(bodies)) == {"batchItemFailures": []}
    # Then the other keys went first (they ran beside "a"), and "a"'s changes were applied in arrival order
    changes_of_a = [sequencer for key, sequencer in order if key == "a"]
    assert changes_of_a == [f"{1:018X}", f"{3:018X}", f"{5:018X}"]
    assert {key for key, _ in order[:2]} == {"b", "c"}


def test_failures_of_a_concurrent_batch_are_reported_by_their_own_message_ids() -> None:
    # Given a batch of six: two keys whose copies are throttled, a garbage body, three that replicate
    keys = ["ok/1", "slow/1", "ok/2", "slow/2", "ok/3"]
    s3 = source_with(keys)
    copy = s3.copy

    def throttled(request: CopyRequest) -> str:
        if request.state.key.startswith("slow/"):
            raise StorageError("CopyObject", DST, request.state.key, "SlowDown", "reduce your request rate")
        return copy(request)

    s3.copy = throttled  # type: ignore[method-assign]
    message_handler, failures, queues = handler_over(s3, ThreadPoolRunner(6))
    batch = messages([*(notification(key, n + 1) for n, key in enumerate(keys)), "{garbage"])
    # When it is handled concurrently
    with message_handler.batch():
        response = message_handler.handle_batch(batch)
    # Then exactly the throttled messages are reported failed, in batch order, and delayed by their backoff
    assert response == {"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]}
    assert sorted(message_id for message_id, _ in queues.delayed) == ["m-1", "m-3"]
    # And the garbage went to the DLQ with its reason (acknowledged), and the rest replicated
    assert queues.dead == [("m-5", "MalformedEvent")]
    assert sorted(record.message_id for record in failures.recorded) == ["m-1", "m-3", "m-5"]
    assert all(s3.current(DST, key) is not None for key in keys if key.startswith("ok/"))


def test_when_working_time_ends_with_records_in_flight_they_finish_and_the_unstarted_are_handed_back() -> None:
    # Given eight notifications, a record concurrency of 4, and an invocation whose working time ends
    #       while the first four copies are in flight together
    keys = [f"late/{index}" for index in range(8)]
    s3 = source_with(keys)
    elapsed = [0.0]
    meeting = threading.Barrier(4, action=lambda: elapsed.__setitem__(0, 9.0))  # past the working time
    copies_meet_at(meeting, s3, set(keys[:4]))
    message_handler, failures, queues = handler_over(s3, ThreadPoolRunner(4))
    bodies = [notification(key, n + 1) for n, key in enumerate(keys)]
    # When the batch is handled in an invocation of 10 s (its reserve: 2.5 s)
    with message_handler.batch(remaining_seconds=lambda: 10.0 - elapsed[0]):
        response = message_handler.handle_batch(messages(bodies))
    # Then the four in flight were applied, the four not started went back to the queue unstarted,
    #      and the batch reports no failure (what went back is acknowledged)
    assert response == {"batchItemFailures": []}
    assert [key for key in keys if s3.current(DST, key) is not None] == keys[:4]
    assert sorted(queues.handed_back) == sorted(bodies[4:])
    assert failures.recorded == []


class LockedBreakerStore(FakeBreakerStore):
    """The in-memory breaker item, each request atomic as a DynamoDB request is."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self.deletes_counted = 0

    def count_delete(self, rule_id: str, slot: int, stale: Iterable[int], deletes: int = 1) -> BreakerRecord:
        with self._lock:
            self.deletes_counted += deletes
            return super().count_delete(rule_id, slot, stale, deletes)

    def trip(self, rule_id: str, at: datetime) -> bool:
        with self._lock:
            return super().trip(rule_id, at)

    def hold(self, rule_id: str, key: str, held_since: datetime, at: datetime) -> BreakerRecord:
        with self._lock:
            return super().hold(rule_id, key, held_since, at)

    def read(self, rule_id: str) -> BreakerRecord:
        with self._lock:
            return super().read(rule_id)


@pytest.mark.parametrize("concurrency", [1, 12])
def test_the_breaker_counts_every_delete_of_a_concurrent_batch_exactly_once(concurrency: int) -> None:
    # Given twelve replicated objects deleted at the source, and a breaker that holds from the fifth
    #       delete in its window
    keys = [f"wipe/{index:02d}" for index in range(12)]
    s3 = source_with(keys)
    for key in keys:
        s3.put(DST, key, b"replica")
        s3.remove(SRC, key)
    store = LockedBreakerStore()
    breaker = DeleteBreaker(store, BreakerSettings(count=5, percent=0, window_seconds=300))
    runner: TaskRunner = ThreadPoolRunner(concurrency) if concurrency > 1 else InlineRunner()
    if concurrency > 1:
        # Every delete decides while all twelve are in flight: each waits at its first source HEAD.
        meeting, met = threading.Barrier(concurrency), set[str]()
        head = s3.head

        def meeting_head(bucket: str, region: str, key: str) -> Any:
            if key not in met:
                met.add(key)
                meeting.wait(timeout=HANG_SECONDS)
            return head(bucket, region, key)

        s3.head = meeting_head  # type: ignore[method-assign]
    message_handler, failures, _ = handler_over(s3, runner, breaker)
    batch = messages(notification(key, n + 1, "s3/object-removed-delete") for n, key in enumerate(keys))
    # When their deletes arrive in one batch
    with message_handler.batch():
        assert message_handler.handle_batch(batch) == {"batchItemFailures": []}
    # Then every delete was counted once, four reached the replica and the other eight are held
    assert store.deletes_counted == 12
    deleted = [key for key in keys if s3.current(DST, key) is None]
    assert len(deleted) == 4
    assert store.record.held
    assert failures.recorded == []


def test_the_pool_runs_each_task_in_a_copy_of_the_caller_s_context() -> None:
    import contextvars

    # Given a context variable set by the caller (as an invocation sets its logging context)
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")
    request_id.set("req-1")
    seen: list[str] = []
    lock = threading.Lock()

    def task() -> None:
        with lock:
            seen.append(request_id.get())

    tasks: list[Callable[[], None]] = [task for _ in range(6)]
    # When the pool runs tasks
    ThreadPoolRunner(3).run_all(tasks)
    # Then each saw the caller's value
    assert seen == ["req-1"] * 6
