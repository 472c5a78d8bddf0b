"""One queue message in, replication results out: parsing, applying, failure handling, logs, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from crr.events import ChangeEvent, IgnoredNotification, parse_notification
from crr.failures import Backoff, FailureReason, classify
from crr.observability import logger, metrics
from crr.ports import FailedMessages, FailureLog, QueueMessage
from crr.replication import Outcome, ReplicationResult, Replicator


class RecordFailedError(Exception):
    """Raised to the batch processor so the message is reported failed (and delivered again later)."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(f"{reason.code}: {reason.message}")
        self.reason = reason


class RuleMetrics:
    """Per-rule metrics of one batch, emitted as one EMF document per rule (dimension ``rule``) when the
    batch ends: the shared Powertools ``metrics`` holds one dimension set per flush, and one document per
    object would multiply log volume."""

    def __init__(self) -> None:
        self._values: dict[str, list[tuple[str, MetricUnit, float]]] = {}

    def add(self, rule_id: str | None, name: str, unit: MetricUnit, value: float) -> None:
        self._values.setdefault(rule_id or "none", []).append((name, unit, value))

    def flush(self) -> None:
        values, self._values = self._values, {}
        for rule_id, entries in values.items():
            per_rule = EphemeralMetrics()
            per_rule.add_dimension(name="rule", value=rule_id)
            for name, unit, value in entries:
                per_rule.add_metric(name=name, unit=unit, value=value)
            per_rule.flush_metrics()


class ReplicationService:
    def __init__(
        self,
        replicator: Replicator,
        failures: FailureLog,
        failed_messages: FailedMessages,
        backoff: Backoff | None = None,
    ) -> None:
        self._replicator = replicator
        self._failures = failures
        self._failed_messages = failed_messages
        self._backoff = backoff or Backoff()
        self._rule_metrics = RuleMetrics()

    @contextmanager
    def batch(self, remaining_seconds: Callable[[], float] | None = None) -> Iterator[ReplicationService]:
        """``remaining_seconds``: the time the invocation has left (copies that do not fit go to the
        large-copy workflow)."""
        try:
            with self._replicator.batch(remaining_seconds):
                yield self
        finally:
            self._rule_metrics.flush()

    def handle(self, message: QueueMessage) -> list[ReplicationResult]:
        """Apply every change in one message, or deal with its failure.

        A transient failure is recorded, the message's next delivery is delayed by its backoff, and
        RecordFailedError is raised so the batch reports it failed. A permanent failure is recorded and
        the message is moved to the dead-letter queue with its reason, then acknowledged (returns []).
        """
        event: ChangeEvent | None = None
        results: list[ReplicationResult] = []
        try:
            for item in parse_notification(message.body):
                if isinstance(item, IgnoredNotification):
                    logger.info(
                        "notification ignored",
                        extra={"message_id": message.message_id, "reason": item.reason, "bucket": item.bucket},
                    )
                    continue
                event = item
                results.append(self._apply(item, message.message_id))
        except Exception as exc:  # noqa: BLE001 - every failure is classified; none may escape unrecorded
            self._fail(message, exc, event)
            return []
        return results

    def _fail(self, message: QueueMessage, error: BaseException, event: ChangeEvent | None) -> None:
        reason = classify(error)
        rule = self._replicator.rule_id_for(event.bucket) if event else None
        context = {
            "message_id": message.message_id,
            "error_code": reason.code,
            "error_kind": reason.kind.value,
            "reason": reason.message,
            "attempt": message.receive_count,
            "rule": rule,
            "bucket": event.bucket if event else None,
            "key": event.key if event else None,
        }
        metrics.add_metric(name="ReplicationFailures", unit=MetricUnit.Count, value=1)
        self._rule_metrics.add(rule, f"Failures.{reason.code}", MetricUnit.Count, 1)
        self._rule_metrics.add(rule, "ReplicationFailures", MetricUnit.Count, 1)
        record = self._failures.record(
            message, reason, rule_id=rule, bucket=event.bucket if event else None, key=event.key if event else None
        )
        if reason.permanent:
            self._failed_messages.dead_letter(message, record)
            logger.error("record dead-lettered: retrying cannot help", extra=context)
            metrics.add_metric(name="RecordsDeadLettered", unit=MetricUnit.Count, value=1)
            return
        delay = self._backoff.delay(message.receive_count)
        logger.warning("record failed; retrying later", extra={**context, "retry_in_seconds": delay})
        self._failed_messages.retry_later(message, delay)
        raise RecordFailedError(reason) from error

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
        metrics.add_metric(name=name, unit=unit, value=value)
        if result.rule_id is not None:
            per_rule.add(result.rule_id, name, unit, value)
