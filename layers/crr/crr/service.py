"""One queue message in, replication results out: parsing, applying, failure handling, logs, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit

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

    @contextmanager
    def batch(self) -> Iterator[ReplicationService]:
        with self._replicator.batch():
            yield self

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
        _count(result, event)
        return result


def _count(result: ReplicationResult, event: ChangeEvent) -> None:
    if result.outcome is Outcome.COPIED:
        metrics.add_metric(name="ObjectsReplicated", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="BytesReplicated", unit=MetricUnit.Bytes, value=result.bytes_copied)
    elif result.outcome is Outcome.DELETED:
        metrics.add_metric(name="DeletesReplicated", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="ChangesSkipped", unit=MetricUnit.Count, value=1)
        return
    lag_ms = (datetime.now(UTC) - event.event_time).total_seconds() * 1000
    metrics.add_metric(name="ReplicationLatency", unit=MetricUnit.Milliseconds, value=max(lag_ms, 0.0))
