"""Ports to SQS: the replication queue, its dead-letter queue, and the gauges ``crr status`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crr.failures import FailureReason, FailureRecord
from crr.models import CopyRequest, QueueDepth, QueueMessage, RawDeadLetter
from crr.rules import ReplicationRule

# SQS's SendMessageBatch takes at most this many messages, so ``ReplicationQueue.send_batch`` does too.
MAX_BODIES_PER_BATCH = 10


class ReplicationQueue(Protocol):
    """The replication queue, as everything that hands the live path a change sends to it: the DLQ
    replay and the breaker's release (one body at a time), the backfill's failed keys and
    ``crr verify --repair`` (batches). One port, because it is one queue and one promise: a body sent
    is a change notice the ReplicateFunction will reconcile.

    Implemented by ``crr.adapters.sqs.SqsQueueSender`` (SendMessage) and ``crr.adapters.sqs_batch.SqsBatchSender``
    (SendMessageBatch); in tests by ``tests.support.fakes.FakeReplicationQueue``."""

    def send(self, body: str) -> None:
        """Send one body. Raises QueueError when it was not sent."""
        ...

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Send up to ``MAX_BODIES_PER_BATCH`` bodies. Raises a CrrError when any of them
        could not be sent."""
        ...


class FailedMessages(Protocol):
    """The queues' side of failure handling.

    Implemented by ``crr.adapters.sqs.SqsFailedMessages``; in tests by ``tests.support.fakes.FakeFailedMessages``."""

    def retry_later(self, message: QueueMessage, delay_seconds: int) -> None:
        """Make the message visible again only after ``delay_seconds`` (its own backoff)."""
        ...

    def dead_letter(self, message: QueueMessage, record: FailureRecord) -> None:
        """Put the message into the dead-letter queue now, with its failure reason attached."""
        ...

    def hand_back(self, message: QueueMessage, bodies: list[str]) -> None:
        """Send ``bodies`` to the replication queue as new messages (records of ``message`` this
        invocation had no time to apply). Raises QueueError unless every one was sent."""
        ...


class KeyHandOver(Protocol):
    """Where a key goes when a copy workflow cannot finish it, so it is never lost.

    Implemented by ``crr.adapters.sqs.SqsKeyHandOver``; in tests by ``tests.support.fakes.FakeKeyHandOver``."""

    def reconcile(self, request: CopyRequest, why: str) -> None:
        """Ask the live path to reconcile the key's current state (a change notice on its queue)."""
        ...

    def dead_letter(self, rule_id: str, request: CopyRequest, reason: FailureReason, attempt_id: str) -> None:
        """Put a change notice for the key into the dead-letter queue with ``reason`` (replayable)."""
        ...


class PeerNudges(Protocol):
    """Asks the peer rule of a two-way pair to reconcile a key.

    Implemented by ``crr.adapters.sqs.SqsPeerNudges``; in tests by ``tests.support.fakes.FakePeerNudges``."""

    def nudge(self, rule: ReplicationRule, key: str) -> None:
        """Ask the peer rule to reconcile ``key``: the destination holds the later change, which only
        the peer may carry back into this rule's source."""
        ...


class DeadLetterQueue(Protocol):
    """The replication queue's dead-letter queue, walked by ``crr dlq`` and the ReplayFunction.

    Implemented by ``crr.adapters.sqs.SqsDeadLetterQueue``; in tests by ``tests.support.fakes.FakeDeadLetterQueue``."""

    def receive(self, max_messages: int, hold_seconds: int, wait_seconds: int) -> list[RawDeadLetter]:
        """Up to ``max_messages``, hidden for ``hold_seconds``, waiting up to ``wait_seconds`` for one."""
        ...

    def visible_count(self) -> int:
        """How many messages the queue counts as visible (approximate, as SQS counts)."""
        ...

    def delete(self, receipt_handle: str) -> None: ...
    def release(self, receipt_handle: str) -> None: ...


class QueueGauge(Protocol):
    """The replication queue's message counts, for ``crr status``.

    Implemented by ``crr_cli.adapters.health.SqsQueueGauge``; in tests by ``tests.support.fakes.FakeQueueGauge``."""

    def depth(self) -> QueueDepth: ...


class BacklogAgeGauge(Protocol):
    """The age of the replication queue's oldest message, for ``crr status``.

    Implemented by ``crr_cli.adapters.health.CloudWatchBacklogAge``; in tests by
    ``tests.support.fakes.FakeBacklogAgeGauge``."""

    def oldest_message_age_seconds(self) -> float | None:
        """Age of the oldest message in the replication queue, or None when it is not known."""
        ...
