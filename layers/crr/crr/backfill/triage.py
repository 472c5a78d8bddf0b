"""What a listed page needs, object by object: skip it (already replicated), copy it on the fast path (one
CopyObject), or reconcile it through the live path. Decided from the listings and the ledger alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from crr.backfill.pages import FetchedPage
from crr.copy_planning import MAX_SINGLE_COPY_BYTES
from crr.models import LedgerEntry, ListedObject
from crr.ports.table import KeyLedger
from crr.rules import ReplicationRule


class CopyPath(StrEnum):
    FAST = "fast"  # one CopyObject pinned to the listed ETag, then the ledger's "no entry yet"
    RECONCILE = "reconcile"  # the live path: HEAD, copy with the marker, conditional ledger write


@dataclass(frozen=True)
class PlannedCopy:
    entry: ListedObject
    path: CopyPath


@dataclass(frozen=True)
class PagePlan:
    """The page's objects split: ``skipped`` need nothing; ``copies`` are to be copied, in this order."""

    skipped: list[ListedObject]
    copies: list[PlannedCopy]


def plan_page(rule: ReplicationRule, page: FetchedPage, ledger: KeyLedger, *, sse_kms_sources: bool) -> PagePlan:
    """Which of the page's objects to skip, and how to copy the others.

    Skipped: a one-way rule's object whose replica lists the same size and ETag (same bytes; a copy
    would change nothing the listing shows), and any object on both sides that the ledger says crr
    applied at exactly this listed write (one BatchGetItem per 100 such keys). The ledger is what
    recognises an SSE-KMS replica, whose ETag is its own; and a two-way rule needs it for every key,
    because equal bytes with other metadata are a change there (the live path compares stamps).

    Reconciled rather than fast-copied: every object of a rule the fast path cannot serve (see
    ``reconciles_everything``), and objects uploaded in parts or too large for one CopyObject.
    """
    skipped: list[ListedObject] = []
    todo: list[ListedObject] = []
    on_both_sides: list[ListedObject] = []
    for entry in page.entries:
        if not rule.two_way and page.destination.get(entry.key) == (entry.size, entry.etag):
            skipped.append(entry)
        elif entry.key in page.destination:
            on_both_sides.append(entry)
        else:
            todo.append(entry)
    recorded = ledger.read_many(rule.rule_id, [entry.key for entry in on_both_sides]) if on_both_sides else {}
    for entry in on_both_sides:
        if _replicated(entry, recorded.get(entry.key)):
            skipped.append(entry)
        else:
            todo.append(entry)
    everything = reconciles_everything(rule, sse_kms_sources=sse_kms_sources)
    return PagePlan(
        skipped=skipped,
        copies=[
            PlannedCopy(entry, CopyPath.RECONCILE if everything or _needs_full_path(entry) else CopyPath.FAST)
            for entry in todo
        ],
    )


def reconciles_everything(rule: ReplicationRule, *, sse_kms_sources: bool) -> bool:
    """Whether no object of the rule may take the fast path, which neither sees encryption nor writes the
    replica marker: a two-way rule (its loop guard and last-writer-wins need the marker), a rule with a
    replica key (its objects are re-encrypted), and any rule when the stack may decrypt SSE-KMS sources
    (a rule without a replica key must refuse those, as the live path does)."""
    return rule.two_way or rule.replica_kms_key_arn is not None or sse_kms_sources


def _replicated(entry: ListedObject, recorded: LedgerEntry | None) -> bool:
    """Whether the ledger says crr applied exactly this listed source write (same ETag, same
    Last-Modified to the second), whatever the replica's own ETag (an SSE-KMS replica's differs)."""
    return (
        recorded is not None
        and not recorded.deleted
        and recorded.etag is not None
        and recorded.etag.strip('"') == entry.etag
        and recorded.source_modified is not None
        and entry.last_modified is not None
        and _seconds(recorded.source_modified) == _seconds(entry.last_modified)
    )


def _seconds(moment: datetime) -> datetime:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)


def _needs_full_path(entry: ListedObject) -> bool:
    """Uploaded in parts (ETag "<md5>-<parts>": the replica must keep the layout to keep the ETag), or too
    large for one CopyObject."""
    return "-" in entry.etag or entry.size > MAX_SINGLE_COPY_BYTES
