"""What applying one change came to: the outcome the live path, its metrics and the backfill share.

Kept apart from ``crr.replication`` so that the reconcilers it composes (one-way, two-way, attribute
sync, progress batching) can answer in these terms without importing their caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from crr.breaker import DeleteBreaker, DeleteDecision
from crr.models import ObjectState
from crr.rules import ReplicationRule


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


@dataclass(frozen=True)
class ReplicationResult:
    outcome: Outcome
    rule_id: str | None = None
    bytes_copied: int = 0
    attempts: int = 0
    detail: str = ""
    overwrote: bool = False  # a copy over a key the ledger knows as replicated (the overwrite alarm's count)


class Reconciled(NamedTuple):
    """One reconcile of a key: what happened, and what the ledger records of it."""

    outcome: Outcome
    state: ObjectState | None  # the source state it read (None: absent)
    replica_etag: str | None  # the replica's own ETag as the copy answered it (None: nothing copied here)


def held_by_breaker(
    breaker: DeleteBreaker | None, rule: ReplicationRule, key: str, event_time: datetime | None
) -> Outcome | None:
    """The outcome when the delete breaker keeps this delete from the replica; None when it may go."""
    if breaker is None:
        return None
    decision = breaker.decide(rule, key, event_time)
    if decision is DeleteDecision.HOLD:
        return Outcome.DELETE_HELD
    return Outcome.DELETE_DISCARDED if decision is DeleteDecision.DISCARD else None
