"""The replication queue's message handler: one batch of messages in, replication results and the
partial batch response out.

It parses a message into its change records (crr.events), applies each (crr.replication), and owns the
failure policy: backoff of a transient failure, the dead letter with its reason, records handed back
when working time runs out, and the failure log; plus the per-record logs and per-rule metrics.

A batch's messages are applied concurrently across keys and in arrival order within a key
(crr.key_ordered_batch); so everything a message's handling touches here is safe to share between
threads: the deferred list and the metrics are gathered under a lock (Powertools' Metrics is not
documented as thread-safe), and logs carry their context per call (``extra``), never as shared keys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from crr import deadline as deadlines
from crr.deadline import Deadline, OutOfTimeError
from crr.events import ChangeEvent, IgnoredNotification, NotificationPart, join_records, split_notification
from crr.failures import Backoff, FailureKind, FailureReason, FailureRecord, classify
from crr.key_ordered_batch import InlineRunner, TaskRunner, apply_in_key_order
from crr.models import QueueMessage
from crr.observability import logger, metrics
from crr.ports.queues import FailedMessages
from crr.ports.table import FailureLog
from crr.replication import Outcome, ReplicationResult, Replicator

# Records per message handed back: what this invocation applied of the message (so one fits an
# invocation like this one), at most this many.
MAX_HANDED_BACK_RECORDS = 100
OUT_OF_TIME = "OutOfTime"
# Of the wrap-up time left when a record fails, what the rule's lookup (for the report) may take: the
# table may be the very thing failing, and the dead letter or backoff after it must keep its time.
RULE_LOOKUP_SHARE = 0.25


class ItemFailure(TypedDict):
    itemIdentifier: str


class PartialItemFailures(TypedDict):
    """Lambda's partial batch response (as Powertools' ``process_partial_response`` builds it)."""

    batchItemFailures: list[ItemFailure]


class RecordFailedError(Exception):
    """Raised to the batch processor so the message is reported failed (and delivered again later)."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(f"{reason.code}: {reason.message}")
        self.reason = reason


_metrics_lock = threading.Lock()


def _add_metric(name: str, unit: MetricUnit, value: float) -> None:
    """Add to the shared Powertools ``metrics`` from any of the batch's threads."""
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


class RuleMetrics:
    """Per-rule metrics of one batch, emitted as one EMF document per rule (dimension ``rule``) when the
    batch ends: the shared Powertools ``metrics`` holds one dimension set per flush, and one document per
    object would multiply log volume. Thread-safe."""

    def __init__(self) -> None:
        self._values: dict[str, list[tuple[str, MetricUnit, float]]] = {}
        self._lock = threading.Lock()

    def add(self, rule_id: str | None, name: str, unit: MetricUnit, value: float) -> None:
        with self._lock:
            self._values.setdefault(rule_id or "none", []).append((name, unit, value))

    def flush(self) -> None:
        with self._lock:
            values, self._values = self._values, {}
        for rule_id, entries in values.items():
            per_rule = EphemeralMetrics()
            per_rule.add_dimension(name="rule", value=rule_id)
            for name, unit, value in entries:
                per_rule.add_metric(name=name, unit=unit, value=value)
            per_rule.flush_metrics()


@dataclass(frozen=True)
class _ParsedMessage:
    """A message with its records read up front (so the batch can be grouped by key), or why it could
    not be read (it is then handled alone, and fails as it would have)."""

    message: QueueMessage
    parts: list[NotificationPart] | None
    error: Exception | None = None

    @classmethod
    def of(cls, message: QueueMessage) -> _ParsedMessage:
        try:
            return cls(message, split_notification(message.body))
        except Exception as exc:  # noqa: BLE001 - handle() classifies it, in its turn, as if just read
            return cls(message, None, exc)

    def read_parts(self) -> list[NotificationPart]:
        """Its records; raises what reading it raised (MalformedEventError for a body that is no
        notification)."""
        if self.parts is None:
            raise self.error or AssertionError("a message is either read or holds why it could not be")
        return self.parts

    def keys(self) -> list[Hashable]:
        """The (bucket, key) of each change it holds: a source bucket has one rule, so records of one
        rule and key share one."""
        return [(part.item.bucket, part.item.key) for part in self.parts or () if isinstance(part.item, ChangeEvent)]


