"""One queue message in, replication results out: parsing, applying, logging and metrics per event."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from aws_lambda_powertools.metrics import MetricUnit

from crr.errors import CrrError
from crr.events import ChangeEvent, IgnoredNotification, parse_notification
from crr.observability import logger, metrics
from crr.replication import Outcome, ReplicationResult, Replicator


class ReplicationService:
    def __init__(self, replicator: Replicator) -> None:
        self._replicator = replicator

    @contextmanager
    def batch(self) -> Iterator[ReplicationService]:
        with self._replicator.batch():
            yield self

    def apply_message(self, body: str, message_id: str) -> list[ReplicationResult]:
        """Apply every change in one message body.

        Raises MalformedEventError for a body that is not an S3 notification, and whatever
        ``Replicator.apply`` raises; the caller reports the message as failed so it is retried.
        """
        results: list[ReplicationResult] = []
        for item in parse_notification(body):
            if isinstance(item, IgnoredNotification):
                logger.info(
                    "notification ignored",
                    extra={"message_id": message_id, "reason": item.reason, "bucket": item.bucket},
                )
                continue
            results.append(self._apply(item, message_id))
        return results

    def _apply(self, event: ChangeEvent, message_id: str) -> ReplicationResult:
        context = {
            "message_id": message_id,
            "bucket": event.bucket,
            "key": event.key,
            "event_name": event.event_name,
            "sequencer": event.sequencer,
        }
        try:
            result = self._replicator.apply(event)
        except CrrError as exc:
            logger.warning("replication failed", extra={**context, "error": type(exc).__name__, "reason": str(exc)})
            metrics.add_metric(name="ReplicationFailures", unit=MetricUnit.Count, value=1)
            raise
        logger.info(
            "change reconciled",
            extra={
                **context,
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
