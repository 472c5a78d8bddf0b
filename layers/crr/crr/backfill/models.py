"""The backfill's values: the jobs kept in the rules table, the page requests and results that cross the
Lambda / Step Functions boundary, and the listing entries the backfill's ports exchange (crr.ports).

The engine that produces them is crr.backfill.engine; they live apart so the ports can name them
without importing the engine.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from crr.backfill.ranges import KeyRange
from crr.models import MAX_PAGE_SIZE
from crr.rules import ReplicationRule

DEFAULT_PAGE_SIZE = MAX_PAGE_SIZE


DEFAULT_COUNT_PAGES = 4


MAX_COUNT_PAGES = 100


# Until the job is done, objects written after they were counted may make the processed count exceed the
# total: the percentage stops just short of 100 until the last page is recorded.
PERCENT_CAP = 99.9


# Failed keys named in a page result (all of them are queued; these are for the operator to look at).
MAX_FAILURE_SAMPLES = 10


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectOutcome(StrEnum):
    """What a page did with one listed object: the engine's answer per object, and the name of the
    counter that counts it, in a page's PageCounts and in the job's totals (one field per value)."""

    COPIED = "copied"  # copied by this page (or handed to the large-copy workflow, which copies it)
    SKIPPED = "skipped"  # already identical at the destination, or current there by the ledger
    SUPERSEDED = "superseded"  # changed or deleted since listed: its own notification brings the live path
    FAILED = "failed"  # not copied: its key is handed to the replication queue


class PageCounts(_Model):
    """What one page did to its objects: one counter per ObjectOutcome, named by its value, and
    ``listed`` = copied + skipped + superseded + failed."""

    listed: int = Field(default=0, ge=0)
    copied: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)
    superseded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    bytes_listed: int = Field(default=0, ge=0)
    bytes_copied: int = Field(default=0, ge=0)

    def plus(self, other: PageCounts) -> PageCounts:
        return PageCounts(**{name: getattr(self, name) + getattr(other, name) for name in PageCounts.model_fields})

    def of(self, outcome: ObjectOutcome) -> int:
        """How many of the objects had ``outcome``."""
        return int(getattr(self, outcome.value))


class FailedKey(_Model):
    key: str
    reason: str


# How many ranges of a job are worked at once (its workers, the Map's items): AWS runs at most 40
# iterations of an inline Map state at once, so more workers would only wait.
MAX_WORKERS = 40


DEFAULT_WORKERS = 8


# Keys a page result names as known to lie ahead (split boundaries): enough for any split
# (``crr.backfill.fanout``), and at 1 KiB a key at most a small part of a state's 256 KiB.
MAX_AHEAD_KEYS = 32


class WorkKind(StrEnum):
    """What a work item of a job is: a key range listed with ListObjectsV2, or the rows of one data file of
    an S3 Inventory report (crr.backfill.inventory_pages), where it stands by ``row``, not by key."""

    KEYS = "keys"  # the keys of a prefix between two bounds, listed with ListObjectsV2
    INVENTORY = "inventory"  # the rows of one data file of the job's S3 Inventory report, never split


class JobRef(_Model):
    """Names a job in the step payloads: which rule, which job, and the plan it was started for."""

    rule_id: str = Field(min_length=1)
    job_id: str = Field(min_length=1)
    plan: str = Field(min_length=1, description="plan_digest of the rule the job was started for")


class PageRequest(_Model):
    """One page step's input: which range of which job, its bounds, where its copy and count stand."""

    job_id: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    plan: str = Field(min_length=1, description="plan_digest of the rule the job was started for")
    range_id: str = Field(min_length=1)
    sequence: int = Field(ge=1, description="this page's number in its range, from 1")
    kind: WorkKind = WorkKind.KEYS
    prefix: str = ""
    after: str | None = Field(default=None, description="the range's lower bound (exclusive); None: the prefix's start")
    until: str | None = Field(default=None, description="the range's upper bound (inclusive); None: the prefix's end")
    cursor: str | None = Field(default=None, description="the last key consumed; None: none yet (list from after)")
    count_cursor: str | None = Field(default=None, description="the last key the count listed; None: from after")
    count_complete: bool = False
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    count_pages: int = Field(default=DEFAULT_COUNT_PAGES, ge=0, le=MAX_COUNT_PAGES)
    probe: bool = Field(default=False, description="the job wants more ranges: probe ahead for a boundary")
    inventory: str | None = Field(default=None, description="kind inventory: s3://BUCKET/KEY of the manifest")
    file: str | None = Field(default=None, description="kind inventory: the key of the data file")
    row: int = Field(default=0, ge=0, description="kind inventory: rows of the data file consumed")

    def key_range(self) -> KeyRange:
        """The range's bounds (not where it stands)."""
        return KeyRange(self.prefix, self.after, self.until)