class ReplicationMessageHandler:
    """Handles the ReplicateFunction's queue messages, one batch at a time: ``batch``, then
    ``handle_batch`` (or ``handle`` per message, then ``settle`` for the batch's answer)."""

    def __init__(
        self,
        replicator: Replicator,
        failures: FailureLog,
        failed_messages: FailedMessages,
        backoff: Backoff | None = None,
        *,
        max_receive_count: int | None = None,
        runner: TaskRunner | None = None,
    ) -> None:
        """``max_receive_count``: the replication queue's redrive limit. A record failing at that
        delivery is dead-lettered here, with its reason, instead of being left to SQS's redrive (which
        moves it without one); None leaves every transient failure to the redrive.

        ``runner``: runs ``handle_batch``'s groups of messages (crr.key_ordered_batch); by default one
        after another in the calling thread."""
        self._replicator = replicator
        self._failures = failures
        self._failed_messages = failed_messages
        self._backoff = backoff or Backoff()
        self._max_receive_count = max_receive_count
        self._rule_metrics = RuleMetrics()
        self._runner = runner or InlineRunner()
        self._deadline = deadlines.UNBOUNDED
        self._deferred: list[QueueMessage] = []
        self._deferred_lock = threading.Lock()

    @contextmanager
    def batch(self, remaining_seconds: Callable[[], float] | None = None) -> Iterator[ReplicationMessageHandler]:
        """``remaining_seconds``: the time the invocation has left. Its working time (crr.deadline)
        bounds every AWS call, decides which copies go to the large-copy workflow, and when to stop
        taking records; the reserve is kept to hand back and record what was not done."""
        deadline = Deadline.starting_now(remaining_seconds) if remaining_seconds else deadlines.UNBOUNDED
        self._deadline = deadline
        try:
            with (
                deadlines.active(deadline),
                deadlines.phase_scope() as phase,
                self._replicator.invocation_scope(deadline.record_seconds),
            ):
                try:
                    yield self
                finally:
                    phase.wrap_up()  # the batch's progress flush may use the reserve
        finally:
            self._deadline = deadlines.UNBOUNDED
            self._rule_metrics.flush()

    def handle_batch(self, messages: Sequence[QueueMessage]) -> PartialItemFailures:
        """Handle a batch's messages (inside ``batch``) and answer with Lambda's partial batch response:
        the ids, in batch order, of the messages that failed and must be delivered again.

        Messages are applied concurrently on the handler's runner, except that messages holding a change
        of the same (bucket, key) are applied one after another in arrival order; each meets the fate
        ``handle`` gives it. The answer is ``settle``d: messages deferred for lack of time are handed
        back and acknowledged.
        """
        parsed = [_ParsedMessage.of(message) for message in messages]
        outcomes = apply_in_key_order(parsed, _ParsedMessage.keys, self._handle_parsed, self._runner)
        failures: list[ItemFailure] = []
        for message, outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, Exception):
                if not isinstance(outcome, RecordFailedError):  # a RecordFailedError was logged with its reason
                    logger.warning(
                        "message failed", extra={"message_id": message.message_id, "error": str(outcome)[:1000]}
                    )
                failures.append({"itemIdentifier": message.message_id})
        return self.settle({"batchItemFailures": failures})

    def handle(self, message: QueueMessage) -> list[ReplicationResult]:
        """Apply every change in one message, or deal with its failure.

        A message reached once working time is over is deferred: reported failed now, handed back
        unstarted by ``settle``. Records of a message that working time did not reach are handed back
        to the queue as new messages, and the message is acknowledged. A malformed record of a message holding
        several is dead-lettered alone, as its own message with its reason; its siblings are applied.

        A transient failure delays the message's next delivery by its backoff, and RecordFailedError is
        raised so the batch reports it failed. A permanent failure, or a transient one at the message's
        last delivery (``max_receive_count``), moves the message to the dead-letter queue with its
        reason, and it is acknowledged (returns []). Either way the failure is then recorded in the
        failure log, if it can be: a failure log that cannot be written (a DynamoDB outage) keeps no
        message from its backoff or its dead letter. Raises QueueError when the queue refuses the
        backoff or the dead letter (the message then comes back after its visibility timeout).
        """
        return self._handle_parsed(_ParsedMessage.of(message))

    def _handle_parsed(self, parsed: _ParsedMessage) -> list[ReplicationResult]:
        message = parsed.message
        if self._deadline.exhausted():
            return self._defer(message)
        event: ChangeEvent | None = None
        results: list[ReplicationResult] = []
        try:
            parts = parsed.read_parts()
            for index, part in enumerate(parts):
                if index and self._deadline.exhausted():
                    self._hand_back(message, parts[index:], applied=index)
                    break
                if isinstance(part.item, ChangeEvent):
                    event = part.item
                try:
                    result = self._handle_part(message, index, part, alone=len(parts) == 1)
                except OutOfTimeError:
                    # Ran out of time mid-record: what is left goes back; nothing counts as a failure.
                    if not index:
                        return self._defer(message)
                    self._hand_back(message, parts[index:], applied=index)
                    break
                if result is not None:
                    results.append(result)
        except RecordFailedError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified; none may escape unrecorded
            self._fail(message, exc, event)
            return []
        return results

    def _handle_part(
        self, message: QueueMessage, index: int, part: NotificationPart, *, alone: bool
    ) -> ReplicationResult | None:
        """Apply one record. Raises what fails the whole message: any failure of a message's only
        record, a transient failure of any record (the message is retried as a whole; its applied
        records are then fenced by the ledger). A malformed or permanently failing record among several
        is dead-lettered alone."""
        if part.error is not None:
            if alone:
                raise part.error
            self._dead_letter_part(message, index, part, part.error)
            return None
        item = part.item
        if isinstance(item, IgnoredNotification):
            logger.info(
                "notification ignored",
                extra={"message_id": message.message_id, "reason": item.reason, "bucket": item.bucket},
            )
            return None
        if item is None:
            return None
        try:
            return self._apply(item, message.message_id)
        except Exception as exc:
            if alone or not classify(exc).permanent:
                raise
            self._dead_letter_part(message, index, part, exc)
            return None

    def _defer(self, message: QueueMessage) -> list[ReplicationResult]:
        """A message working time did not reach: reported failed for now (RecordFailedError, no call
        made), and handed back unstarted by ``settle`` at the end of the batch, in one request for all
        such messages."""
        with self._deferred_lock:
            self._deferred.append(message)
        logger.info("message deferred: no working time left", extra={"message_id": message.message_id})
        raise RecordFailedError(
            FailureReason(FailureKind.TRANSIENT, OUT_OF_TIME, "working time ended before this message was started")
        )

    def settle(self, response: PartialItemFailures) -> PartialItemFailures:
        """The batch's answer, once the messages deferred for lack of time are handed back to the queue
        unstarted (as new messages) and so acknowledged: a reported failure would count a receive
        against the redrive limit, and a message deferred that often would reach the DLQ without ever
        being attempted. Those that could not be sent stay failed, their reason (OutOfTime) recorded."""
        with self._deferred_lock:
            deferred, self._deferred = self._deferred, []
        if not deferred:
            return response
        handed: set[str] = set()
        with deadlines.wrapping_up():
            try:
                self._failed_messages.hand_back(deferred[0], [message.body for message in deferred])
                handed = {message.message_id for message in deferred}
            except Exception as exc:  # noqa: BLE001 - they stay failed, and come back after their visibility timeout
                reason = FailureReason(
                    FailureKind.TRANSIENT, OUT_OF_TIME, f"working time ended before it was started: {exc}"[:1000]
                )
                logger.warning("deferred messages could not be handed back", extra={"reason": reason.message})
                for message in deferred:
                    # At its last delivery the redrive would move it bare: it goes with its reason instead.
                    if self._last_delivery(message):
                        with suppress(Exception):
                            self._failed_messages.dead_letter(message, _failure_record(message, reason))
                            handed.add(message.message_id)
                    with suppress(Exception):
                        self._failures.record(message, reason, rule_id=None, bucket=None, key=None)
        if handed:
            logger.warning("messages handed back unstarted: no working time left", extra={"messages": len(handed)})
            _add_metric(name="MessagesDeferred", unit=MetricUnit.Count, value=len(handed))
        failures = [item for item in response["batchItemFailures"] if item["itemIdentifier"] not in handed]
        return {"batchItemFailures": failures}

    def _hand_back(self, message: QueueMessage, rest: list[NotificationPart], applied: int) -> None:
        """Send the records working time did not reach back to the queue as new messages, in groups of
        what this invocation applied of the message. Raises QueueError when they could not all be sent
        (the message then fails as a whole, and its applied records are fenced when it comes back)."""
        size = min(max(applied, 1), MAX_HANDED_BACK_RECORDS)
        bodies = [join_records(rest[start : start + size]) for start in range(0, len(rest), size)]
        with deadlines.wrapping_up():
            self._failed_messages.hand_back(message, bodies)
        logger.warning(
            "records handed back: no working time left",
            extra={
                "message_id": message.message_id,
                "applied": applied,
                "handed_back": len(rest),
                "messages": len(bodies),
            },
        )
        _add_metric(name="RecordsHandedBack", unit=MetricUnit.Count, value=len(rest))

    def _dead_letter_part(
        self, message: QueueMessage, index: int, part: NotificationPart, error: BaseException
    ) -> None:
        """Dead-letter one record of a message holding several, as its own message with its reason."""
        alone = QueueMessage(
            message_id=f"{message.message_id}#record-{index + 1}",
            body=part.body,
            receipt_handle=message.receipt_handle,
            receive_count=message.receive_count,
            first_received_at=message.first_received_at,
        )
        event = part.item if isinstance(part.item, ChangeEvent) else None
        self._fail(alone, error, event)

    def _last_delivery(self, message: QueueMessage) -> bool:
        """Whether SQS's redrive moves the message to the DLQ (without a reason) if this delivery fails."""
        return self._max_receive_count is not None and message.receive_count >= self._max_receive_count

    def _fail(self, message: QueueMessage, error: BaseException, event: ChangeEvent | None) -> None:
        """Back off or dead-letter a failed message first, then record the failure: the queues carry
        the reason whatever the table does (what SQS knows of the message, its receive count and
        first receipt, makes the dead letter's attempts and first failure)."""
        reason = classify(error)
        with deadlines.wrapping_up(share=RULE_LOOKUP_SHARE):
            rule = self._replicator.rule_id_for(event.bucket) if event else None
        bucket, key = (event.bucket, event.key) if event else (None, None)
        context = {
            "message_id": message.message_id,
            "error_code": reason.code,
            "error_kind": reason.kind.value,
            "reason": reason.message,
            "attempt": message.receive_count,
            "rule": rule,
            "bucket": bucket,
            "key": key,
        }
        # Published through the function's log (EMF), so CloudWatch counts failures even when the
        # table that holds the failure records cannot be written (crr status reads both).
        _add_metric(name="ReplicationFailures", unit=MetricUnit.Count, value=1)
        self._rule_metrics.add(rule, f"Failures.{reason.code}", MetricUnit.Count, 1)
        self._rule_metrics.add(rule, "ReplicationFailures", MetricUnit.Count, 1)
        try:
            with deadlines.wrapping_up():
                if reason.permanent or self._last_delivery(message):
                    self._failed_messages.dead_letter(message, _failure_record(message, reason, rule, bucket, key))
                    if reason.permanent:
                        logger.error("record dead-lettered: retrying cannot help", extra=context)
                    else:
                        logger.error("record dead-lettered: its last delivery failed", extra=context)
                    _add_metric(name="RecordsDeadLettered", unit=MetricUnit.Count, value=1)
                    return
                delay = self._backoff.delay(message.receive_count)
                logger.warning("record failed; retrying later", extra={**context, "retry_in_seconds": delay})
                self._failed_messages.retry_later(message, delay)
        finally:
            self._record(message, reason, rule, bucket, key)
        raise RecordFailedError(reason) from error

    def _record(
        self, message: QueueMessage, reason: FailureReason, rule: str | None, bucket: str | None, key: str | None
    ) -> None:
        """Count the failed attempt in the failure log (crr status counts it; crr dlq list explains a
        redriven message by it). Best effort: a log that cannot be written is logged and counted
        (``FailuresUnrecorded``), never raised."""
        with deadlines.wrapping_up():
            try:
                self._failures.record(message, reason, rule_id=rule, bucket=bucket, key=key)
            except Exception as exc:  # noqa: BLE001 - the queues already carry what the table would
                logger.warning(
                    "failure not recorded: the failure log cannot be written",
                    extra={"message_id": message.message_id, "error_code": reason.code, "record_error": str(exc)},
                )
                _add_metric(name="FailuresUnrecorded", unit=MetricUnit.Count, value=1)

    def _apply(self, event: ChangeEvent, message_id: str) -> ReplicationResult:
        result = self._replicator.apply(event)
        logger.info(
            "change reconciled",
            extra={
                "message_id": message_id,
                "bucket": event.bucket,
                "key": event.key,
                "event_name": event.event_name,
                "sequencer": event.sequencer,
                "rule": result.rule_id,
                "outcome": result.outcome.value,
                "attempts": result.attempts,
                "detail": result.detail or None,
            },
        )
        _count(result, event, self._rule_metrics)
        return result


