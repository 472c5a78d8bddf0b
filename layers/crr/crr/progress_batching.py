"""Progress of applied changes, counted in memory and written in one UpdateItem per rule per interval.

At low rates a queue batch holds one record, so writing progress per batch would double the DynamoDB
writes per object; counts therefore accumulate across the batches of a warm process and are written at
the end of the first batch after the interval (0: every batch).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from crr.breaker import DeleteBreaker
from crr.errors import CrrError
from crr.events import ChangeEvent
from crr.models import ProgressDelta
from crr.observability import logger
from crr.outcomes import APPLIED, Outcome, ReplicationResult
from crr.ports.table import ProgressSink


@dataclass
class _PendingProgress:
    per_rule: dict[str, ProgressDelta] = field(default_factory=dict)
    overwrites: dict[str, int] = field(default_factory=dict)

    def count(self, rule_id: str, result: ReplicationResult, event: ChangeEvent) -> None:
        delta = self.per_rule.setdefault(rule_id, ProgressDelta())
        if result.overwrote:
            self.overwrites[rule_id] = self.overwrites.get(rule_id, 0) + 1
        if result.outcome is Outcome.COPIED:
            delta.objects_copied += 1
            delta.bytes_copied += result.bytes_copied
        elif result.outcome is Outcome.DELETED:
            delta.deletes_applied += 1
        elif result.outcome is Outcome.COPY_STARTED:
            return  # the workflow counts the copy when it completes
        else:
            delta.skipped += 1
        if result.outcome in APPLIED and (
            delta.latest_event_time is None or event.event_time > delta.latest_event_time
        ):
            delta.latest_event_time = event.event_time


class ProgressBatcher:
    """Counts results per rule and writes them to ``sink`` (and the copies and overwrites to the delete
    breaker, which judges deletes against them) when a flush is due. Thread-safe: the backfill applies
    changes from many threads at once."""

    def __init__(
        self,
        sink: ProgressSink,
        *,
        clock: Callable[[], datetime],
        interval: float,
        monotonic: Callable[[], float],
        breaker: DeleteBreaker | None,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._interval = interval
        self._monotonic = monotonic
        self._breaker = breaker
        self._pending = _PendingProgress()
        self._lock = threading.Lock()
        self._last_flush = -math.inf

    def count(self, rule_id: str, result: ReplicationResult, event: ChangeEvent) -> None:
        with self._lock:
            self._pending.count(rule_id, result, event)

    def flush_if_due(self) -> None:
        """Flush when ``interval`` seconds have passed since the last flush. Never raises: the changes
        counted are applied, and failing their batch now would only apply them again."""
        if self._monotonic() - self._last_flush < self._interval:
            return
        try:
            self.flush()
        except CrrError as exc:
            logger.warning("progress not written; its counts are lost", extra={"error": str(exc)})

    def flush(self) -> None:
        """Write the accumulated progress now (one UpdateItem per rule with something to count)."""
        with self._lock:
            pending, self._pending = self._pending, _PendingProgress()
        if not pending.per_rule:
            return  # nothing written: the next change may flush at once
        self._last_flush = self._monotonic()
        now = self._clock()
        for rule_id, delta in pending.per_rule.items():
            if not delta.is_empty():
                self._sink.add(rule_id, delta, now)
            if self._breaker is not None:
                self._breaker.count_copies(rule_id, delta.objects_copied, pending.overwrites.get(rule_id, 0))
