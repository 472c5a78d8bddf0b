"""In-memory fakes of the SQS ports (``crr.ports.queues``), each recording what it was asked to send."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crr.adapters.sqs import QueueError
from crr.errors import CrrError, StatusProbeError
from crr.failures import FailureReason, FailureRecord
from crr.models import CopyRequest, QueueDepth, QueueMessage, RawDeadLetter
from crr.ports.queues import MAX_BODIES_PER_BATCH
from crr.rules import ReplicationRule


class FakeReplicationQueue:
    """Fake of ``crr.ports.queues.ReplicationQueue``: keeps every body, batch by batch (``send`` is a batch
    of one). ``failing`` makes every send raise; ``fail_on_batch=n`` makes only the n-th batch (from 0)
    raise, as a throttled SendMessageBatch would."""

    def __init__(self, *, failing: bool = False, fail_on_batch: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.failing = failing
        self.fail_on_batch = fail_on_batch

    def send(self, body: str) -> None:
        self.send_batch([body])

    def send_batch(self, bodies: Sequence[str]) -> None:
        assert len(bodies) <= MAX_BODIES_PER_BATCH
        if self.failing:
            raise CrrError("SendMessageBatch failed: the queue is unreachable")
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise QueueError("SendMessageBatch failed: throttled", "ThrottlingException")
        self.batches.append(list(bodies))

    @property
    def bodies(self) -> list[str]:
        return [body for batch in self.batches for body in batch]


class FakeFailedMessages:
    """Fake of ``crr.ports.queues.FailedMessages``: records the delays, the dead letters (each message with
    its failure record) and the bodies handed back. ``refuse_hand_back`` fails the test on a hand-back
    (for messages of one record, which nothing may hand back)."""

    def __init__(self, *, refuse_hand_back: bool = False) -> None:
        self.delayed: list[tuple[str, int]] = []
        self.dead_letters: list[tuple[QueueMessage, FailureRecord]] = []
        self.handed_back: list[str] = []
        self.refuse_hand_back = refuse_hand_back

    def retry_later(self, message: QueueMessage, delay_seconds: int) -> None:
        self.delayed.append((message.message_id, delay_seconds))

    def dead_letter(self, message: QueueMessage, record: FailureRecord) -> None:
        self.dead_letters.append((message, record))

    def hand_back(self, message: QueueMessage, bodies: list[str]) -> None:
        if self.refuse_hand_back:
            raise AssertionError("these messages hold one record each: nothing is ever handed back")
        self.handed_back += bodies

    @property
    def dead(self) -> list[tuple[str, str]]:
        """(message id, failure code) of each dead letter."""
        return [(message.message_id, record.reason.code) for message, record in self.dead_letters]


@dataclass
class FakeKeyHandOver:
    """Fake of ``crr.ports.queues.KeyHandOver``: records the keys handed to the live path (with why) and
    those dead-lettered (with the reason)."""

    reconciled: list[tuple[str, str]] = field(default_factory=list)
    dead_lettered: list[tuple[str, FailureReason]] = field(default_factory=list)

    def reconcile(self, request: CopyRequest, why: str) -> None:
        self.reconciled.append((request.state.key, why))

    def dead_letter(self, rule_id: str, request: CopyRequest, reason: FailureReason, attempt_id: str) -> None:
        self.dead_lettered.append((request.state.key, reason))


class FakePeerNudges:
    """Fake of ``crr.ports.queues.PeerNudges`` that hands each nudge to ``deliver(bucket, key)``: the peer's
    queue in a test."""

    def __init__(self, deliver: Callable[[str, str], None]) -> None:
        self.deliver = deliver
        self.sent = 0

    def nudge(self, rule: ReplicationRule, key: str) -> None:
        self.sent += 1
        self.deliver(rule.destination_bucket, key)


class FakeDeadLetterQueue:
    """Fake of ``crr.ports.queues.DeadLetterQueue``: letters by message id; a received letter stays hidden
    until deleted or released. ``fail_delete`` makes a delete fail as a process dying after its send would."""

    def __init__(self, letters: list[RawDeadLetter]) -> None:
        self.letters = {letter.message_id: letter for letter in letters}
        self.hidden: set[str] = set()
        self.fail_delete = False

    def visible_count(self) -> int:
        return len(set(self.letters) - self.hidden)

    def receive(self, max_messages: int, hold_seconds: int, wait_seconds: int) -> list[RawDeadLetter]:
        visible = [letter for mid, letter in self.letters.items() if mid not in self.hidden][:max_messages]
        self.hidden.update(letter.message_id for letter in visible)
        return [RawDeadLetter(d.message_id, f"rh-{d.message_id}", d.body, d.sent_at, d.attributes) for d in visible]

    def delete(self, receipt_handle: str) -> None:
        if self.fail_delete:
            raise ConnectionError("process died between send and delete")
        del self.letters[receipt_handle.removeprefix("rh-")]
        self.hidden.discard(receipt_handle.removeprefix("rh-"))

    def release(self, receipt_handle: str) -> None:
        self.hidden.discard(receipt_handle.removeprefix("rh-"))


class FakeQueueGauge:
    """Fake of ``crr.ports.queues.QueueGauge``: a queue whose counts are ``current``."""

    def __init__(self, depth: QueueDepth) -> None:
        self.current = depth

    def depth(self) -> QueueDepth:
        return self.current


class FakeBacklogAgeGauge:
    """Fake of ``crr.ports.queues.BacklogAgeGauge``: answers ``age``, or raises ``error``."""

    def __init__(self, age: float | None = None, error: StatusProbeError | None = None) -> None:
        self.age = age
        self.error = error

    def oldest_message_age_seconds(self) -> float | None:
        if self.error is not None:
            raise self.error
        return self.age
