"""Verify a rule: stream-compare the source and destination listings, and optionally queue repairs.

The comparison is a merge of two listings that S3 returns sorted by key, page by page. At any time it
holds one page of each listing, its counters and at most ``samples`` keys per verdict, so its memory
does not grow with the buckets. Each of the rule's prefixes is listed and merged separately (a rule
without prefixes lists everything; a rule's prefixes never overlap, so no key is counted twice); keys
outside the prefixes are never listed, so never counted.

An object matches when its replica has the same key and size, holds the same bytes, and (where its
attributes are compared) the same user metadata, content headers and tags:
- Same bytes: the same ETag in both listings (free), or, where the ETags differ (SSE-KMS and SSE-C
  objects have ETags of their own, and so may a replica copied in another part layout):
  1. the rule's ledger says crr wrote the replica with exactly the destination's listed ETag, copying
     it from exactly the source's listed ETag (``LedgerEntry.replica_etag``, from the copy's answer;
     the backfill's fast path writes no marker, so this is how its SSE-KMS replicas are recognised).
     Read in bulk while the listings merge: one BatchGetItem per ``LEDGER_BATCH`` such keys, or per
     ``LEDGER_WINDOW`` keys listed where they are sparser (findings wait in that window, so they
     still come in key order). It goes first because it costs a hundredth of a HEAD per key;
  2. a replica whose crr marker holds for it and names the source's ETag as the one it was copied from
     (one HEAD of the replica per such key, two in a two-way pair; crr.markers);
  3. the same full-object checksum (CRC64NVME, S3's default, and friends) on both sides (two more
     HEADs with ChecksumMode).
- Attributes (``AttributeMode``): ``none`` compares nothing more; ``sample`` compares one matching key
  in ``sample_every`` (chosen at random per run, so repeated runs cover different keys); ``all``
  compares every one. Each compared key costs a HEAD and a GetObjectTagging on each side (4 requests).
  crr's own marker metadata is left out of the comparison.
A stale key's finding says what differs (``size``, ``etag``, ``metadata``, ``tags`` or a header
name), and the report counts keys per attribute.

Repair does not copy anything itself. It sends, for each differing key, a synthetic S3 notification
(no sequencer) to the replication queue, so the replicator reconciles the key's *current* state
exactly as it does for a real change, and its ledger stays right: missing and stale keys as
``ObjectCreated:Put``, a key whose tags alone differ as ``ObjectTagging:Put`` (the replicator sets the
replica's tags in place), extra keys as ``ObjectRemoved:Delete``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from crr.errors import CrrError, ListingOrderError, RepairIncompleteError, RepairRefusedError
from crr.events import change_notice
from crr.markers import origin_etag, user_metadata
from crr.models import LedgerEntry, ListedObject, ObjectState
from crr.ports.objects import Inspector, Listing
from crr.ports.queues import MAX_BODIES_PER_BATCH, ReplicationQueue
from crr.ports.table import KeyLedger
from crr.rules import ReplicationRule

# Notifications crr sends itself name this configuration, so logs tell them from S3's.
REPAIR_CONFIGURATION_ID = "crr-verify-repair"
# Keys whose ETags differ are looked up in the ledger this many at a time (BatchGetItem's limit), and
# findings wait for that lookup in a window of at most this many keys (a listing page's worth).
LEDGER_BATCH = 100
LEDGER_WINDOW = 1000


class AttributeMode(StrEnum):
    NONE = "none"
    SAMPLE = "sample"
    ALL = "all"


DEFAULT_SAMPLE_EVERY = 100


@dataclass(frozen=True)
class AttributeCheck:
    """How far verify looks beyond the listings (see the module docstring for what each costs)."""

    inspector: Inspector
    mode: AttributeMode = AttributeMode.SAMPLE
    sample_every: int = DEFAULT_SAMPLE_EVERY
    rng: random.Random = field(default_factory=random.Random)

    def selects(self) -> bool:
        if self.mode is AttributeMode.ALL:
            return True
        return self.mode is AttributeMode.SAMPLE and self.rng.randrange(max(self.sample_every, 1)) == 0


# Content headers crr writes on every replica, as ObjectState names them.
_HEADERS = ("content_type", "cache_control", "content_disposition", "content_encoding", "content_language", "expires")


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
    differs: tuple[str, ...] = ()  # for a stale key: what differs (size, etag, metadata, tags, a header)
    inspected: bool = False  # its attributes were compared


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
    attributes: AttributeMode = AttributeMode.NONE
    inspected: int = Field(default=0, description="keys present on both sides whose attributes were compared")
    differences: dict[str, KeyCount] = Field(
        default_factory=dict, description="stale keys per attribute that differs (a key may count under several)"
    )
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
        self.inspected += finding.inspected
        if finding.verdict is Verdict.MATCHING:
            self.matching += 1
            return
        tallies: list[KeyCount] = [getattr(self, finding.verdict.value)]
        tallies += [self.differences.setdefault(name, KeyCount()) for name in finding.differs]
        for tally in tallies:
            tally.count += 1
            if len(tally.samples) < samples:
                tally.samples.append(finding.key)


def compare_listings(
    rule: ReplicationRule,
    source_listing: Listing,
    destination_listing: Listing,
    check: AttributeCheck | None = None,
    ledger: KeyLedger | None = None,
) -> Iterator[Finding]:
    """One finding per key under the rule's prefixes, in key order, listing both buckets lazily; with
    ``ledger``, keys whose ETags differ match when the ledger says crr wrote that replica from that
    source write; with ``check``, keys on both sides are also compared beyond the listing (see the
    module docstring).

    Raises ListingOrderError when a listing is not in S3's key order, and what the listings, the ledger
    and the inspector raise.
    """
    for prefix in rule.prefixes or ("",):
        source = _in_order(source_listing.pages(rule.source_bucket, rule.source_region, prefix), rule.source_bucket)
        destination = _in_order(
            destination_listing.pages(rule.destination_bucket, rule.destination_region, prefix),
            rule.destination_bucket,
        )
        merged = _merge(source, destination, Verdict.EXTRA if rule.replicate_deletes else Verdict.KEPT)
        if ledger is not None:
            merged = _settle_by_ledger(rule, merged, ledger)
        for finding, listed in merged:
            yield finding if listed is None or check is None else _inspect(rule, finding, listed, check)


def _settle_by_ledger(rule: ReplicationRule, merged: Iterator[_Merged], ledger: KeyLedger) -> Iterator[_Merged]:
    """``merged``, except that a key whose ETags alone differ matches (its attributes may still be
    compared) when the rule's ledger recorded crr's copy of it between exactly these two ETags."""
    window: list[_Merged] = []
    wanted: list[str] = []
    for merged_key in merged:
        window.append(merged_key)
        if merged_key[0].differs == ("etag",):
            wanted.append(merged_key[0].key)
        if len(wanted) == LEDGER_BATCH or len(window) == LEDGER_WINDOW:
            yield from _settled(window, ledger.read_many(rule.rule_id, wanted) if wanted else {})
            window, wanted = [], []
    yield from _settled(window, ledger.read_many(rule.rule_id, wanted) if wanted else {})


def _settled(window: list[_Merged], recorded: dict[str, LedgerEntry]) -> Iterator[_Merged]:
    for finding, listed in window:
        if listed is not None and finding.differs == ("etag",) and _copied_by_crr(listed, recorded.get(finding.key)):
            yield Finding(Verdict.MATCHING, finding.key), listed
        else:
            yield finding, listed


def _copied_by_crr(listed: tuple[ListedObject, ListedObject], recorded: LedgerEntry | None) -> bool:
    """Whether the ledger's last record of the key is crr's copy of exactly the source's listed write
    (its ETag) that gave the replica exactly the destination's listed ETag. A user's later write of the
    replica has an ETag of its own (an SSE-KMS one is new at every write; an MD5 one is of its bytes)."""
    source, replica = listed
    return (
        recorded is not None
        and not recorded.deleted
        and recorded.etag is not None
        and recorded.replica_etag is not None
        and recorded.etag.strip('"') == source.etag
        and recorded.replica_etag.strip('"') == replica.etag
    )


def _inspect(
    rule: ReplicationRule, finding: Finding, listed: tuple[ListedObject, ListedObject], check: AttributeCheck
) -> Finding:
    """A key on both sides, looked at beyond the listing: sameness of bytes where the ETags differ, and
    the attributes crr carries where ``check`` selects the key."""
    if "size" in finding.differs:
        return finding
    source: ObjectState | None = None
    replica: ObjectState | None = None
    if "etag" in finding.differs:
        # Either side may be the sealed copy of the other (in a two-way pair the source may hold the replica).
        replica = check.inspector.head(rule.destination_bucket, rule.destination_region, finding.key)
        if replica is None or origin_etag(replica) != listed[0].etag:
            source = check.inspector.head(rule.source_bucket, rule.source_region, finding.key)
            if (source is None or origin_etag(source) != listed[1].etag) and not _same_checksum(
                rule, finding.key, check.inspector
            ):
                return finding
    if not check.selects():
        return Finding(Verdict.MATCHING, finding.key)
    source = source or check.inspector.head(rule.source_bucket, rule.source_region, finding.key)
    replica = replica or check.inspector.head(rule.destination_bucket, rule.destination_region, finding.key)
    if source is None or replica is None:
        return Finding(Verdict.MATCHING, finding.key)  # changed since listed: the live path has it
    differs = [name.replace("_", "-") for name in _HEADERS if getattr(source, name) != getattr(replica, name)]
    if user_metadata(source) != user_metadata(replica):
        differs.insert(0, "metadata")
    source_tags = check.inspector.tags(rule.source_bucket, rule.source_region, finding.key, source.version_id)
    replica_tags = check.inspector.tags(
        rule.destination_bucket, rule.destination_region, finding.key, replica.version_id
    )
    if source_tags != replica_tags:
        differs.append("tags")
    verdict = Verdict.STALE if differs else Verdict.MATCHING
    return Finding(verdict, finding.key, tuple(differs), inspected=True)


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


def _same_checksum(rule: ReplicationRule, key: str, inspector: Inspector) -> bool:
    """Both sides keep a full-object checksum of one algorithm, and it is the same (2 HEADs)."""
    mine = inspector.checksum(rule.source_bucket, rule.source_region, key)
    theirs = inspector.checksum(rule.destination_bucket, rule.destination_region, key) if mine else None
    return mine is not None and mine == theirs


_Merged = tuple[Finding, tuple[ListedObject, ListedObject] | None]


def _merge(source: Iterator[_Entry], destination: Iterator[_Entry], destination_only: Verdict) -> Iterator[_Merged]:
    here, there = next(source, None), next(destination, None)
    while here is not None or there is not None:
        if here is not None and (there is None or here[0] < there[0]):
            yield Finding(Verdict.MISSING, here[1].key), None
            here = next(source, None)
        elif there is not None and (here is None or there[0] < here[0]):
            yield Finding(destination_only, there[1].key), None
            there = next(destination, None)
        elif here is not None and there is not None:  # the same key on both sides
            differs = ("size",) if here[1].size != there[1].size else ("etag",) if here[1].etag != there[1].etag else ()
            yield Finding(Verdict.STALE if differs else Verdict.MATCHING, here[1].key, differs), (here[1], there[1])
            here, there = next(source, None), next(destination, None)


def verify(
    rule: ReplicationRule,
    source_listing: Listing,
    destination_listing: Listing,
    samples: int = 10,
    *,
    repair: ReplicationQueue | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    check: AttributeCheck | None = None,
    ledger: KeyLedger | None = None,
) -> VerifyReport:
    """Compare the rule's buckets by key, size and ETag, and with ``ledger`` and ``check`` by what crr
    recorded and what it carries (see the module docstring); with ``repair``, queue every differing key
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
        attributes=check.mode if check is not None else AttributeMode.NONE,
        queued=None if repair is None else 0,
    )
    findings = compare_listings(rule, source_listing, destination_listing, check, ledger)
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
                if len(batch) == MAX_BODIES_PER_BATCH:
                    _send(repair, batch, report)
        if batch:
            _send(repair, batch, report)
    except CrrError as exc:
        if not report.queued or isinstance(exc, RepairIncompleteError):
            raise
        raise RepairIncompleteError(report.queued, str(exc)) from exc
    return report


def _send(repair: ReplicationQueue, batch: list[str], report: VerifyReport) -> None:
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
    if finding.differs == ("tags",):
        # Same write on both sides (in a two-way pair a copy would change nothing): set the tags.
        event_name = "ObjectTagging:Put"
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
