"""Real-time replication of one change: make the destination match the source's current state.

``Replicator.apply`` is the live path's entry (the queue-message handler, crr.message_handling, and the
backfill call it). Correctness (DESIGN.md §3), in the words of this module and those it composes:
- an event is only a hint that a key changed: we HEAD the source and copy its *current* version,
  or delete the replica when the source no longer has the key (crr.one_way_reconciliation);
- the per-(rule, key) ledger keeps the highest sequencer applied, so a duplicate costs one DynamoDB
  read and nothing else. A sequencer is recorded only when the source state read confirms its
  record (same version id / ETag, present for a create, absent for a delete), and an older sequencer
  is skipped only while the source still holds the version the ledger recorded (one HEAD): a forged
  or bogus sequencer can never hide a real change;
- tag and ACL change events (crr.events.ChangeKind.METADATA) have sequencers of their own kind: they
  are never fenced nor recorded, and they set the replica's tags/ACL in place when the replica holds
  the source's version (else the key is reconciled as usual; crr.attribute_sync);
- the ledger write is optimistic (conditional on the revision we read). If it fails, another
  worker applied a change between our read and our write, and our copy may have landed after
  theirs with older bytes, so we reconcile again. Whichever of two racing workers writes the
  ledger second always re-copies the current source, so the last replica written is never older
  than the last source write either of them saw;
- every copy is pinned to the version and ETag the HEAD returned, so metadata and bytes of a
  replica always come from the same source write (crr.copy_planning);
- a two-way rule also reads the destination and writes only when the source's side is the later
  change, conditionally on the destination version it compared against (crr.two_way_reconciliation,
  crr.two_way_conflicts).

Retry bounds (each absorbs one kind of contention on one key; past it the record fails with
ReconcileContentionError and the queue delivers it again after its backoff):
- LEDGER_CONFLICT_ATTEMPTS (3): reconciles of the key, each ended by a conditional ledger write that
  another worker's write of the same key's entry may void;
- within one reconcile, one-way, SOURCE_CHANGE_ATTEMPTS (3): copies whose pinned source version was
  overwritten or deleted before the copy read it; two-way, SIDE_CHANGE_ATTEMPTS (3): comparisons of
  both sides that a change of either side voided, each of which may carry a buried delete over later
  copies with up to BURIED_DELETE_ATTEMPTS (3) conditional deletes.
Worst case per record: 3 x 3 = 9 copy (two-way: compare-and-copy) attempts, 3 ledger writes, and
two-way at most 3 conditional deletes per attempt; tests/unit/test_request_counts.py drives it.

Requests per record, as tests/unit/test_request_counts.py counts and checks them against this table
(ledger: one GetItem and one conditional PutItem of the key's entry; breaker: the delete breaker's
count, an UpdateItem; progress adds one UpdateItem per rule per flush interval, not per record; a
GetObjectAcl joins every copy when both buckets use ACLs; an object in parts adds a HeadObject of its
part layout):

    case                     ledger       breaker  S3
    new object, one-way      read, write  -        HeadObject, CopyObject
    overwrite, one-way       read, write  -        HeadObject, CopyObject
    delete, one-way          read, write  count    HeadObject, DeleteObject
    duplicate (fenced)       read         -        -
    older sequencer (stale)  read         -        HeadObject
    new object, two-way      read, write  -        HeadObject x2, ListObjectVersions x2, CopyObject
    overwrite, two-way       read, write  -        HeadObject x2, CopyObject, ListObjectVersions
    replica echo, two-way    read         -        HeadObject

One-way costs one HEAD beyond the physical minimum (one CopyObject): it pins the copy to the version read.
Two-way reads both sides (a ListObjectVersions when one is absent, for its delete marker) and checks
after its conditional copy that no user's write or delete landed under it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

from crr.attribute_sync import sync_attributes
from crr.breaker import DeleteBreaker
from crr.copy_planning import CopyPlanner
from crr.errors import LedgerConflictError, ReconcileContentionError, WrongRegionError
from crr.events import ChangeEvent, ChangeKind
from crr.large_copy import LargeObjectSettings
from crr.models import LedgerEntry, ObjectState
from crr.one_way_reconciliation import OneWayReconciler
from crr.outcomes import APPLIED, Outcome, Reconciled, ReplicationResult
from crr.ports.objects import ObjectStore
from crr.ports.queues import PeerNudges
from crr.ports.services import LargeCopyLauncher
from crr.ports.table import KeyLedger, ProgressSink, RuleLookup, TombstoneRegistry
from crr.progress_batching import ProgressBatcher
from crr.rules import ReplicationRule
from crr.sequencer import compare_sequencers
from crr.two_way_reconciliation import TwoWayReconciler

# What apply answers, importable with the entry itself.
__all__ = ["APPLIED", "Outcome", "ReplicationResult", "Replicator"]

# Each attempt is a full reconcile ended by a conditional ledger write; a key whose ledger entry other
# workers keep writing meanwhile is left to the queue's retry.
LEDGER_CONFLICT_ATTEMPTS = 3


class Replicator:
    """Applies change events for the rules it can look up. Thread-safe if its ports are."""

    def __init__(
        self,
        rules: RuleLookup,
        objects: ObjectStore,
        ledger: KeyLedger,
        progress: ProgressSink,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        breaker: DeleteBreaker | None = None,
        tombstones: TombstoneRegistry | None = None,
        nudges: PeerNudges | None = None,
        large_objects: LargeObjectSettings | None = None,
        large_copies: LargeCopyLauncher | None = None,
    ) -> None:
        self._rules = rules
        self._objects = objects
        self._ledger = ledger
        self._clock = clock
        self._remaining_seconds: Callable[[], float] = lambda: math.inf
        self._progress = ProgressBatcher(
            progress, clock=clock, interval=progress_interval, monotonic=monotonic, breaker=breaker
        )
        copies = CopyPlanner(
            objects,
            clock=clock,
            remaining_seconds=self._time_left,
            large_objects=large_objects or LargeObjectSettings(),
            large_copies=large_copies,
        )
        self._one_way = OneWayReconciler(objects, copies, breaker)
        self._two_way = TwoWayReconciler(
            objects, copies, clock=clock, breaker=breaker, tombstones=tombstones, nudges=nudges
        )

    @contextmanager
    def invocation_scope(self, remaining_seconds: Callable[[], float] | None = None) -> Iterator[Replicator]:
        """The applies of one invocation (a queue batch, a backfill step): its time bounds their copies,
        and its progress is flushed as it ends when the flush interval has passed (crr.progress_batching),
        so progress costs one write per rule per interval, not one per object.

        ``remaining_seconds``: the time the invocation has left; a copy estimated not to fit in it is
        handed to the large-copy workflow (when there is one).
        """
        if remaining_seconds is not None:
            self._remaining_seconds = remaining_seconds
        try:
            yield self
        finally:
            self._progress.flush_if_due()

    def _time_left(self) -> float:
        # Read through this method: each invocation scope sets its own clock.
        return self._remaining_seconds()

    def flush_progress(self) -> None:
        """Write the accumulated progress now (one UpdateItem per rule with something to count)."""
        self._progress.flush()

    def rule_id_for(self, bucket: str) -> str | None:
        """The id of the rule replicating ``bucket``, if any (for failure reports; never raises)."""
        try:
            rule = self._rules.rule_for_source(bucket)
        except Exception:  # noqa: BLE001 - a report must not fail because the table does
            return None
        return rule.rule_id if rule else None

    def apply(self, event: ChangeEvent) -> ReplicationResult:
        """Bring the replica of ``event.key`` in line with the source's current state.

        Raises StorageError subclasses for S3 failures that reconciling again cannot fix,
        StateStoreError for DynamoDB failures, ReconcileContentionError under persistent races,
        WrongRegionError for a misrouted record and ReplicaKeyMissingError for an SSE-KMS object whose
        rule names no replica key; the caller classifies the failure.
        """
        rule = self._rules.rule_for_source(event.bucket)
        if rule is None:
            return ReplicationResult(Outcome.NO_RULE, detail=f"no rule replicates bucket {event.bucket}")
        if event.region is not None and event.region != rule.source_region:
            # Bucket names are global, so a record naming another region was misrouted or forged.
            raise WrongRegionError(
                f"record says bucket {event.bucket} is in {event.region}, but rule {rule.rule_id} has it in "
                f"{rule.source_region}"
            )
        needless = self._needless(rule, event)
        if needless is not None:
            return self._skipped(rule, event, *needless)
        entry = self._ledger.read(rule.rule_id, event.key)
        fenced, entry = self._fence(rule, event, entry)
        if fenced is not None:
            return self._skipped(rule, event, fenced, f"ledger holds sequencer {entry and entry.sequencer}")
        result = self._reconcile_until_settled(rule, event, entry)
        self._progress.count(rule.rule_id, result, event)
        return result

    def _needless(self, rule: ReplicationRule, event: ChangeEvent) -> tuple[Outcome, str] | None:
        """Why the event needs no reconciling (and no ledger read), or None when it does."""
        if not rule.enabled:
            return Outcome.RULE_PAUSED, "rule is paused"
        if not rule.selects(event.key):
            return Outcome.OUTSIDE_PREFIXES, f"key outside {list(rule.prefixes)}"
        if event.speculative and event.kind is not ChangeKind.REMOVED and not self._source_holds(rule, event.key):
            # Not this reading of the key: reconciling would delete a replica nobody asked to delete.
            return Outcome.READING_ABSENT, "no source object under this reading"
        if event.kind is ChangeKind.METADATA:
            in_place = sync_attributes(self._objects, rule, event.key)
            if in_place is not None:
                return in_place, "tags / ACL of the replica compared"
        return None

    def _source_holds(self, rule: ReplicationRule, key: str) -> bool:
        return self._objects.head(rule.source_bucket, rule.source_region, key) is not None

    def _skipped(self, rule: ReplicationRule, event: ChangeEvent, outcome: Outcome, detail: str) -> ReplicationResult:
        result = ReplicationResult(outcome, rule_id=rule.rule_id, detail=detail)
        self._progress.count(rule.rule_id, result, event)
        return result

    def _fence(
        self, rule: ReplicationRule, event: ChangeEvent, entry: LedgerEntry | None
    ) -> tuple[Outcome | None, LedgerEntry | None]:
        """DUPLICATE or STALE when the event needs no work, else None and the entry to reconcile against.

        A duplicate costs nothing. An older sequencer costs one HEAD: it is skipped only while the source
        still holds what the ledger recorded. Otherwise the ledger's higher sequencer named no real
        later change (a forged or bogus record), or that change's record is still on its way: the key
        is reconciled, and the sequencers the source confirms replace it.
        """
        order = _order(event, entry)
        if order is None or entry is None or order > 0:
            return None, entry
        if order == 0:
            return Outcome.DUPLICATE, entry
        if _holds(self._objects.head(rule.source_bucket, rule.source_region, event.key), entry):
            return Outcome.STALE, entry
        return None, replace(entry, sequencer=None)

    def _reconcile_until_settled(
        self, rule: ReplicationRule, event: ChangeEvent, entry: LedgerEntry | None
    ) -> ReplicationResult:
        for attempt in range(1, LEDGER_CONFLICT_ATTEMPTS + 1):
            outcome, state, replica_etag = self._reconcile_once(rule, event.key, event.event_time)
            if outcome is Outcome.REPLICA_OF_DESTINATION:
                # Nothing was written; no ledger entry is needed to stay correct.
                return ReplicationResult(outcome, rule.rule_id, attempts=attempt, detail="object is a replica")
            confirmed = event.sequencer if _confirms(event, state) else None
            newest = _newest(confirmed, entry.sequencer if entry else None)
            record = LedgerEntry(
                revision=(entry.revision if entry else 0) + 1,
                sequencer=newest,
                etag=state.etag if state else None,
                deleted=state is None,
                applied_at=self._clock(),
                version_id=state.version_id if state else None,
                source_modified=state.last_modified if state else None,
                replica_etag=replica_etag,
            )
            try:
                self._ledger.record(rule.rule_id, event.key, record, entry.revision if entry else None)
            except LedgerConflictError:
                entry = self._ledger.read(rule.rule_id, event.key)
                continue
            copied = state.size if (state and outcome is Outcome.COPIED) else 0
            overwrote = outcome is Outcome.COPIED and entry is not None and not entry.deleted
            return ReplicationResult(outcome, rule.rule_id, bytes_copied=copied, attempts=attempt, overwrote=overwrote)
        raise ReconcileContentionError(
            f"key {event.key!r} of rule {rule.rule_id} changed under us {LEDGER_CONFLICT_ATTEMPTS} times"
        )

    def _reconcile_once(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> Reconciled:
        if rule.two_way:
            return self._two_way.reconcile(rule, key, event_time)
        return self._one_way.reconcile(rule, key, event_time)


def _order(event: ChangeEvent, entry: LedgerEntry | None) -> int | None:
    """How the event's sequencer compares with the ledger's (-1, 0, 1), or None when they cannot be
    compared. A tag or ACL change's sequencer orders tag and ACL changes, not object writes."""
    if entry is None or entry.sequencer is None or event.sequencer is None or event.kind is ChangeKind.METADATA:
        return None
    return compare_sequencers(event.sequencer, entry.sequencer)


def _newest(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if compare_sequencers(a, b) >= 0 else b


def _confirms(event: ChangeEvent, state: ObjectState | None) -> bool:
    """Whether the source state read is the one ``event`` reports: a create of that version (id, or ETag
    on an unversioned bucket) that is current, or a delete of a key that is absent. Only then may the
    event's sequencer fence later records out."""
    if event.kind is ChangeKind.METADATA:
        return False
    if event.kind is ChangeKind.REMOVED:
        return state is None
    if state is None:
        return False
    if event.version_id is not None:
        return event.version_id == state.version_id
    if event.etag is not None:
        return event.etag.strip('"') == state.etag.strip('"')
    return True


def _holds(state: ObjectState | None, entry: LedgerEntry) -> bool:
    """Whether the source still holds exactly what ``entry`` recorded as applied."""
    if entry.deleted:
        return state is None
    return (
        state is not None
        and entry.source_modified is not None
        and state.etag == entry.etag
        and state.version_id == entry.version_id
        and state.last_modified == entry.source_modified
    )
