"""In-memory fakes of the rules-table ports (``crr.ports.table``). The ledger, tombstones, progress,
failure log and rules behave as their DynamoDB adapters do on what replication relies on
(tests/unit/test_fakes_conform.py runs the same checks against both)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from crr.backfill.models import BackfillJob, BackfillRange, BackfillStatus, RangePage
from crr.errors import BackfillJobConflictError, BackfillJobNotFoundError, LedgerConflictError, RuleNotFoundError
from crr.failures import FailureReason, FailureRecord
from crr.models import (
    BreakerRecord,
    FailureCount,
    LedgerEntry,
    ProgressDelta,
    QueueMessage,
    RuleProgress,
    TombstoneRecord,
)
from crr.rules import ReplicationRule
from crr.stamps import Stamp


def _no_yield() -> None:
    return None


class FakeRules:
    """Fake of ``crr.ports.table.RuleLookup`` and ``RuleReader``: the given rules, never cached, so a test
    that changes a rule sees the change at once."""

    def __init__(self, *rules: ReplicationRule) -> None:
        self.by_id = {rule.rule_id: rule for rule in rules}

    def rule_for_source(self, bucket: str) -> ReplicationRule | None:
        return next((rule for rule in reversed(self.by_id.values()) if rule.source_bucket == bucket), None)

    def list(self) -> list[ReplicationRule]:
        return sorted(self.by_id.values(), key=lambda rule: rule.rule_id)

    def get(self, rule_id: str) -> ReplicationRule:
        if rule_id not in self.by_id:
            raise RuleNotFoundError(rule_id)
        return self.by_id[rule_id]


Hook = Callable[[str], None]


class FakeLedger:
    """Fake of ``crr.ports.table.KeyLedger``, fenced by revision as the DynamoDB ledger is. Counts one-key
    ``reads`` and ``writes``; ``before_record[key]`` runs once, just before a record of that key (where
    another writer may get in first)."""

    def __init__(self, yield_point: Callable[[], None] = _no_yield) -> None:
        self.entries: dict[tuple[str, str], LedgerEntry] = {}
        self.reads = 0  # GetItem of one key (read_many is the backfill's BatchGetItem, not counted)
        self.writes = 0
        self.yield_point = yield_point
        self.before_record: dict[str, Hook] = {}
        self._lock = threading.Lock()

    def read(self, rule_id: str, key: str) -> LedgerEntry | None:
        self.yield_point()
        with self._lock:
            self.reads += 1
            return self.entries.get((rule_id, key))

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        self.yield_point()
        with self._lock:
            return {key: self.entries[(rule_id, key)] for key in keys if (rule_id, key) in self.entries}

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        if (hook := self.before_record.pop(key, None)) is not None:
            hook(key)
        self.yield_point()
        with self._lock:
            self.writes += 1
            stored = self.entries.get((rule_id, key))
            if (stored.revision if stored else None) != expected_revision:
                raise LedgerConflictError(f"expected revision {expected_revision}")
            self.entries[(rule_id, key)] = entry


class FakeTombstones:
    """Fake of ``crr.ports.table.TombstoneRegistry``. One store holds every rule's records, so a rule's peer
    reads them by the peer's rule id, as it would from the peer's table."""

    def __init__(self, yield_point: Callable[[], None] = _no_yield) -> None:
        self.records: dict[tuple[str, str], TombstoneRecord] = {}
        self.yield_point = yield_point
        self._lock = threading.Lock()

    def read(self, rule_id: str, key: str) -> TombstoneRecord | None:
        self.yield_point()
        with self._lock:
            return self.records.get((rule_id, key))

    def read_peer(self, rule: ReplicationRule, key: str) -> TombstoneRecord | None:
        if rule.peer is None:
            return None
        return self.read(rule.peer.rule_id, key)

    def intend(self, rule_id: str, key: str, stamp: Stamp, at: datetime, target: str | None) -> None:
        self.yield_point()
        with self._lock:
            found = self.records.get((rule_id, key)) or TombstoneRecord(None, None)
            self.records[(rule_id, key)] = replace(found, pending_stamp=stamp, pending_since=at, pending_target=target)

    def settle(self, rule_id: str, key: str, marker_version: str | None, stamp: Stamp) -> None:
        self.yield_point()
        with self._lock:
            self.records[(rule_id, key)] = TombstoneRecord(marker_version, stamp)

    def withdraw(self, rule_id: str, key: str) -> None:
        self.yield_point()
        with self._lock:
            # An update that removes attributes still leaves an (empty) item, as DynamoDB's does.
            found = self.records.get((rule_id, key)) or TombstoneRecord(None, None)
            self.records[(rule_id, key)] = replace(found, pending_stamp=None, pending_since=None, pending_target=None)


class FakeProgress:
    """Fake of ``crr.ports.table.ProgressSink`` and ``ProgressSource``: ``add`` logs each delta in ``added``
    and adds it to the rule's progress (counters summed, times replaced, as the UpdateItem does), which
    ``read`` answers; ``progress`` by rule id is where it starts."""

    def __init__(self, **progress: RuleProgress) -> None:
        self.progress = dict(progress)
        self.added: list[tuple[str, ProgressDelta]] = []
        self._lock = threading.Lock()

    def add(self, rule_id: str, delta: ProgressDelta, applied_at: datetime) -> None:
        with self._lock:
            self.added.append((rule_id, delta))
            now = self.progress.get(rule_id) or RuleProgress()
            self.progress[rule_id] = RuleProgress(
                objects_copied=now.objects_copied + delta.objects_copied,
                bytes_copied=now.bytes_copied + delta.bytes_copied,
                deletes_applied=now.deletes_applied + delta.deletes_applied,
                skipped=now.skipped + delta.skipped,
                last_sync_at=applied_at,
                last_event_time=delta.latest_event_time or now.last_event_time,
            )

    def read(self, rule_id: str) -> RuleProgress | None:
        return self.progress.get(rule_id)


class FakeFailureLog:
    """Fake of ``crr.ports.table.FailureLog``: one record per message id, counting its attempts and keeping
    its first failure time and latest reason, as the DynamoDB log does; ``recorded`` logs what each call
    returned. ``records`` is where it starts; ``refuse_records`` fails the test on a ``record`` (for code
    that must only read the log)."""

    def __init__(
        self,
        records: Mapping[str, FailureRecord] | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        refuse_records: bool = False,
    ) -> None:
        self.records = dict(records or {})
        self.recorded: list[FailureRecord] = []
        self.clock = clock
        self.refuse_records = refuse_records

    def record(
        self, message: QueueMessage, reason: FailureReason, *, rule_id: str | None, bucket: str | None, key: str | None
    ) -> FailureRecord:
        if self.refuse_records:
            raise AssertionError("this code only reads the failure log")
        now = self.clock()
        before = self.records.get(message.message_id)
        record = FailureRecord(
            message.message_id,
            reason,
            (before.attempts if before else 0) + 1,
            before.first_failure if before else now,
            now,
            rule_id,
            bucket,
            key,
        )
        self.records[message.message_id] = record
        self.recorded.append(record)
        return record

    def find(self, message_id: str) -> FailureRecord | None:
        return self.records.get(message_id)


class FakeFailureCounter:
    """Fake of ``crr.ports.table.FailureCounter``: failure records by last-failure time; remembers the
    cutoffs asked for."""

    def __init__(self, *last_failures: datetime, complete: bool = True) -> None:
        self.last_failures = last_failures
        self.complete = complete
        self.cutoffs: list[datetime] = []

    def count_since(self, cutoff: datetime) -> FailureCount:
        self.cutoffs.append(cutoff)
        return FailureCount(count=sum(1 for at in self.last_failures if at >= cutoff), complete=self.complete)


class FakeBreakerStore:
    """Fake of ``crr.ports.table.BreakerStore`` and ``BreakerSource``: the breaker item of one rule (every
    rule id reads and writes the same ``record``), with DynamoDB's semantics for what the breaker asks of
    it; ``held`` are the keys whose deletes it holds."""

    def __init__(self, record: BreakerRecord | None = None, held: Iterable[str] = ()) -> None:
        self.record = record or BreakerRecord()
        self.held = {key: self.record.held_since for key in held}

    def count_delete(self, rule_id: str, slot: int, stale: Iterable[int], deletes: int = 1) -> BreakerRecord:
        gone = set(stale)

        def add(slots: Mapping[int, int]) -> dict[int, int]:
            kept = {old: count for old, count in slots.items() if old not in gone}
            return kept | {slot: kept.get(slot, 0) + deletes}

        self.record = replace(self.record, deletes=add(self.record.deletes), changes=add(self.record.changes))
        return self.record

    def count_copies(self, rule_id: str, slot: int, copies: int, overwrites: int, at: datetime) -> None:
        record = self.record
        self.record = replace(
            record,
            changes={**record.changes, slot: record.changes.get(slot, 0) + copies},
            overwrites={**record.overwrites, slot: record.overwrites.get(slot, 0) + overwrites},
            overwrites_total=record.overwrites_total + overwrites,
            overwrites_since=record.overwrites_since or at,
        )

    def read(self, rule_id: str) -> BreakerRecord:
        return self.record

    def trip(self, rule_id: str, at: datetime) -> bool:
        if self.record.held:
            return False
        self.record = replace(self.record, held_since=at)
        return True

    def hold(self, rule_id: str, key: str, held_since: datetime, at: datetime) -> BreakerRecord:
        self.held[key] = held_since
        if self.record.held_since != held_since:
            del self.held[key]  # answered meanwhile
        return self.record

    def end_discarding(self, rule_id: str, answered_until: datetime | None) -> None:
        self.record = replace(self.record, discarding=False)

    def held_count(self, rule_id: str) -> int:
        return len(self.held)


class FakeBackfillJobs:
    """Fake of ``crr.ports.table.BackfillJobs`` and ``BackfillSource``, with the job store's semantics: a
    page recorded once per sequence while its worker holds the range, the job's aggregate and a split
    applied with it all or nothing. Thread-safe (the fanned-out runner records from several threads).
    ``jobs`` are there from the start, ``clock`` stamps updates; ``recorded`` lists (range id, sequence)
    of every page actually recorded; ``before_record`` runs just before a page is applied (where another
    worker may get in first). ``finished_ranges`` keeps each range as its final page left it, after the
    store deleted it (for tests checking a whole job's ranges; the port has no such read)."""

    def __init__(
        self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, jobs: Iterable[BackfillJob] = ()
    ) -> None:
        self.jobs: dict[tuple[str, str], BackfillJob] = {(job.rule_id, job.job_id): job for job in jobs}
        self.stored_ranges: dict[tuple[str, str], dict[str, BackfillRange]] = {}
        self.clock = clock
        self.recorded: list[tuple[str, int]] = []
        self.finished_ranges: dict[tuple[str, str], dict[str, BackfillRange]] = {}
        self.before_record: Callable[[RangePage], None] | None = None
        self._lock = threading.RLock()

    def create(self, job: BackfillJob) -> None:
        with self._lock:
            if (job.rule_id, job.job_id) in self.jobs:
                raise BackfillJobConflictError(f"job {job.job_id} exists")
            self.jobs[(job.rule_id, job.job_id)] = job

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        with self._lock:
            if (rule_id, job_id) not in self.jobs:
                raise BackfillJobNotFoundError(rule_id, job_id)
            return self.jobs[(rule_id, job_id)]

    def latest(self, rule_id: str) -> BackfillJob | None:
        with self._lock:
            mine = sorted(job_id for rule, job_id in self.jobs if rule == rule_id)
            return self.jobs[(rule_id, mine[-1])] if mine else None

    def add_ranges(self, rule_id: str, job_id: str, ranges: Sequence[BackfillRange]) -> BackfillJob:
        with self._lock:
            job = self.get(rule_id, job_id)
            if job.planned:
                return job
            self.stored_ranges[(rule_id, job_id)] = {item.range_id: item for item in ranges}
            return self._set(
                rule_id,
                job_id,
                ranges_made=len(ranges),
                ranges_open=sum(not item.done for item in ranges),
                ranges_uncounted=sum(not item.count_complete for item in ranges),
            )

    def ranges(self, rule_id: str, job_id: str, *, open_only: bool = False) -> list[BackfillRange]:
        with self._lock:
            stored = self.stored_ranges.get((rule_id, job_id), {})
            return [stored[name] for name in sorted(stored) if not (open_only and stored[name].done)]

    def claim(
        self, rule_id: str, job_id: str, range_id: str, worker: str, expected: str | None
    ) -> BackfillRange | None:
        with self._lock:
            stored = self.stored_ranges.get((rule_id, job_id), {})
            item = stored.get(range_id)
            if item is None or item.done or item.claim != expected:
                return None
            stored[range_id] = item.model_copy(update={"claim": worker})
            return stored[range_id]

    def record_page(self, page: RangePage) -> BackfillRange:
        if self.before_record is not None:
            self.before_record(page)
        with self._lock:
            job = self.get(page.rule_id, page.job_id)
            stored = self.stored_ranges.get((page.rule_id, page.job_id), {})
            item = stored.get(page.range_id)
            if item is None:
                return page.final_range()  # deleted with its final page: a retried step, recorded already
            if item.pages >= page.sequence or item.claim != page.worker:
                return item  # a retried step (recorded once already), or the range is another worker's now
            if item.pages != page.sequence - 1:
                raise BackfillJobConflictError(
                    f"range {page.range_id}: page {page.sequence} of {page.worker} arrived, but {item.pages} "
                    f"page(s) are recorded and {item.claim} holds it"
                )
            for new in page.new_ranges:
                if new.range_id in stored:
                    raise BackfillJobConflictError(f"range {new.range_id} exists")
            stored[page.range_id] = item.model_copy(
                update={
                    "until": page.until,
                    "cursor": page.cursor,
                    "count_cursor": page.count_cursor,
                    "count_complete": page.count_complete,
                    "done": page.done,
                    "pages": page.sequence,
                    "row": page.row,
                    "totals": item.totals.plus(page.counts),
                    "counted": item.counted + page.counted,
                    "counted_bytes": item.counted_bytes + page.counted_bytes,
                    "active_seconds": item.active_seconds + page.elapsed_seconds,
                }
            )
            stored.update({new.range_id: new for new in page.new_ranges})
            recorded = stored[page.range_id]
            if page.done:
                # As DynamoBackfillJobs: a range goes with its final page, so open-range reads skip it.
                finished = self.finished_ranges.setdefault((page.rule_id, page.job_id), {})
                finished[page.range_id] = stored.pop(page.range_id)
                recorded = page.final_range()
            self._set(
                page.rule_id,
                page.job_id,
                pages=job.pages + 1,
                totals=job.totals.plus(page.counts),
                counted=job.counted + page.counted,
                counted_bytes=job.counted_bytes + page.counted_bytes,
                active_seconds=job.active_seconds + page.elapsed_seconds,
                ranges_made=job.ranges_made + len(page.new_ranges),
                ranges_open=job.ranges_open + page.opened,
                ranges_uncounted=job.ranges_uncounted + page.uncounted,
                updated_at=self.clock(),
            )
            self.recorded.append((page.range_id, page.sequence))
            return recorded

    def release(self, rule_id: str, job_id: str, worker: str) -> int:
        with self._lock:
            stored = self.stored_ranges.get((rule_id, job_id), {})
            held = [name for name, item in stored.items() if item.claim == worker]
            for name in held:
                stored[name] = stored[name].model_copy(update={"claim": None})
            return len(held)

    def _set(self, rule_id: str, job_id: str, **changes: object) -> BackfillJob:
        with self._lock:
            job = self.get(rule_id, job_id).model_copy(update=changes)
            self.jobs[(rule_id, job_id)] = job
            return job

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        with self._lock:
            job = self.get(rule_id, job_id)
            if job.status is BackfillStatus.SUCCEEDED:
                return job
            if not job.done:
                raise BackfillJobConflictError("ranges left")
            return self._set(rule_id, job_id, status=BackfillStatus.SUCCEEDED, finished_at=at, updated_at=at)

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob:
        with self._lock:
            if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
                raise BackfillJobConflictError("succeeded")
            return self._set(
                rule_id, job_id, status=BackfillStatus.FAILED, failure_reason=reason, finished_at=at, updated_at=at
            )

    def set_execution(
        self, rule_id: str, job_id: str, execution_arn: str, at: datetime, *, workers: int | None = None
    ) -> BackfillJob:
        with self._lock:
            if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
                raise BackfillJobConflictError("succeeded")
            changes: dict[str, object] = {"workers": workers} if workers is not None else {}
            return self._set(
                rule_id,
                job_id,
                status=BackfillStatus.RUNNING,
                execution_arn=execution_arn,
                failure_reason=None,
                finished_at=None,
                updated_at=at,
                **changes,
            )
