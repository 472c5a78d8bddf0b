"""In-memory fakes of the backfill's ports, over the FakeS3 of ``fakes.py``, plus synthetic buckets that
hold nothing (for measuring the engine's own memory at any object count).

``FakePageListing`` lists like ListObjectsV2 (S3's key order, ``StartAfter``, ``MaxKeys``);
``FakeFastCopier`` copies like CopyObject with ``MetadataDirective=COPY`` and ``CopySourceIfMatch``, and
offers hooks between its read of the source and its write of the destination, where S3 lets other
writers in. Every request passes through ``yield_point`` (see ``interleave.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crr.backfill.models import BackfillJob, BackfillStatus, PageResult
from crr.errors import (
    BackfillJobConflictError,
    BackfillJobNotFoundError,
    BucketMissingError,
    CrrError,
    SourceChangedError,
    SourceGoneError,
)
from crr.models import LedgerEntry, ListedObject, ListingPage
from crr.rules import ReplicationRule
from tests.support.fakes import FakeLedger, FakeS3


def _no_yield() -> None:
    return None


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


class FakePageListing:
    """``PageListing`` over a FakeS3's current objects; logs every request in ``requests``."""

    def __init__(self, s3: FakeS3, yield_point: Callable[[], None] = _no_yield) -> None:
        self.s3 = s3
        self.yield_point = yield_point
        self.requests: list[tuple[str, str, str | None, int]] = []  # bucket, prefix, start_after, max_keys
        self._lock = threading.Lock()

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        self.yield_point()
        with self._lock:
            self.requests.append((bucket, prefix, start_after, max_keys))
        if bucket not in self.s3.buckets:
            raise BucketMissingError(
                "ListObjectsV2", bucket, None, "NoSuchBucket", "The specified bucket does not exist"
            )
        floor = _utf8(start_after) if start_after is not None else b""
        keys = sorted((key for key in self.s3.keys(bucket) if key.startswith(prefix) and _utf8(key) > floor), key=_utf8)
        entries = []
        for key in keys[:max_keys]:
            found = self.s3.current(bucket, key)
            if found is not None:  # deleted while we listed
                entries.append(
                    ListedObject(
                        key=key, size=len(found.body), etag=found.etag.strip('"'), last_modified=found.last_modified
                    )
                )
        return ListingPage(entries=entries, truncated=len(keys) > max_keys)

    def count(self, bucket: str) -> int:
        return sum(1 for request in self.requests if request[0] == bucket)


Hook = Callable[[str], None]


@dataclass
class FakeFastCopier:
    """``FastCopier`` over a FakeS3. ``before_read`` and ``before_write`` hooks run once per key (by key);
    ``failures`` maps a key to the error its copy raises."""

    s3: FakeS3
    yield_point: Callable[[], None] = _no_yield
    before_read: dict[str, Hook] = field(default_factory=dict)
    before_write: dict[str, Hook] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    calls: int = 0
    # Yields between reading the source and writing the copy: a copy takes as long as several requests.
    copy_yields: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        with self._lock:
            self.calls += 1
        self.yield_point()
        if (hook := self.before_read.pop(entry.key, None)) is not None:
            hook(entry.key)
        if entry.key in self.failures:
            raise self.failures[entry.key]
        if rule.destination_bucket not in self.s3.buckets:
            raise BucketMissingError("CopyObject", rule.destination_bucket, entry.key, "NoSuchBucket", "no bucket")
        source = self.s3.current(rule.source_bucket, entry.key)
        if source is None:
            raise SourceGoneError("NoSuchKey")
        if source.etag.strip('"') != entry.etag:
            raise SourceChangedError("PreconditionFailed")
        # S3 read the source when the request started; it writes the destination when it ends.
        for _ in range(self.copy_yields):
            self.yield_point()
        if (hook := self.before_write.pop(entry.key, None)) is not None:
            hook(entry.key)
        written = self.s3.put(
            rule.destination_bucket,
            entry.key,
            source.body,
            metadata=source.metadata,
            tags=source.tags,
            content_type=source.content_type,
        )
        with self._lock:
            self.copied.append(entry.key)
        return written.etag


class HookedLedger(FakeLedger):
    """A FakeLedger that runs ``before_record[key]`` (once) before a record of that key."""

    def __init__(self, yield_point: Callable[[], None] = _no_yield) -> None:
        super().__init__(yield_point)
        self.before_record: dict[str, Hook] = {}

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        if (hook := self.before_record.pop(key, None)) is not None:
            hook(key)
        super().record(rule_id, key, entry, expected_revision)


class RecordingNotices:
    """``ReplicationQueue`` that keeps every body; ``failing`` makes every send raise."""

    def __init__(self, failing: bool = False) -> None:
        self.bodies: list[str] = []
        self.batches = 0
        self.failing = failing

    def send(self, body: str) -> None:
        self.send_batch([body])

    def send_batch(self, bodies: Sequence[str]) -> None:
        assert len(bodies) <= 10
        if self.failing:
            raise CrrError("SendMessageBatch failed: the queue is unreachable")
        self.batches += 1
        self.bodies.extend(bodies)


