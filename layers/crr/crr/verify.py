"""Verify a rule: stream-compare the source and destination listings, and optionally queue repairs.

The comparison is a merge of two listings that S3 returns sorted by key, page by page. At any time it
holds one page of each listing, its counters and at most ``samples`` keys per verdict, so its memory
does not grow with the buckets. Each of the rule's prefixes is listed and merged separately (a rule
without prefixes lists everything; a rule's prefixes never overlap, so no key is counted twice); keys
outside the prefixes are never listed, so never counted.

An object matches when its replica has the same key, size and ETag. Replicas are written by a
server-side CopyObject, so a single-part replica's ETag is the source's (the MD5 of the bytes). A
source uploaded in parts has a multipart ETag (``<md5 of part md5s>-<parts>``) that its CopyObject
replica does not share, so such objects are reported as stale although their sizes match, until a
multipart copy that keeps the part layout is built. Likewise the ETag of an SSE-KMS or SSE-C object
is not an MD5 of its bytes, so its replica's need not match. Nothing here reads object contents, metadata or
tags: that costs a request per object (``crr_cli.snapshot`` does it for small buckets).

Repair does not copy anything itself. It sends, for each differing key, a synthetic S3 notification
(no sequencer) to the replication queue, so the replicator reconciles the key's *current* state
exactly as it does for a real change, and its ledger stays right: missing and stale keys as
``ObjectCreated:Put``, extra keys as ``ObjectRemoved:Delete``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field

from crr.errors import CrrError, ListingOrderError, RepairIncompleteError, RepairRefusedError
from crr.events import change_notice
from crr.rules import ReplicationRule

# SendMessageBatch takes at most 10 messages per request.
REPAIR_BATCH_SIZE = 10
# Notifications crr sends itself name this configuration, so logs tell them from S3's.
REPAIR_CONFIGURATION_ID = "crr-verify-repair"


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One entry of a bucket listing. ``etag`` is unquoted."""

    key: str
    size: int
    etag: str


class Listing(Protocol):
    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        """The objects under ``prefix`` (``""``: every object), page by page, in S3's listing order:
        ascending by the UTF-8 bytes of the key. Pages are fetched as they are consumed.

        Raises StorageError subclasses when the bucket cannot be listed.
        """
        ...


class RepairQueue(Protocol):
    def send_batch(self, bodies: Sequence[str]) -> None:
        """Send up to ``REPAIR_BATCH_SIZE`` message bodies to the replication queue in one request.

        Raises a CrrError when any of them could not be sent.
        """
        ...


class Verdict(StrEnum):
    MATCHING = "matching"  # in both, same size and ETag
    MISSING = "missing"  # in the source only
    STALE = "stale"  # in both, size or ETag differ
    EXTRA = "extra"  # in the replica only, and the rule replicates deletes
    KEPT = "kept"  # in the replica only, and the rule does not replicate deletes: not a difference


REPAIRABLE = frozenset({Verdict.MISSING, Verdict.STALE, Verdict.EXTRA})


@dataclass(frozen=True, slots=True)
class Finding:
    verdict: Verdict
    key: str


class KeyCount(BaseModel):
    """How many keys got one verdict, and the first few of them in key order."""

    count: int = 0
    samples: list[str] = Field(default_factory=list)