class PageResult(_Model):
    """One page step's output: the page's counts and what it counted (deltas, added to the job and its
    range), where the range's copy and count stand after it (absolute), and keys known to lie ahead in
    the range (where it may be split). A few KiB of JSON at most."""

    job_id: str
    rule_id: str
    plan: str
    range_id: str
    sequence: int = Field(ge=1)
    kind: WorkKind = WorkKind.KEYS
    prefix: str = ""
    after: str | None = None
    until: str | None = None
    counts: PageCounts
    cursor: str | None
    done: bool = Field(description="the range has no key left")
    count_cursor: str | None
    count_complete: bool
    count_completed: bool = Field(default=False, description="this step's count reached the range's end")
    counted: int = Field(default=0, ge=0, description="objects this step's count listed")
    counted_bytes: int = Field(default=0, ge=0)
    ahead: list[str] = Field(default_factory=list, max_length=MAX_AHEAD_KEYS)
    file: str | None = Field(default=None, description="kind inventory: the key of the data file")
    row: int = Field(default=0, ge=0, description="kind inventory: rows of the data file consumed after it")
    failures: list[FailedKey] = Field(default_factory=list, max_length=MAX_FAILURE_SAMPLES)
    elapsed_seconds: float = Field(ge=0)

    def key_range(self) -> KeyRange:
        return KeyRange(self.prefix, self.after, self.until)


class BackfillStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BackfillRange(_Model):
    """A job's work item as stored in the rules table (``RULE#<rule>`` / ``BACKFILL#<job>#RANGE#<range>``):
    a key range (crr.backfill.ranges.KeyRange), where its copy and its count stand, who holds it and
    what its pages did.

    ``claim`` is the worker token holding it (``<execution arn>#<worker index>``); a claim made by another
    execution than the one now running the job is stale (one execution at a time runs a job), so any
    worker may take the range over. ``pages`` guards the sequence: a page is recorded once."""

    rule_id: str = Field(min_length=1)
    job_id: str = Field(min_length=1)
    range_id: str = Field(min_length=1)
    kind: WorkKind = WorkKind.KEYS
    prefix: str = ""
    after: str | None = None
    until: str | None = None
    cursor: str | None = None
    count_cursor: str | None = None
    count_complete: bool = False
    pages: int = Field(default=0, ge=0)
    done: bool = False
    claim: str | None = None
    totals: PageCounts = Field(default_factory=PageCounts)
    counted: int = Field(default=0, ge=0)
    counted_bytes: int = Field(default=0, ge=0)
    active_seconds: float = Field(default=0.0, ge=0)
    file: str | None = Field(default=None, description="kind inventory: the key of the data file")
    row: int = Field(default=0, ge=0, description="kind inventory: rows of the data file consumed")

    def key_range(self) -> KeyRange:
        return KeyRange(self.prefix, self.after, self.until)

    def request(
        self, job: JobRef, *, page_size: int, count_pages: int, probe: bool, inventory: str | None = None
    ) -> PageRequest:
        """The request of this range's next page (``inventory``: the job's report, for its data files)."""
        return PageRequest(
            job_id=job.job_id,
            rule_id=job.rule_id,
            plan=job.plan,
            range_id=self.range_id,
            sequence=self.pages + 1,
            kind=self.kind,
            prefix=self.prefix,
            after=self.after,
            until=self.until,
            cursor=self.cursor,
            count_cursor=self.count_cursor,
            count_complete=self.count_complete,
            page_size=page_size,
            count_pages=count_pages,
            probe=probe,
            inventory=inventory if self.kind is WorkKind.INVENTORY else None,
            file=self.file,
            row=self.row,
        )


