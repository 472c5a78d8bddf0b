"""Two-way reconciliation: apply the source's side of a key to the destination only when it is the later
change, conditionally on the destination version it was compared against.

Both sides are read and stamped (crr.two_way_conflicts: who wins, and undoing a copy that buried a
user's change); the later stamp wins. A delete the source wins is made conditionally on the destination
version it removes and recorded in the rule's TombstoneRegistry, so neither rule mistakes crr's marker
for a user's delete. A destination whose change is later is left alone, and the peer rule is nudged
when only it can carry that change back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from crr.breaker import DeleteBreaker
from crr.copy_planning import UNKNOWN_VERSION, CopyPlanner
from crr.errors import DestinationChangedError, ReconcileContentionError, SourceChangedError, SourceGoneError
from crr.models import ObjectState, TombstoneRecord
from crr.outcomes import Outcome, Reconciled, held_by_breaker
from crr.ports.objects import ObjectStore
from crr.ports.queues import PeerNudges
from crr.ports.table import TombstoneRegistry
from crr.rules import ReplicationRule
from crr.stamps import Stamp
from crr.two_way_conflicts import (
    BuriedDelete,
    SideView,
    in_step,
    marker_stamp,
    source_wins,
    stamp_of,
    undo_buried_delete,
    undo_buried_write,
)

# Comparisons of both sides of one key whose conditional write found either side changed since it was
# read (a user's write or delete, or the peer rule's copy): each attempt reads both sides again.
SIDE_CHANGE_ATTEMPTS = 3
# Conditional deletes carrying a delete buried under crr's copy over the version now current, while
# other copies keep landing on top of it.
BURIED_DELETE_ATTEMPTS = 3


class TwoWayReconciler:
    def __init__(
        self,
        objects: ObjectStore,
        copies: CopyPlanner,
        *,
        clock: Callable[[], datetime],
        breaker: DeleteBreaker | None,
        tombstones: TombstoneRegistry | None,
        nudges: PeerNudges | None,
    ) -> None:
        self._objects = objects
        self._copies = copies
        self._clock = clock
        self._breaker = breaker
        self._tombstones = tombstones
        self._nudges = nudges

    def reconcile(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> Reconciled:
        """Read both sides, and apply the source's only if it is the later change (``event_time``: when
        the change was made, which the delete breaker judges by). Raises ReconcileContentionError after
        SIDE_CHANGE_ATTEMPTS comparisons that either side's change made void."""
        registry = self._registry(rule)
        for _ in range(SIDE_CHANGE_ATTEMPTS):
            try:
                return self._sync_once(rule, key, registry, event_time)
            except (SourceChangedError, SourceGoneError, DestinationChangedError):
                continue  # either side moved since we read it: compare again
        raise ReconcileContentionError(f"{rule.source_bucket}/{key} or its replica kept changing during sync")

    def _sync_once(
        self, rule: ReplicationRule, key: str, registry: TombstoneRegistry, event_time: datetime | None = None
    ) -> Reconciled:
        source = self._side(rule.source_bucket, rule.source_region, key, lambda: registry.read_peer(rule, key))
        if source.origin == rule.destination_bucket:
            return Reconciled(Outcome.REPLICA_OF_DESTINATION, source.state, None)
        destination = self._side(
            rule.destination_bucket, rule.destination_region, key, lambda: registry.read(rule.rule_id, key)
        )
        if not source_wins(source, destination, rule.source_bucket):
            if not in_step(source, destination) and self._nudges is not None:
                # The destination's change is the later one, but its own notification may have been
                # handled before this source change existed: only the peer may carry it back.
                self._nudges.nudge(rule, key)
            return Reconciled(Outcome.DESTINATION_CURRENT, source.state, None)
        if source.state is None:
            return Reconciled(self._retract(rule, key, source, destination, event_time), None, None)
        written = self._copies.copy(rule, source.state, over=destination)
        if written is None:
            return Reconciled(Outcome.COPY_STARTED, source.state, None)
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
        return Reconciled(Outcome.COPIED, source.state, written.etag or None)

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
        # the version it deletes (crr.two_way_conflicts.marker_stamp). One request either way.
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
        held = held_by_breaker(self._breaker, rule, key, event_time)
        if held is not None:
            return held
        # A purged source (no marker) withdraws its copy under that copy's own stamp.
        self._delete_recorded(rule, key, destination.state, source.stamp or destination.stamp)
        return Outcome.DELETED

    def _delete_recorded(self, rule: ReplicationRule, key: str, current: ObjectState, stamp: Stamp) -> None:
        """Delete the destination's ``current`` version while it is still current (else
        DestinationChangedError), recording the marker made as the delete stamped ``stamp``: an intent
        naming that version first, so a crash in between leaves the marker recognisable
        (crr.two_way_conflicts.marker_stamp)."""
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
        Raises ReconcileContentionError after BURIED_DELETE_ATTEMPTS deletes that copies landing on the
        destination meanwhile made void.
        """
        stamp: Stamp | None = None
        for _ in range(BURIED_DELETE_ATTEMPTS):
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