class VerifyReport(BaseModel):
    """The outcome of one verify run (``crr verify --json`` prints it)."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str
    source_bucket: str
    source_region: str
    destination_bucket: str
    destination_region: str
    prefixes: list[str]
    replicate_deletes: bool
    matching: int = 0
    missing: KeyCount = Field(default_factory=KeyCount)
    stale: KeyCount = Field(default_factory=KeyCount)
    extra: KeyCount = Field(default_factory=KeyCount)
    kept: KeyCount = Field(default_factory=KeyCount)
    queued: int | None = Field(default=None, description="repair messages sent; None when not repairing")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def differing(self) -> int:
        return self.missing.count + self.stale.count + self.extra.count

    @computed_field  # type: ignore[prop-decorator]
    @property
    def equal(self) -> bool:
        return self.differing == 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def source_objects(self) -> int:
        return self.matching + self.missing.count + self.stale.count

    @computed_field  # type: ignore[prop-decorator]
    @property
    def destination_objects(self) -> int:
        return self.matching + self.stale.count + self.extra.count + self.kept.count

    def count(self, finding: Finding, samples: int) -> None:
        if finding.verdict is Verdict.MATCHING:
            self.matching += 1
            return
        tally: KeyCount = getattr(self, finding.verdict.value)
        tally.count += 1
        if len(tally.samples) < samples:
            tally.samples.append(finding.key)


def compare_listings(rule: ReplicationRule, source_listing: Listing, destination_listing: Listing) -> Iterator[Finding]:
    """One finding per key under the rule's prefixes, in key order, listing both buckets lazily.

    Raises ListingOrderError when a listing is not in S3's key order, and what the listings raise.
    """
    for prefix in rule.prefixes or ("",):
        source = _in_order(source_listing.pages(rule.source_bucket, rule.source_region, prefix), rule.source_bucket)
        destination = _in_order(
            destination_listing.pages(rule.destination_bucket, rule.destination_region, prefix),
            rule.destination_bucket,
        )
        yield from _merge(source, destination, Verdict.EXTRA if rule.replicate_deletes else Verdict.KEPT)


_Entry = tuple[bytes, ListedObject]


def _in_order(pages: Iterable[list[ListedObject]], bucket: str) -> Iterator[_Entry]:
    """Flatten pages into (UTF-8 key, object), refusing a listing that is not strictly ascending.

    S3 orders keys by their UTF-8 bytes. For valid Unicode that is also code-point order (Python's
    ``str`` order) but not UTF-16 order (Java's and JavaScript's string order: U+FF61 sorts after
    U+1F600 there). Comparing bytes states the contract, and the check makes a listing that breaks it
    fail loudly instead of being miscounted.
    """
    previous: _Entry | None = None
    for page in pages:
        for listed in page:
            entry = (listed.key.encode("utf-8", "surrogatepass"), listed)
            if previous is not None and entry[0] <= previous[0]:
                raise ListingOrderError(bucket, previous[1].key, listed.key)
            previous = entry
            yield entry


def _merge(source: Iterator[_Entry], destination: Iterator[_Entry], destination_only: Verdict) -> Iterator[Finding]:
    here, there = next(source, None), next(destination, None)
    while here is not None or there is not None:
        if here is not None and (there is None or here[0] < there[0]):
            yield Finding(Verdict.MISSING, here[1].key)
            here = next(source, None)
        elif there is not None and (here is None or there[0] < here[0]):
            yield Finding(destination_only, there[1].key)
            there = next(destination, None)
        elif here is not None and there is not None:  # the same key on both sides
            same = here[1].size == there[1].size and here[1].etag == there[1].etag
            yield Finding(Verdict.MATCHING if same else Verdict.STALE, here[1].key)
            here, there = next(source, None), next(destination, None)


def verify(
    rule: ReplicationRule,
    source_listing: Listing,
    destination_listing: Listing,
    samples: int = 10,
    *,
    repair: RepairQueue | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> VerifyReport:
    """Compare the rule's buckets by key, size and ETag; with ``repair``, queue every differing key
    for replication while the listings are merged (so memory stays independent of bucket size).

    Raises RepairRefusedError when asked to repair a paused rule (its records would be acknowledged
    without a copy), RepairIncompleteError when sending repairs failed part way (saying how many were
    queued), ListingOrderError, and the StorageError subclasses the listings raise.
    """
    if repair is not None and not rule.enabled:
        raise RepairRefusedError(
            f"rule {rule.rule_id!r} is paused, so the replicator would acknowledge repairs without copying; "
            f"resume it (`crr rules resume {rule.rule_id}`) and repair again"
        )
    report = VerifyReport(
        rule_id=rule.rule_id,
        source_bucket=rule.source_bucket,
        source_region=rule.source_region,
        destination_bucket=rule.destination_bucket,
        destination_region=rule.destination_region,
        prefixes=list(rule.prefixes),
        replicate_deletes=rule.replicate_deletes,
        queued=None if repair is None else 0,
    )
    findings = compare_listings(rule, source_listing, destination_listing)
    if repair is None:
        for finding in findings:
            report.count(finding, samples)
        return report
    batch: list[str] = []
    at = clock()
    try:
        for finding in findings:
            report.count(finding, samples)
            if finding.verdict in REPAIRABLE:
                batch.append(repair_message(rule, finding, at))
                if len(batch) == REPAIR_BATCH_SIZE:
                    _send(repair, batch, report)
        if batch:
            _send(repair, batch, report)
    except CrrError as exc:
        if not report.queued or isinstance(exc, RepairIncompleteError):
            raise
        raise RepairIncompleteError(report.queued, str(exc)) from exc
    return report


def _send(repair: RepairQueue, batch: list[str], report: VerifyReport) -> None:
    repair.send_batch(batch)
    report.queued = (report.queued or 0) + len(batch)
    batch.clear()


def repair_message(rule: ReplicationRule, finding: Finding, at: datetime) -> str:
    """The body of an S3 notification (as S3 sends it to SQS) telling the replicator that
    ``finding.key`` changed: created for a missing or stale key, removed for an extra one.

    It has no sequencer, so the ledger never fences it out, and the replicator reconciles the key's
    current state (copy it if the source has it, delete the replica if not). Raises ValueError for a
    finding that needs no repair.
    """
    if finding.verdict not in REPAIRABLE:
        raise ValueError(f"a {finding.verdict.value} key needs no repair")
    event_name = "ObjectRemoved:Delete" if finding.verdict is Verdict.EXTRA else "ObjectCreated:Put"
    return change_notice(
        rule.source_bucket,
        rule.source_region,
        finding.key,
        configuration_id=REPAIR_CONFIGURATION_ID,
        at=at,
        event_name=event_name,
    )


def repair_messages(rule: ReplicationRule, findings: Iterable[Finding], at: datetime) -> Iterator[str]:
    """The repair message of every finding that needs one (missing, stale, extra), lazily."""
    for finding in findings:
        if finding.verdict in REPAIRABLE:
            yield repair_message(rule, finding, at)
