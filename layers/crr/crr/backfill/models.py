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

from crr.errors import BackfillJobConflictError
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


class ListingCursor(_Model):
    """Where a listing stands: the index of the prefix being listed and the last key listed under it
    (None: the prefix's start). ``prefix_index`` equal to the number of prefixes: the listing is over."""

    prefix_index: int = Field(default=0, ge=0)
    after: str | None = Field(default=None, min_length=1)

    def position(self) -> tuple[int, int, bytes]:
        """Orders cursors as the listing advances (keys compare by their UTF-8 bytes, as S3 sorts them)."""
        if self.after is None:
            return (self.prefix_index, 0, b"")
        return (self.prefix_index, 1, self.after.encode("utf-8", "surrogatepass"))


class CountProgress(_Model):
    """The counting pass: how far it has listed, and what it has counted so far."""

    cursor: ListingCursor = Field(default_factory=ListingCursor)
    objects: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    complete: bool = False


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


class PageRequest(_Model):
    """One step's input: which job, which page, where the copy and the count stand."""

    job_id: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    plan: str = Field(min_length=1, description="plan_digest of the rule the job was started for")
    sequence: int = Field(ge=1, description="this page's number in the job, from 1")
    cursor: ListingCursor = Field(default_factory=ListingCursor)
    count: CountProgress = Field(default_factory=CountProgress)
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    count_pages: int = Field(default=DEFAULT_COUNT_PAGES, ge=0, le=MAX_COUNT_PAGES)


class PageResult(_Model):
    """One step's output: the page's counts (deltas, added to the job), the cursors after it (absolute),
    and the next step's request (None once ``done``). A few KiB of JSON at most."""

    job_id: str
    rule_id: str
    plan: str
    sequence: int = Field(ge=1)
    counts: PageCounts
    cursor: ListingCursor
    done: bool
    count: CountProgress
    failures: list[FailedKey] = Field(default_factory=list, max_length=MAX_FAILURE_SAMPLES)
    elapsed_seconds: float = Field(ge=0)
    next_request: PageRequest | None = None


class BackfillStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BackfillProgress(_Model):
    """What `crr status` and a progress bar show."""

    processed: int
    total: int | None = Field(description="objects counted; None until the counting pass is complete")
    counted_so_far: int
    percent: float | None
    objects_per_second: float | None
    eta_seconds: float | None
    bytes_copied: int
    done: bool


class BackfillJob(_Model):
    """A backfill job as stored in the rules table (``RULE#<rule>`` / ``BACKFILL#<job id>``)."""

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
    pages: int = Field(default=0, ge=0, description="pages recorded so far")
    cursor: ListingCursor = Field(default_factory=ListingCursor)
    done: bool = False
    totals: PageCounts = Field(default_factory=PageCounts)
    count: CountProgress = Field(default_factory=CountProgress)
    active_seconds: float = Field(default=0.0, ge=0, description="time spent in page steps")

    @classmethod
    def start(
        cls,
        rule: ReplicationRule,
        *,
        at: datetime,
        page_size: int = DEFAULT_PAGE_SIZE,
        count_pages: int = DEFAULT_COUNT_PAGES,
        job_id: str | None = None,
    ) -> BackfillJob:
        """A new job over every object of ``rule``'s prefixes, nothing done yet."""
        return cls(
            job_id=job_id or new_job_id(at),
            rule_id=rule.rule_id,
            plan=plan_digest(rule),
            created_at=at,
            updated_at=at,
            page_size=page_size,
            count_pages=count_pages,
        )

    def next_request(self) -> PageRequest:
        """The request of the page after the last one recorded. Raises BackfillJobConflictError when done."""
        if self.done:
            raise BackfillJobConflictError(f"backfill {self.job_id} of rule {self.rule_id} has no page left")
        return PageRequest(
            job_id=self.job_id,
            rule_id=self.rule_id,
            plan=self.plan,
            sequence=self.pages + 1,
            cursor=self.cursor,
            count=self.count,
            page_size=self.page_size,
            count_pages=self.count_pages,
        )

    def with_page(self, result: PageResult, at: datetime) -> BackfillJob:
        """This job with ``result`` recorded: what the job store does atomically. A result already recorded
        (same or lower sequence) leaves the job unchanged; a result that skips a page raises
        BackfillJobConflictError."""
        if result.job_id != self.job_id:
            raise BackfillJobConflictError(f"page of job {result.job_id} given to job {self.job_id}")
        if result.sequence <= self.pages:
            return self
        if result.sequence != self.pages + 1:
            raise BackfillJobConflictError(
                f"backfill {self.job_id}: page {result.sequence} arrived, but only {self.pages} are recorded"
            )
        return self.model_copy(
            update={
                "pages": result.sequence,
                "cursor": result.cursor,
                "done": result.done,
                "count": result.count,
                "totals": self.totals.plus(result.counts),
                "active_seconds": self.active_seconds + result.elapsed_seconds,
                "updated_at": at,
            }
        )

    def progress(self) -> BackfillProgress:
        processed = self.totals.listed
        return BackfillProgress(
            processed=processed,
            total=self.count.objects if self.count.complete else None,
            counted_so_far=self.count.objects,
            percent=percent_complete(processed, self.count.objects, count_complete=self.count.complete, done=self.done),
            objects_per_second=processed / self.active_seconds if self.active_seconds > 0 else None,
            eta_seconds=eta_seconds(
                processed,
                self.count.objects if self.count.complete else None,
                self.active_seconds,
                done=self.done,
            ),
            bytes_copied=self.totals.bytes_copied,
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


def eta_seconds(processed: int, total: int | None, elapsed_seconds: float, *, done: bool) -> float | None:
    """Seconds left at the rate so far (remaining / rate); 0 when done, None while unknowable."""
    if done:
        return 0.0
    if total is None or processed <= 0 or elapsed_seconds <= 0:
        return None
    remaining = max(total - processed, 0)
    return remaining / (processed / elapsed_seconds)
