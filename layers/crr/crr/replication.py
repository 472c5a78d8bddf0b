"""Real-time replication of one change: make the destination match the source's current state.

Correctness (DESIGN.md §3), in the words of this module:
- an event is only a hint that a key changed: we HEAD the source and copy its *current* version,
  or delete the replica when the source no longer has the key;
- the per-(rule, key) ledger keeps the highest sequencer applied, so a duplicate costs one DynamoDB
  read and nothing else. A sequencer is recorded only when the source state read confirms its
  record (same version id / ETag, present for a create, absent for a delete), and an older sequencer
  is skipped only while the source still holds the version the ledger recorded (one HEAD): a forged
  or bogus sequencer can never hide a real change;
- tag and ACL change events (crr.events.ChangeKind.METADATA) have sequencers of their own kind: they
  are never fenced nor recorded, and they set the replica's tags/ACL in place when the replica holds
  the source's version (else the key is reconciled as usual);
- the ledger write is optimistic (conditional on the revision we read). If it fails, another
  worker applied a change between our read and our write, and our copy may have landed after
  theirs with older bytes, so we reconcile again. Whichever of two racing workers writes the
  ledger second always re-copies the current source, so the last replica written is never older
  than the last source write either of them saw;
- every copy is pinned to the version and ETag the HEAD returned, so metadata and bytes of a
  replica always come from the same source write;
- a two-way rule also reads the destination and writes only when the source's side is the later
  change, conditionally on the destination version it compared against (crr.mutual).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from crr.breaker import DeleteBreaker, DeleteDecision
from crr.errors import (
    CrrError,
    DestinationChangedError,
    LedgerConflictError,
    ReconcileContentionError,
    ReplicaKeyMissingError,
    SourceChangedError,
    SourceGoneError,
    WrongRegionError,
)
from crr.events import ChangeEvent, ChangeKind
from crr.large_copy import LargeObjectSettings
from crr.markers import marker_for, sealed_origin, user_metadata
from crr.models import CopyRequest, KeyVersion, LargeCopyJob, LedgerEntry, ObjectState, ProgressDelta, TombstoneRecord
from crr.mutual import (
    BuriedDelete,
    SideView,
    in_step,
    marker_stamp,
    same_write,
    source_wins,
    stamp_of,
    undo_buried_delete,
    undo_buried_write,
)
from crr.observability import logger
from crr.part_planning import plan_parts
from crr.ports.objects import ObjectStore
from crr.ports.queues import PeerNudges
from crr.ports.services import LargeCopyLauncher
from crr.ports.table import KeyLedger, ProgressSink, RuleLookup, TombstoneRegistry
from crr.rules import ReplicationRule
from crr.sequencer import compare_sequencers
from crr.stamps import Stamp

MAX_SINGLE_COPY_BYTES = 5 * 1024**3
# The version id of a replica written in parts: the check for a buried write is skipped for it.
UNKNOWN_VERSION = "null"
# Each attempt is a full reconcile; contention on one key beyond this is left to the queue's retry.
MAX_RECONCILE_ATTEMPTS = 5


class Outcome(StrEnum):
    COPIED = "copied"
    DELETED = "deleted"
    DUPLICATE = "duplicate"  # this sequencer was already applied
    STALE = "stale"  # a newer change of the key was already applied
    NO_RULE = "no_rule"
    RULE_PAUSED = "rule_paused"
    OUTSIDE_PREFIXES = "outside_prefixes"
    DELETES_NOT_REPLICATED = "deletes_not_replicated"
    REPLICA_OF_DESTINATION = "replica_of_destination"  # written by the opposite rule: never sent back
    DELETE_HELD = "delete_held"  # the mass-delete breaker is open: the replica keeps the object
    DELETE_DISCARDED = "delete_discarded"  # part of a burst the operator discarded: the replica keeps it
    DESTINATION_CURRENT = "destination_current"  # two-way: the destination holds this change or a later one
    ATTRIBUTES_UPDATED = "attributes_updated"  # tags / ACL set on the replica in place (no bytes copied)
    ATTRIBUTES_CURRENT = "attributes_current"  # a tag / ACL change the replica already has
    COPY_STARTED = "copy_started"  # too large for this invocation: the large-copy workflow copies it
    READING_ABSENT = "reading_absent"  # a speculative reading of an EventBridge key names no source object


APPLIED = frozenset({Outcome.COPIED, Outcome.DELETED})

# One reconcile: what happened, the source state it read (None: absent), and the replica's own ETag as
# the copy answered it (None when nothing was copied here), which the ledger keeps for `crr verify`.
_Reconciled = tuple[Outcome, ObjectState | None, str | None]


@dataclass(frozen=True)
class ReplicationResult:
    outcome: Outcome
    rule_id: str | None = None
    bytes_copied: int = 0
    attempts: int = 0
    detail: str = ""
    overwrote: bool = False  # a copy over a key the ledger knows as replicated (the overwrite alarm's count)


@dataclass
class _BatchProgress:
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
        self._progress = progress
        self._clock = clock
        self._progress_interval = progress_interval
        self._monotonic = monotonic
        self._breaker = breaker
        self._tombstones = tombstones
        self._nudges = nudges
        self._large_objects = large_objects or LargeObjectSettings()
        self._large_copies = large_copies
        self._remaining_seconds: Callable[[], float] = lambda: math.inf
        self._pending = _BatchProgress()
        self._pending_lock = threading.Lock()  # the backfill applies changes from many threads at once
        self._last_flush = -math.inf

    @contextmanager
    def batch(self, remaining_seconds: Callable[[], float] | None = None) -> Iterator[Replicator]:
        """Group applies so progress costs one write per rule per flush interval, not one per object.

        ``remaining_seconds``: the time the invocation has left; a copy estimated not to fit in it is
        handed to the large-copy workflow (when there is one).

        Counts accumulate across batches of a warm process and are written at the end of the first
        batch after ``progress_interval`` seconds (0: every batch). At low rates batches hold one
        record, so flushing per batch would double the DynamoDB writes per object.
        """
        if remaining_seconds is not None:
            self._remaining_seconds = remaining_seconds
        try:
            yield self
        finally:
            if self._monotonic() - self._last_flush >= self._progress_interval:
                try:
                    self.flush_progress()
                except CrrError as exc:
                    # The batch's records are applied; failing it now would only apply them again.
                    logger.warning("progress not written; its counts are lost", extra={"error": str(exc)})

    def flush_progress(self) -> None:
        """Write the accumulated progress now (one UpdateItem per rule with something to count)."""
        with self._pending_lock:
            pending, self._pending = self._pending, _BatchProgress()
        if not pending.per_rule:
            return  # nothing written: the next change may flush at once
        self._last_flush = self._monotonic()
        now = self._clock()
        for rule_id, delta in pending.per_rule.items():
            if not delta.is_empty():
                self._progress.add(rule_id, delta, now)
            if self._breaker is not None:
                self._breaker.count_copies(rule_id, delta.objects_copied, pending.overwrites.get(rule_id, 0))

    def _count_progress(self, rule_id: str, result: ReplicationResult, event: ChangeEvent) -> None:
        with self._pending_lock:
            self._pending.count(rule_id, result, event)

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
        self._count_progress(rule.rule_id, result, event)
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
            in_place = self._sync_attributes(rule, event.key)
            if in_place is not None:
                return in_place, "tags / ACL of the replica compared"
        return None

    def _source_holds(self, rule: ReplicationRule, key: str) -> bool:
        return self._objects.head(rule.source_bucket, rule.source_region, key) is not None

    def _skipped(self, rule: ReplicationRule, event: ChangeEvent, outcome: Outcome, detail: str) -> ReplicationResult:
        result = ReplicationResult(outcome, rule_id=rule.rule_id, detail=detail)
        self._count_progress(rule.rule_id, result, event)
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

    def _sync_attributes(self, rule: ReplicationRule, key: str) -> Outcome | None:
        """Carry a tag or ACL change to the replica in place, when the replica holds the source's current
        version (the same write, by origin stamp and ETag); None when it does not, so the key is
        reconciled as usual (a copy brings tags and ACL along).

        The replica's tags (and ACL) are read first and written only if they differ: in a two-way pair
        crr's own tag write is a tag change on the other side, and that echo must end there.
        """
        source = self._objects.head(rule.source_bucket, rule.source_region, key)
        if source is None:
            return None
        replica = self._objects.head(rule.destination_bucket, rule.destination_region, key)
        if replica is None or not same_write(source, rule.source_bucket, replica, rule.destination_bucket):
            return None
        changed = False
        tags = self._objects.tags(rule.source_bucket, rule.source_region, key, source.version_id)
        if self._objects.tags(rule.destination_bucket, rule.destination_region, key, replica.version_id) != tags:
            self._objects.put_tags(rule.destination_bucket, rule.destination_region, key, replica.version_id, tags)
            changed = True
        grants = self._objects.acl_grants(
            bucket=rule.source_bucket,
            region=rule.source_region,
            destination_bucket=rule.destination_bucket,
            destination_region=rule.destination_region,
            key=key,
            version_id=source.version_id,
        )
        if grants is not None:
            held = self._objects.acl_grants(
                bucket=rule.destination_bucket,
                region=rule.destination_region,
                destination_bucket=rule.source_bucket,
                destination_region=rule.source_region,
                key=key,
                version_id=replica.version_id,
            )
            if held != grants:
                self._objects.put_acl(rule.destination_bucket, rule.destination_region, key, replica.version_id, grants)
                changed = True
        return Outcome.ATTRIBUTES_UPDATED if changed else Outcome.ATTRIBUTES_CURRENT

    def _reconcile_until_settled(
        self, rule: ReplicationRule, event: ChangeEvent, entry: LedgerEntry | None
    ) -> ReplicationResult:
        for attempt in range(1, MAX_RECONCILE_ATTEMPTS + 1):
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
            f"key {event.key!r} of rule {rule.rule_id} changed under us {MAX_RECONCILE_ATTEMPTS} times"
        )

    def _reconcile_once(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> _Reconciled:
        """One HEAD and one write: copy the current version, or delete the replica (``event_time``: when
        the change was made, which the delete breaker judges by)."""
        if rule.two_way:
            return self._reconcile_two_way(rule, key, event_time)
        for _ in range(MAX_RECONCILE_ATTEMPTS):
            state = self._objects.head(rule.source_bucket, rule.source_region, key)
            if state is None:
                return self._remove_replica(rule, key, event_time), None, None
            if sealed_origin(state) == rule.destination_bucket:
                return Outcome.REPLICA_OF_DESTINATION, state, None
            try:
                written = self._copy(rule, state)
            except SourceChangedError:
                continue  # overwritten between HEAD and copy: read the newer version
            except SourceGoneError:
                return self._remove_replica(rule, key, event_time), None, None
            if written is None:
                return Outcome.COPY_STARTED, state, None
            return Outcome.COPIED, state, written.etag or None
        raise ReconcileContentionError(f"source {rule.source_bucket}/{key} kept changing during copy")

    def _reconcile_two_way(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> _Reconciled:
        """Read both sides, and apply the source's only if it is the later change (crr.mutual)."""
        registry = self._registry(rule)
        for _ in range(MAX_RECONCILE_ATTEMPTS):
            try:
                return self._sync_once(rule, key, registry, event_time)
            except (SourceChangedError, SourceGoneError, DestinationChangedError):
                continue  # either side moved since we read it: compare again
        raise ReconcileContentionError(f"{rule.source_bucket}/{key} or its replica kept changing during sync")

    def _sync_once(
        self, rule: ReplicationRule, key: str, registry: TombstoneRegistry, event_time: datetime | None = None
    ) -> _Reconciled:
        source = self._side(rule.source_bucket, rule.source_region, key, lambda: registry.read_peer(rule, key))
        if source.origin == rule.destination_bucket:
            return Outcome.REPLICA_OF_DESTINATION, source.state, None
        destination = self._side(
            rule.destination_bucket, rule.destination_region, key, lambda: registry.read(rule.rule_id, key)
        )
        if not source_wins(source, destination, rule.source_bucket):
            if not in_step(source, destination) and self._nudges is not None:
                # The destination's change is the later one, but its own notification may have been
                # handled before this source change existed: only the peer may carry it back.
                self._nudges.nudge(rule, key)
            return Outcome.DESTINATION_CURRENT, source.state, None
        if source.state is None:
            return self._retract(rule, key, source, destination, event_time), None, None
        written = self._copy(rule, source.state, over=destination)
        if written is None:
            return Outcome.COPY_STARTED, source.state, None
        if destination.state is None:
            buried = undo_buried_delete(
                self._objects,
                rule.destination_bucket,
                rule.destination_region,
                key,
                written_etag=written.etag or "",
                seen_marker=destination.marker_version,
            )
            if buried is not None:
                self._carry_buried_delete(rule, key, buried)
                raise DestinationChangedError(f"a delete of {rule.destination_bucket}/{key} landed under our copy")
        elif written.version_id != UNKNOWN_VERSION:
            undo_buried_write(
                self._objects,
                rule.destination_bucket,
                rule.destination_region,
                key,
                written=written,
                compared=destination.state.version_id,
            )
        return Outcome.COPIED, source.state, written.etag or None

    def _registry(self, rule: ReplicationRule) -> TombstoneRegistry:
        if self._tombstones is None:
            raise TypeError(f"rule {rule.rule_id} is two-way, but this replicator was built without a registry")
        return self._tombstones

    def _side(
        self, bucket: str, region: str, key: str, registry_record: Callable[[], TombstoneRecord | None]
    ) -> SideView:
        state = self._objects.head(bucket, region, key)
        if state is not None:
            return SideView(state, stamp_of(state, bucket))
        # The marker, and the version under it: a pending delete of crr's can only have made a marker on
        # the version it deletes (crr.mutual.marker_stamp). One request either way.
        newest = self._objects.recent_versions(bucket, region, key, 2)
        if not newest:
            return SideView(None, None)
        if not newest[0].is_delete_marker:
            # Written since the HEAD found it absent: read both sides again.
            raise SourceChangedError(f"{bucket}/{key} changed while being read")
        marker, under = newest[0], (newest[1] if len(newest) > 1 else None)
        return SideView(None, marker_stamp(marker, bucket, registry_record(), under), marker.version_id)

    def _retract(
        self,
        rule: ReplicationRule,
        key: str,
        source: SideView,
        destination: SideView,
        event_time: datetime | None = None,
    ) -> Outcome:
        """Delete the destination's version, recording the marker so neither rule mistakes it for a user's."""
        if destination.state is None or destination.stamp is None:
            raise TypeError("only a present destination version is retracted")
        if not rule.replicate_deletes:
            return Outcome.DELETES_NOT_REPLICATED
        held = self._held(rule, key, event_time)
        if held is not None:
            return held
        # A purged source (no marker) withdraws its copy under that copy's own stamp.
        self._delete_recorded(rule, key, destination.state, source.stamp or destination.stamp)
        return Outcome.DELETED

    def _delete_recorded(self, rule: ReplicationRule, key: str, current: ObjectState, stamp: Stamp) -> None:
        """Delete the destination's ``current`` version while it is still current (else
        DestinationChangedError), recording the marker made as the delete stamped ``stamp``: an intent
        naming that version first, so a crash in between leaves the marker recognisable
        (crr.mutual.marker_stamp)."""
        registry = self._registry(rule)
        registry.intend(rule.rule_id, key, stamp, self._clock(), current.version_id)
        try:
            marker = self._objects.delete(rule.destination_bucket, rule.destination_region, key, if_etag=current.etag)
        except DestinationChangedError:
            registry.withdraw(rule.rule_id, key)
            raise
        registry.settle(rule.rule_id, key, marker, stamp)

    def _carry_buried_delete(self, rule: ReplicationRule, key: str, buried: BuriedDelete) -> None:
        """Make the destination absent again for the delete (``buried``) our copy landed on, unless the
        version now current is the later change.

        Our copy was removed again if it was still current, and then the delete is current already. If
        another worker had copied a later source write over our copy in the meantime, having compared it
        against our copy instead of the delete, the delete is carried over that version: a conditional
        delete whose marker is recorded with the buried delete's stamp, so both rules judge it as that
        delete (and a copy stacked meanwhile is compared again). Never held by the delete breaker, nor
        subject to ``replicate_deletes``: it restores the destination's own change, not the source's.
        Raises ReconcileContentionError when copies keep landing on the destination meanwhile.
        """
        stamp: Stamp | None = None
        for _ in range(MAX_RECONCILE_ATTEMPTS):
            current = self._objects.head(rule.destination_bucket, rule.destination_region, key)
            if current is None:
                return  # the delete is current again (or a later one)
            if stamp is None:
                record = self._registry(rule).read(rule.rule_id, key)
                stamp = marker_stamp(buried.marker, rule.destination_bucket, record, buried.under)
            if not stamp.later_than(stamp_of(current, rule.destination_bucket)):
                return  # the version on top is the later change (a user's own write, or a later source write)
            try:
                self._delete_recorded(rule, key, current, stamp)
            except DestinationChangedError:
                continue
            return
        raise ReconcileContentionError(
            f"the delete buried under our copy of {rule.destination_bucket}/{key} kept being covered"
        )

    def _copy(self, rule: ReplicationRule, state: ObjectState, over: SideView | None = None) -> KeyVersion | None:
        """CopyObject; or, for a source uploaded in parts or above the multipart threshold, a copy in parts
        (in the source's own part layout, so the replica's ETag is the source's). Either is made here when
        it fits the invocation's remaining time, else handed to the large-copy workflow (returns None then).

        ``over``: the destination side a two-way copy replaces; the write is conditional on it.
        Returns the replica's version (its id is "unknown" after a copy in parts, whose answer does not
        carry one here).
        """
        request = self._copy_request(rule, state)
        if over is not None:
            request = replace(
                request,
                destination_etag=over.state.etag if over.state else None,
                destination_absent=over.state is None,
            )
        settings = self._large_objects
        # A single CopyObject streams for as long as a multipart copy of the same size: it too must fit.
        fits = self._large_copies is None or state.size == 0 or settings.fits(state.size, self._remaining_seconds())
        if (
            fits
            and state.parts_count is None
            and state.size <= min(settings.multipart_threshold, MAX_SINGLE_COPY_BYTES)
        ):
            if over is not None:
                return self._objects.copy_version(request)
            # One-way copies never check what they replaced: the ETag is all they need.
            return KeyVersion(UNKNOWN_VERSION, self._clock(), False, self._objects.copy(request))
        layout = self._objects.part_sizes(rule.source_bucket, rule.source_region, state) if state.parts_count else None
        parts = plan_parts(state.size, layout, settings.preferred_part)
        if not fits and self._large_copies is not None:
            job = LargeCopyJob(
                rule_id=rule.rule_id,
                request=request,
                part_sizes=[part.size for part in parts],
                event_time=state.last_modified,
                seen_marker_version=over.marker_version if over is not None else None,
            )
            self._large_copies.start(job)
            return None
        etag = self._objects.multipart_copy(request, parts)
        return KeyVersion(UNKNOWN_VERSION, self._clock(), False, etag)

    def _remove_replica(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> Outcome:
        if not rule.replicate_deletes:
            return Outcome.DELETES_NOT_REPLICATED
        held = self._held(rule, key, event_time)
        if held is not None:
            return held
        self._objects.delete(rule.destination_bucket, rule.destination_region, key)
        return Outcome.DELETED

    def _held(self, rule: ReplicationRule, key: str, event_time: datetime | None) -> Outcome | None:
        """The outcome when the delete breaker keeps this delete from the replica; None when it may go."""
        if self._breaker is None:
            return None
        decision = self._breaker.decide(rule, key, event_time)
        if decision is DeleteDecision.HOLD:
            return Outcome.DELETE_HELD
        return Outcome.DELETE_DISCARDED if decision is DeleteDecision.DISCARD else None

    def _copy_request(self, rule: ReplicationRule, state: ObjectState) -> CopyRequest:
        if state.kms_encrypted and rule.replica_kms_key_arn is None:
            raise ReplicaKeyMissingError(
                f"{rule.source_bucket}/{state.key} is encrypted with {state.server_side_encryption}; rule "
                f"{rule.rule_id} names no "
                "replica_kms_key_arn, and copying it under the destination's default encryption would weaken it"
            )
        grants = self._objects.acl_grants(
            bucket=rule.source_bucket,
            region=rule.source_region,
            destination_bucket=rule.destination_bucket,
            destination_region=rule.destination_region,
            key=state.key,
            version_id=state.version_id,
        )
        marker = marker_for(state, rule.source_bucket, self._clock())
        return CopyRequest(
            source_bucket=rule.source_bucket,
            source_region=rule.source_region,
            destination_bucket=rule.destination_bucket,
            destination_region=rule.destination_region,
            state=state,
            metadata={**user_metadata(state), **marker},
            storage_class=rule.storage_class or state.storage_class,
            grants=grants,
            replica_kms_key_arn=rule.replica_kms_key_arn if state.kms_encrypted else None,
            replica_encryption=state.server_side_encryption if state.kms_encrypted else None,
        )


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