class RangePage(_Model):
    """A page of a range as the job store records it, in ONE transaction: the range's new state (its
    ``until`` moves down when it is split), the page's deltas (added to the range and to the job), the
    job's counters of open and uncounted ranges moved by ``opened`` and ``uncounted``, and the ranges
    split off it. Recorded only while ``worker`` holds the range and its last recorded page is
    ``sequence - 1`` (made by crr.backfill.fanout.page_record)."""

    rule_id: str
    job_id: str
    range_id: str
    sequence: int = Field(ge=1)
    worker: str = Field(min_length=1)
    until: str | None
    cursor: str | None
    count_cursor: str | None
    count_complete: bool
    done: bool
    counts: PageCounts
    counted: int = Field(ge=0)
    counted_bytes: int = Field(ge=0)
    elapsed_seconds: float = Field(ge=0)
    opened: int = Field(description="change of the job's ranges_open")
    uncounted: int = Field(description="change of the job's ranges_uncounted")
    new_ranges: list[BackfillRange] = Field(default_factory=list)
    row: int = Field(default=0, ge=0, description="kind inventory: rows of the data file consumed")

    def final_range(self) -> BackfillRange:
        """The range as this, its final page, left it: done, held by the page's worker. The store deletes
        a range with its final page (its counts are the job's by then), so this is what a record, or a
        retried one, answers; its kind and lower bound are not in the page, and its totals are this
        page's only."""
        return BackfillRange(
            rule_id=self.rule_id,
            job_id=self.job_id,
            range_id=self.range_id,
            until=self.until,
            cursor=self.cursor,
            count_cursor=self.count_cursor,
            count_complete=self.count_complete,
            pages=self.sequence,
            done=True,
            claim=self.worker,
            totals=self.counts,
            counted=self.counted,
            counted_bytes=self.counted_bytes,
            active_seconds=self.elapsed_seconds,
            row=self.row,
        )


class BackfillProgress(_Model):
    """What `crr status` and a progress bar show, from the job item alone."""

    processed: int
    total: int | None = Field(description="objects counted; None until every range's count is complete")
    counted_so_far: int
    percent: float | None
    objects_per_second: float | None
    eta_seconds: float | None
    bytes_copied: int
    ranges_open: int
    workers: int
    done: bool


