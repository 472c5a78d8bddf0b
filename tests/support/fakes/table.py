"""In-memory fakes of the rules-table ports (``crr.ports.table``). The ledger, tombstones, progress,
failure log and rules behave as their DynamoDB adapters do on what replication relies on
(tests/unit/test_fakes_conform.py runs the same checks against both)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from crr.backfill.models import BackfillJob, BackfillStatus, PageResult
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
    """Fake of ``crr.ports.table.BackfillJobs`` and ``BackfillSource``, with the job store's once-per-page
    semantics (``BackfillJob.with_page``); ``jobs`` are there from the start, ``clock`` stamps updates."""

    def __init__(
        self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, jobs: Iterable[BackfillJob] = ()
    ) -> None:
        self.jobs: dict[tuple[str, str], BackfillJob] = {(job.rule_id, job.job_id): job for job in jobs}
        self.clock = clock
        self.recorded: list[int] = []

    def create(self, job: BackfillJob) -> None:
        if (job.rule_id, job.job_id) in self.jobs:
            raise BackfillJobConflictError(f"job {job.job_id} exists")
        self.jobs[(job.rule_id, job.job_id)] = job

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        if (rule_id, job_id) not in self.jobs:
            raise BackfillJobNotFoundError(rule_id, job_id)
        return self.jobs[(rule_id, job_id)]

    def latest(self, rule_id: str) -> BackfillJob | None:
        mine = sorted(job_id for rule, job_id in self.jobs if rule == rule_id)
        return self.jobs[(rule_id, mine[-1])] if mine else None

    def record_page(self, result: PageResult) -> BackfillJob:
        job = self.get(result.rule_id, result.job_id)
        if job.status is not BackfillStatus.RUNNING and result.sequence > job.pages:
            raise BackfillJobConflictError(f"job {job.job_id} is {job.status.value}")
        job = job.with_page(result, self.clock())
        self.jobs[(job.rule_id, job.job_id)] = job
        self.recorded.append(result.sequence)
        return job

    def _set(self, rule_id: str, job_id: str, **changes: object) -> BackfillJob:
        job = self.get(rule_id, job_id).model_copy(update=changes)
        self.jobs[(rule_id, job_id)] = job
        return job

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        if not self.get(rule_id, job_id).done:
            raise BackfillJobConflictError("pages left")
        return self._set(rule_id, job_id, status=BackfillStatus.SUCCEEDED, finished_at=at, updated_at=at)

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob:
        if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
            raise BackfillJobConflictError("succeeded")
        return self._set(
            rule_id, job_id, status=BackfillStatus.FAILED, failure_reason=reason, finished_at=at, updated_at=at
        )

    def set_execution(self, rule_id: str, job_id: str, execution_arn: str, at: datetime) -> BackfillJob:
        if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
            raise BackfillJobConflictError("succeeded")
        return self._set(
            rule_id,
            job_id,
            status=BackfillStatus.RUNNING,
            execution_arn=execution_arn,
            failure_reason=None,
            finished_at=None,
            updated_at=at,
        )
