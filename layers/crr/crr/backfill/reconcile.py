"""The backfill's fallback through the live path: a key the fast path may not copy (or whose ledger entry
the live path wrote meanwhile) is reconciled by ``Replicator.apply`` from the source's current state, and
the live path's outcome is counted as the backfill's ObjectOutcome."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from crr.backfill.models import ObjectOutcome
from crr.backfill.tally import ObjectResult
from crr.events import ChangeEvent, ChangeKind
from crr.replication import Outcome, ReplicationResult, Replicator
from crr.rules import ReplicationRule

# The event name of the changes the backfill hands the live path (it reconciles state, not events).
BACKFILL_EVENT_NAME = "crr:Backfill"

# Reconciles one key through the live path (HEAD, then copy or delete, conditional ledger write).
Reconcile = Callable[[ReplicationRule, str], ReplicationResult]


def reconciler(replicator: Replicator, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Reconcile:
    """The live path as the backfill's ``reconcile``: a change of ``key`` without sequencer, so the ledger
    never fences it out and the key's current state is applied."""

    def reconcile(rule: ReplicationRule, key: str) -> ReplicationResult:
        return replicator.apply(
            ChangeEvent(
                bucket=rule.source_bucket,
                key=key,
                kind=ChangeKind.CREATED,
                event_name=BACKFILL_EVENT_NAME,
                event_time=clock(),
                sequencer=None,
                region=rule.source_region,
            )
        )

    return reconcile


# How live-path outcomes count for the backfill. Anything else (the rule was paused or removed
# meanwhile) did not copy the object: it counts as failed, and its key is queued.
_AS_BACKFILL_OUTCOME = {
    Outcome.COPIED: ObjectOutcome.COPIED,
    Outcome.COPY_STARTED: ObjectOutcome.COPIED,  # too large for this step: the large-copy workflow copies it
    Outcome.DELETED: ObjectOutcome.SUPERSEDED,  # deleted at the source since it was listed
    Outcome.DELETES_NOT_REPLICATED: ObjectOutcome.SUPERSEDED,
    Outcome.DELETE_HELD: ObjectOutcome.SUPERSEDED,
    Outcome.DELETE_DISCARDED: ObjectOutcome.SUPERSEDED,
    Outcome.DESTINATION_CURRENT: ObjectOutcome.SKIPPED,
    Outcome.REPLICA_OF_DESTINATION: ObjectOutcome.SKIPPED,
    Outcome.DUPLICATE: ObjectOutcome.SKIPPED,
    Outcome.STALE: ObjectOutcome.SKIPPED,
}


def counted_as(result: ReplicationResult) -> ObjectResult:
    """The live path's result of reconciling one key, as the backfill counts it."""
    outcome = _AS_BACKFILL_OUTCOME.get(result.outcome, ObjectOutcome.FAILED)
    if outcome is ObjectOutcome.FAILED:
        return ObjectResult(ObjectOutcome.FAILED, reason=f"{result.outcome.value}: {result.detail or 'not copied'}")
    return ObjectResult(outcome, result.bytes_copied if outcome is ObjectOutcome.COPIED else 0)