def _failure_record(
    message: QueueMessage,
    reason: FailureReason,
    rule: str | None = None,
    bucket: str | None = None,
    key: str | None = None,
) -> FailureRecord:
    """A dead letter's reason from what the delivery says: every delivery of it was an attempt, the
    first when SQS first handed it out."""
    now = datetime.now(UTC)
    return FailureRecord(
        message_id=message.message_id,
        reason=reason,
        attempts=message.receive_count,
        first_failure=min(message.first_received_at or now, now),
        last_failure=now,
        rule_id=rule,
        bucket=bucket,
        key=key,
    )


def _count(result: ReplicationResult, event: ChangeEvent, per_rule: RuleMetrics) -> None:
    """Stack-wide totals on the shared ``metrics``, and the same figures per rule."""
    entries: list[tuple[str, MetricUnit, float]]
    if result.outcome is Outcome.COPIED:
        entries = [
            ("ObjectsReplicated", MetricUnit.Count, 1),
            ("BytesReplicated", MetricUnit.Bytes, float(result.bytes_copied)),
        ]
    elif result.outcome is Outcome.DELETED:
        entries = [("DeletesReplicated", MetricUnit.Count, 1)]
    elif result.outcome is Outcome.DELETE_HELD:
        entries = [("DeletesHeld", MetricUnit.Count, 1)]
    elif result.outcome is Outcome.DELETE_DISCARDED:
        entries = [("DeletesDiscarded", MetricUnit.Count, 1)]
    else:
        entries = [("ChangesSkipped", MetricUnit.Count, 1)]
    if result.overwrote:
        entries.append(("OverwritesReplicated", MetricUnit.Count, 1))
    if result.outcome in {Outcome.COPIED, Outcome.DELETED}:
        lag_ms = max((datetime.now(UTC) - event.event_time).total_seconds() * 1000, 0.0)
        entries.append(("ReplicationLatency", MetricUnit.Milliseconds, lag_ms))
    for name, unit, value in entries:
        _add_metric(name=name, unit=unit, value=value)
        if result.rule_id is not None:
            per_rule.add(result.rule_id, name, unit, value)
