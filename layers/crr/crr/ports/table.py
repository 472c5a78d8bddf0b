"""Ports to the rules table (DynamoDB): rules, the key ledger, tombstones, progress, failures, the
delete breaker and backfill jobs. Where a reader and a writer of one item are two ports, the docstring
says why."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol

from crr.backfill.models import BackfillJob, BackfillRange, RangePage
from crr.failures import FailureReason, FailureRecord
from crr.models import (
    BreakerRecord,
    FailureCount,
    LedgerEntry,
    ProgressDelta,
    QueueMessage,
    RuleProgress,
    TombstoneRecord,
    Verdict,
)
from crr.rules import PeerRule, ReplicationRule, RuleStatus
from crr.stamps import Stamp


class RuleLookup(Protocol):
    """The replicator's hot path: the rule of a source bucket, per record. Apart from ``RuleReader``
    because its promise differs: it may answer from a cache up to a few seconds old (a paused rule is
    honoured within ``RULE_CACHE_SECONDS``), where a reader by id always reads the table.

    Implemented by ``crr.adapters.dynamodb.DynamoRules``; in tests by ``tests.support.fakes.FakeRules``."""

    def rule_for_source(self, bucket: str) -> ReplicationRule | None: ...


class RuleReader(Protocol):
    """The stack's rules read by id or all at once (``crr status``, the backfill workflow, the wiring
    check).

    Implemented by ``crr.adapters.dynamodb.DynamoRules``; in tests by ``tests.support.fakes.FakeRules``."""

    def list(self) -> list[ReplicationRule]: ...

    def get(self, rule_id: str) -> ReplicationRule:
        """Raises RuleNotFoundError."""
        ...


class RuleStore(RuleReader, Protocol):
    """Rules as managing them changes them (crr_cli.operations.catalog): the reader plus the writes, which only the
    CLI makes. Apart from ``RuleReader`` so that nothing on the replication path can write a rule.

    Implemented by ``crr.adapters.dynamodb.DynamoRules``; in tests by moto."""

    def create(self, rule: ReplicationRule) -> None: ...
    def set_status(self, rule_id: str, status: RuleStatus) -> ReplicationRule: ...
    def remove(self, rule_id: str) -> ReplicationRule: ...
    def set_peer(self, rule_id: str, peer: PeerRule | None) -> ReplicationRule: ...


class KeyLedger(Protocol):
    """The key ledger: what was last applied per (rule, key), written conditionally (the fence).

    Implemented by ``crr.adapters.dynamodb.DynamoLedger``; in tests by ``tests.support.fakes.FakeLedger``; for
    memory at any object count by ``tests.support.synthetic.DiscardingLedger``."""

    def read(self, rule_id: str, key: str) -> LedgerEntry | None: ...

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        """Store ``entry`` if the stored revision is still ``expected_revision`` (None: no entry yet).

        Raises LedgerConflictError otherwise.
        """
        ...

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        """The entries of those keys that have one (BatchGetItem: one request per 100 keys)."""
        ...


class TombstoneRegistry(Protocol):
    """Records of the delete markers a two-way rule made (crr.two_way_conflicts).

    Implemented by ``crr.adapters.dynamodb.DynamoTombstones``; in tests by ``tests.support.fakes.FakeTombstones``."""

    def read(self, rule_id: str, key: str) -> TombstoneRecord | None:
        """This rule's record for ``key`` (the rule's own table)."""
        ...

    def read_peer(self, rule: ReplicationRule, key: str) -> TombstoneRecord | None:
        """The peer rule's record for ``key``: the markers it made in this rule's source (read from the
        peer's table, in the destination region)."""
        ...

    def intend(self, rule_id: str, key: str, stamp: Stamp, at: datetime, target: str | None) -> None:
        """Record, just before deleting version ``target`` of ``key``, the delete (``stamp``) it stands for."""
        ...

    def settle(self, rule_id: str, key: str, marker_version: str | None, stamp: Stamp) -> None: ...

    def withdraw(self, rule_id: str, key: str) -> None:
        """Forget a pending delete that did not happen (its condition failed)."""
        ...


class ProgressSink(Protocol):
    """Adds a batch's counters to a rule's progress: the replicator's write side (``ProgressSource`` is the CLI's read
    side, another adapter).

    Implemented by ``crr.adapters.dynamodb.DynamoProgress``; in tests by ``tests.support.fakes.FakeProgress``."""

    def add(self, rule_id: str, delta: ProgressDelta, applied_at: datetime) -> None: ...


class ProgressSource(Protocol):
    """A rule's progress, as ``crr status`` reads it (``ProgressSink`` writes it).

    Implemented by ``crr_cli.adapters.health.DynamoProgressReader``; in tests by
    ``tests.support.fakes.FakeProgress``."""

    def read(self, rule_id: str) -> RuleProgress | None:
        """The rule's progress, or None before its first sync."""
        ...


class FailureLog(Protocol):
    """Per-message failure records: the replicator counts attempts and keeps the latest reason.

    Implemented by ``crr.adapters.dynamodb.DynamoFailureLog``; in tests by ``tests.support.fakes.FakeFailureLog``."""

    def record(
        self, message: QueueMessage, reason: FailureReason, *, rule_id: str | None, bucket: str | None, key: str | None
    ) -> FailureRecord:
        """Count one more failed attempt of ``message`` and keep its latest reason; returns the record."""
        ...

    def find(self, message_id: str) -> FailureRecord | None: ...


class FailureCounter(Protocol):
    """Counts failure records over a window, for ``crr status``: a scan, never on the replication path, hence apart
    from ``FailureLog``.

    Implemented by ``crr_cli.adapters.health.DynamoFailureCounter``; in tests by
    ``tests.support.fakes.FakeFailureCounter``."""

    def count_since(self, cutoff: datetime) -> FailureCount:
        """Failure records whose last failure is at or after ``cutoff``."""
        ...


class BreakerStore(Protocol):
    """The delete breaker's counts and state, as the replicator updates them.

    Implemented by ``crr.adapters.dynamodb.DynamoBreakerStore``; in tests by
    ``tests.support.fakes.FakeBreakerStore``."""

    def count_delete(self, rule_id: str, slot: int, stale: Iterable[int], deletes: int = 1) -> BreakerRecord:
        """Add ``deletes`` deletes (and as many changes) to ``slot``, drop the ``stale`` slots; the record
        after it."""
        ...

    def count_copies(self, rule_id: str, slot: int, copies: int, overwrites: int, at: datetime) -> None: ...

    def read(self, rule_id: str) -> BreakerRecord:
        """The record read now (consistent)."""
        ...

    def trip(self, rule_id: str, at: datetime) -> bool:
        """Mark the rule's deletes held since ``at``, unless they already are (then False)."""
        ...

    def hold(self, rule_id: str, key: str, held_since: datetime, at: datetime) -> BreakerRecord:
        """Remember the held delete of ``key``, then read the breaker again (consistent). When it is no
        longer held since ``held_since`` an operator answered meanwhile, and the held key is withdrawn:
        the answer's scan of held keys may have run before it was written."""
        ...

    def end_discarding(self, rule_id: str, answered_until: datetime | None) -> None:
        """The discarded burst is over (unless a newer answer, ending elsewhere, was given meanwhile)."""
        ...


class HeldDeletes(Protocol):
    """The deletes a tripped breaker holds, as an operator's release or discard works through them (apart from
    ``BreakerStore``: only the CLI answers a burst).

    Implemented by ``crr.adapters.dynamodb.DynamoBreakerStore``; in tests by none: tested over moto."""

    def read(self, rule_id: str) -> BreakerRecord: ...
    def held_keys(self, rule_id: str) -> Iterator[tuple[str, str]]: ...
    def forget_held(self, rule_id: str, sort_key: str) -> None: ...

    def answer(
        self,
        rule_id: str,
        held_since: datetime,
        verdict: Verdict,
        span: tuple[datetime, datetime],
        reset: Iterable[int],
    ) -> bool:
        """Close the breaker held since ``held_since`` with ``verdict`` over the event-time ``span``; a
        discard keeps counting the burst, a release drops the ``reset`` slots so the count starts afresh.
        False when it was not held since then (another operator answered first)."""
        ...


class BreakerSource(Protocol):
    """The breaker as ``crr status`` reads it.

    Implemented by ``crr.adapters.dynamodb.DynamoBreakerStore``; in tests by
    ``tests.support.fakes.FakeBreakerStore``."""

    def read(self, rule_id: str) -> BreakerRecord: ...
    def held_count(self, rule_id: str) -> int: ...


class BackfillJobs(Protocol):
    """Where backfill jobs and their ranges are kept, how workers take ranges, and how a page of a range is
    recorded once (with the job's aggregate and any split, in one transaction).

    Implemented by ``crr.adapters.dynamodb.DynamoBackfillJobs``; in tests by
    ``tests.support.fakes.FakeBackfillJobs``."""

    def create(self, job: BackfillJob) -> None:
        """Raises BackfillJobConflictError when the job exists."""
        ...

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        """Raises BackfillJobNotFoundError."""
        ...

    def latest(self, rule_id: str) -> BackfillJob | None: ...

    def add_ranges(self, rule_id: str, job_id: str, ranges: Sequence[BackfillRange]) -> BackfillJob:
        """Store the job's first ranges and set its counters from them (``ranges_made``, ``ranges_open``,
        ``ranges_uncounted``), unless it has ranges already (then nothing changes); the job after it.
        Raises BackfillJobNotFoundError."""
        ...

    def ranges(self, rule_id: str, job_id: str, *, open_only: bool = False) -> list[BackfillRange]:
        """The job's ranges (only those not done with ``open_only``), in range id order."""
        ...

    def claim(
        self, rule_id: str, job_id: str, range_id: str, worker: str, expected: str | None
    ) -> BackfillRange | None:
        """Give the range to ``worker`` if it is open and still held by ``expected`` (None: by no one); the
        range after it, or None when another worker took it first or it is done."""
        ...

    def record_page(self, page: RangePage) -> BackfillRange:
        """Record a page of a range: once per sequence and only while ``page.worker`` holds the range, with
        the job's aggregate and the ranges split off, all or nothing. A page already recorded (a retried
        step) returns the range as it is; so does a page of a range another worker holds now (nothing of
        it is recorded: the range's ``claim`` names the holder, who lists those keys again). Raises
        BackfillJobConflictError for a page out of order or a job no longer running."""
        ...

    def release(self, rule_id: str, job_id: str, worker: str) -> int:
        """Drop ``worker``'s claims on the job's ranges (each goes on from its cursor under whoever takes it
        next); how many it held."""
        ...

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        """Raises BackfillJobConflictError while ranges are open."""
        ...

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob: ...

    def set_execution(
        self, rule_id: str, job_id: str, execution_arn: str, at: datetime, *, workers: int | None = None
    ) -> BackfillJob:
        """The execution now running the job (running again), and with ``workers`` its new fan-out."""
        ...


class BackfillSource(Protocol):
    """A rule's newest backfill job, as ``crr status`` reads it (the read-only slice of ``BackfillJobs``).

    Implemented by ``crr.adapters.dynamodb.DynamoBackfillJobs``; in tests by
    ``tests.support.fakes.FakeBackfillJobs``."""

    def latest(self, rule_id: str) -> BackfillJob | None: ...