class MemoryBackfillJobs:
    """``BackfillJobs`` in memory, with the job store's once-per-page semantics (``BackfillJob.with_page``)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.jobs: dict[tuple[str, str], BackfillJob] = {}
        self.clock = clock
        self.recorded: list[int] = []

    def create(self, job: BackfillJob) -> None:
        if (job.rule_id, job.job_id) in self.jobs:
            raise BackfillJobConflictError(f"job {job.job_id} exists")
        self.jobs[(job.rule_id, job.job_id)] = job

    def get(self, rule_id: str, job_id: str) -> BackfillJob:
        if (rule_id, job_id) not in self.jobs:
            raise BackfillJobNotFoundError(rule_id, job_id)
        return self.jobs[(rule_id, job_id)]

    def latest(self, rule_id: str) -> BackfillJob | None:
        mine = sorted(job_id for rule, job_id in self.jobs if rule == rule_id)
        return self.jobs[(rule_id, mine[-1])] if mine else None

    def record_page(self, result: PageResult) -> BackfillJob:
        job = self.get(result.rule_id, result.job_id)
        if job.status is not BackfillStatus.RUNNING and result.sequence > job.pages:
            raise BackfillJobConflictError(f"job {job.job_id} is {job.status.value}")
        job = job.with_page(result, self.clock())
        self.jobs[(job.rule_id, job.job_id)] = job
        self.recorded.append(result.sequence)
        return job

    def _set(self, rule_id: str, job_id: str, **changes: object) -> BackfillJob:
        job = self.get(rule_id, job_id).model_copy(update=changes)
        self.jobs[(rule_id, job_id)] = job
        return job

    def mark_succeeded(self, rule_id: str, job_id: str, at: datetime) -> BackfillJob:
        if not self.get(rule_id, job_id).done:
            raise BackfillJobConflictError("pages left")
        return self._set(rule_id, job_id, status=BackfillStatus.SUCCEEDED, finished_at=at, updated_at=at)

    def mark_failed(self, rule_id: str, job_id: str, reason: str, at: datetime) -> BackfillJob:
        if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
            raise BackfillJobConflictError("succeeded")
        return self._set(
            rule_id, job_id, status=BackfillStatus.FAILED, failure_reason=reason, finished_at=at, updated_at=at
        )

    def set_execution(self, rule_id: str, job_id: str, execution_arn: str, at: datetime) -> BackfillJob:
        if self.get(rule_id, job_id).status is BackfillStatus.SUCCEEDED:
            raise BackfillJobConflictError("succeeded")
        return self._set(
            rule_id,
            job_id,
            status=BackfillStatus.RUNNING,
            execution_arn=execution_arn,
            failure_reason=None,
            finished_at=None,
            updated_at=at,
        )


# ---- synthetic buckets: keys computed, nothing stored ------------------------------------------------


def synthetic_key(prefix_number: int, index: int) -> str:
    return f"p{prefix_number:03d}/obj-{index:07d}"


class SyntheticListing:
    """A source of ``objects`` keys spread over ``prefixes`` prefixes (``p000/`` ...), computed on demand,
    and an empty destination: its memory does not grow with the object count."""

    def __init__(self, source: str, objects: int, prefixes: int, size: int = 1024) -> None:
        self.source = source
        self.per_prefix = -(-objects // prefixes)
        self.objects = objects
        self.size = size
        self.requests = 0

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        self.requests += 1
        if bucket != self.source or not prefix:
            return ListingPage(entries=[], truncated=False)
        number = int(prefix[1:4])
        first = 0 if start_after is None else int(start_after.rsplit("-", 1)[1]) + 1
        last = min(self.per_prefix, self.objects - number * self.per_prefix)
        stop = min(first + max_keys, last)
        entries = [
            ListedObject(key=synthetic_key(number, index), size=self.size, etag=f"{index:032x}")
            for index in range(first, stop)
        ]
        return ListingPage(entries=entries, truncated=stop < last)

    def prefixes(self) -> list[str]:
        count = -(-self.objects // self.per_prefix)
        return [f"p{number:03d}/" for number in range(count)]


class CountingCopier:
    """``FastCopier`` that copies nothing and counts."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        with self._lock:
            self.calls += 1
        return None


class DiscardingLedger:
    """``KeyLedger`` that accepts every write and keeps none (a remote table holds them in production)."""

    def __init__(self) -> None:
        self.writes = 0
        self._lock = threading.Lock()

    def read(self, rule_id: str, key: str) -> LedgerEntry | None:
        return None

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        return {}

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        with self._lock:
            self.writes += 1