class BackfillJob(_Model):
    """A backfill job as stored in the rules table (``RULE#<rule>`` / ``BACKFILL#<job id>``): its settings,
    status, and the aggregate of its ranges, which every recorded page ADDs to (so reading this one item
    tells the whole job's progress). Its ranges are items of their own (``BackfillRange``).

    ``ranges_open`` counts the ranges not done and ``ranges_uncounted`` those whose count has not reached
    their end; both move in the same transaction as the page or split that changes them. ``legacy``: the
    job was stored by a single-cursor release; it is shown but never resumed (a new job replaces it)."""

    job_id: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    plan: str = Field(min_length=1)
    status: BackfillStatus = BackfillStatus.RUNNING
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    execution_arn: str | None = None
    failure_reason: str | None = None
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    count_pages: int = Field(default=DEFAULT_COUNT_PAGES, ge=0, le=MAX_COUNT_PAGES)
    workers: int = Field(default=DEFAULT_WORKERS, ge=1, le=MAX_WORKERS)
    pages: int = Field(default=0, ge=0, description="pages recorded so far, over every range")
    totals: PageCounts = Field(default_factory=PageCounts)
    counted: int = Field(default=0, ge=0)
    counted_bytes: int = Field(default=0, ge=0)
    active_seconds: float = Field(default=0.0, ge=0, description="time spent in page steps, summed over workers")
    ranges_made: int = Field(default=0, ge=0, description="ranges created; 0 until the job is planned")
    ranges_open: int = Field(default=0, ge=0)
    ranges_uncounted: int = Field(default=0, ge=0)
    legacy: bool = False
    inventory: str | None = Field(
        default=None, description="s3://BUCKET/KEY of the S3 Inventory manifest whose data files are the work items"
    )

    @classmethod
    def start(
        cls,
        rule: ReplicationRule,
        *,
        at: datetime,
        page_size: int = DEFAULT_PAGE_SIZE,
        count_pages: int = DEFAULT_COUNT_PAGES,
        workers: int = DEFAULT_WORKERS,
        job_id: str | None = None,
        inventory: str | None = None,
    ) -> BackfillJob:
        """A new job over every object of ``rule``'s prefixes (or of the S3 Inventory report whose manifest
        is at ``inventory``), nothing done yet (its work items are made by the workflow's plan step)."""
        return cls(
            job_id=job_id or new_job_id(at),
            rule_id=rule.rule_id,
            plan=plan_digest(rule),
            created_at=at,
            updated_at=at,
            page_size=page_size,
            count_pages=count_pages,
            workers=workers,
            inventory=inventory,
        )

    @property
    def ref(self) -> JobRef:
        return JobRef(rule_id=self.rule_id, job_id=self.job_id, plan=self.plan)

    @property
    def planned(self) -> bool:
        """Whether its ranges exist."""
        return self.ranges_made > 0

    @property
    def done(self) -> bool:
        """Every range is done (so every key under the rule's prefixes was listed once)."""
        return self.planned and self.ranges_open == 0

    @property
    def count_complete(self) -> bool:
        return self.planned and self.ranges_uncounted == 0

    def progress(self) -> BackfillProgress:
        """Percent, rate and ETA from this item alone.

        The rate is objects listed per second of page time (``active_seconds`` sums every worker's page
        steps) times the workers that can run at once, ``min(workers, ranges_open)``: a job of 8 workers
        over 8 open ranges lists 8 pages in the time one page takes. A finished job has no open range:
        its rate is given at ``min(workers, ranges_made)``. Both counts only grow and the total is fixed
        once counted, so the percentage never goes backwards."""
        processed = self.totals.listed
        parallel = min(self.workers, self.ranges_made if self.done else self.ranges_open) or 1
        rate = processed / self.active_seconds * parallel if self.active_seconds > 0 and processed > 0 else None
        total = self.counted if self.count_complete else None
        return BackfillProgress(
            processed=processed,
            total=total,
            counted_so_far=self.counted,
            percent=percent_complete(processed, self.counted, count_complete=self.count_complete, done=self.done),
            objects_per_second=rate,
            eta_seconds=eta_seconds(processed, total, rate, done=self.done),
            bytes_copied=self.totals.bytes_copied,
            ranges_open=self.ranges_open,
            workers=self.workers,
            done=self.done,
        )


def listing_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """The prefixes to list, in S3's key order, without any that extends another (its keys are listed
    under the shorter one already), so no key is listed twice; ``("",)`` (the whole bucket) for none."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes), key=lambda p: p.encode("utf-8", "surrogatepass")):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return tuple(kept) or ("",)


def plan_digest(rule: ReplicationRule) -> str:
    """Names what a job lists: the rule's buckets, prefixes and creation time. A job resumed against a
    rule with another digest (removed and added again with other prefixes) would list the wrong keys."""
    plan = [rule.source_bucket, rule.destination_bucket, list(listing_prefixes(rule.prefixes))]
    plan.append(rule.created_at.astimezone(UTC).isoformat())
    return hashlib.sha256(json.dumps(plan).encode()).hexdigest()[:16]


def new_job_id(at: datetime) -> str:
    """A job id that sorts by creation time (so the newest job of a rule is the last one)."""
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def percent_complete(processed: int, counted: int, *, count_complete: bool, done: bool) -> float | None:
    """Percent of the counted objects processed: None until the count is complete (the total is not
    known), at most PERCENT_CAP until the job is done, 100 once done. For a fixed total it never
    decreases as ``processed`` grows."""
    if done:
        return 100.0
    if not count_complete:
        return None
    if counted <= 0:
        return PERCENT_CAP  # nothing counted, yet not done: the last page is still to be recorded
    return min(PERCENT_CAP, max(0.0, processed * 100.0 / counted))


def eta_seconds(processed: int, total: int | None, objects_per_second: float | None, *, done: bool) -> float | None:
    """Seconds left at ``objects_per_second`` (remaining / rate); 0 when done, None while unknowable."""
    if done:
        return 0.0
    if total is None or processed <= 0 or not objects_per_second:
        return None
    return max(total - processed, 0) / objects_per_second
