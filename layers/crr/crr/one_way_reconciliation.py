"""One-way reconciliation: make the replica of a key match the source's current state.

The source is read (one HEAD) and its current version copied, pinned to that version and ETag, so a
replica's metadata and bytes always come from the same source write; a source without the key has its
replica deleted (when the rule replicates deletes and the delete breaker lets it through). The replica
is never read: a one-way destination only ever holds what the source held.
"""

from __future__ import annotations

from datetime import datetime

from crr.breaker import DeleteBreaker
from crr.copy_planning import CopyPlanner
from crr.errors import ReconcileContentionError, SourceChangedError, SourceGoneError
from crr.markers import sealed_origin
from crr.outcomes import Outcome, Reconciled, held_by_breaker
from crr.ports.objects import ObjectStore
from crr.rules import ReplicationRule

# Copies of one key whose pinned source version was overwritten (or deleted) before the copy read it:
# each such attempt re-reads the source. More means a writer faster than the copy; the queue retries.
SOURCE_CHANGE_ATTEMPTS = 3


class OneWayReconciler:
    def __init__(self, objects: ObjectStore, copies: CopyPlanner, breaker: DeleteBreaker | None) -> None:
        self._objects = objects
        self._copies = copies
        self._breaker = breaker

    def reconcile(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> Reconciled:
        """One HEAD, then one write (the copy, or the delete of the replica), repeated while the source
        changes between the two (``event_time``: when the change was made, which the delete breaker
        judges by). Raises ReconcileContentionError after SOURCE_CHANGE_ATTEMPTS such changes."""
        for _ in range(SOURCE_CHANGE_ATTEMPTS):
            state = self._objects.head(rule.source_bucket, rule.source_region, key)
            if state is None:
                return Reconciled(self.remove_replica(rule, key, event_time), None, None)
            if sealed_origin(state) == rule.destination_bucket:
                return Reconciled(Outcome.REPLICA_OF_DESTINATION, state, None)
            try:
                written = self._copies.copy(rule, state)
            except SourceChangedError:
                continue  # overwritten between HEAD and copy: read the newer version
            except SourceGoneError:
                return Reconciled(self.remove_replica(rule, key, event_time), None, None)
            if written is None:
                return Reconciled(Outcome.COPY_STARTED, state, None)
            return Reconciled(Outcome.COPIED, state, written.etag or None)
        raise ReconcileContentionError(f"source {rule.source_bucket}/{key} kept changing during copy")

    def remove_replica(self, rule: ReplicationRule, key: str, event_time: datetime | None = None) -> Outcome:
        if not rule.replicate_deletes:
            return Outcome.DELETES_NOT_REPLICATED
        held = held_by_breaker(self._breaker, rule, key, event_time)
        if held is not None:
            return held
        self._objects.delete(rule.destination_bucket, rule.destination_region, key)
        return Outcome.DELETED
