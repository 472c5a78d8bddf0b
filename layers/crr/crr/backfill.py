"""Backfill: copy the objects that predate a rule, one listing page per step, next to live replication.

A job walks the rule's prefixes (none: the whole bucket) in S3's key order, one page of at most
``page_size`` keys per step; a cursor (prefix index + the last key listed) says where it is and is
stored in the job after every page, so an interrupted job resumes with the page after the last one
recorded. The cursor is a key given as ``StartAfter`` rather than a continuation token: it is readable,
means the same to every S3-compatible server, and lists the destination over the same range. Memory
holds one page (two while the in-process runner prefetches), whatever the bucket holds.

One step, ``BackfillEngine.copy_page``:
1. lists one source page (one ListObjectsV2 request; several only when the page crosses into the next
   prefix) and the destination over the same key range (``StartAfter`` = the cursor's key, stopping once
   the destination listing passes the page's last key: usually one request);
2. skips every object already replicated: for a one-way rule, one the destination lists with the same
   size and ETag; for any rule, one the ledger says crr applied at exactly the listed write (ETag and
   Last-Modified; one BatchGetItem per 100 keys present on both sides), which is how an SSE-KMS
   replica (whose ETag is its own) is recognised;
3. copies the others with bounded concurrency, each with ONE request on the fast path: CopyObject with
   ``MetadataDirective=COPY`` and ``TaggingDirective=COPY`` (content headers, user metadata and tags come
   along without being read), pinned by ``CopySourceIfMatch`` to the listed ETag, with the rule's storage
   class and, where both buckets use ACLs, the source's grants;
4. records each copied key in the ledger, conditionally on "no entry yet";
5. counts ahead, while the page is copied: a counting cursor lists up to ``count_pages`` further pages,
   keys only, until the total is known, so a job shows a percentage (``percent_complete``) long before
   it ends. The count starts with the copy's own first page, so it never lags behind the copy.

Why this never overwrites a newer live write, nor resurrects a deleted object
-----------------------------------------------------------------------------
The live path (crr.replication) owns every change made after the listing; the backfill only has to
never leave an older state behind it.
- An object overwritten or deleted between the listing and the copy is not copied: the copy is pinned to
  the listed ETag, so S3 refuses it (412 / NoSuchKey). It counts as *superseded*: its own notification
  brings the live path.
- A copy that passed its precondition may still land *after* the live path copied a newer version, or
  deleted the replica (S3 reads the source when the request starts and writes when it ends). Both the
  backfill and the live path then write the key's ledger entry, and both write conditionally: the
  backfill on "no entry yet", the live path on the revision it read. Whichever writes second fails its
  condition, and reconciles the key again from the source's *current* state (HEAD, then copy or
  delete). The backfill does that through the live path itself (the ``reconcile`` callable, which the
  wiring makes ``Replicator.apply`` of a change without sequencer, see ``reconciler``); the live path
  does the symmetric thing when the backfill's entry landed first. So the last write to the replica is
  never older than the last source state either of them saw.
- A ledger write that fails for another reason (throttling) cannot tell who won, so that key is treated
  as failed and handed to the replication queue, which reconciles it. A step cut off between a copy and
  its ledger write records nothing: the page runs again, lists the source afresh, and copies any replica
  that differs from it.

The fast path cannot see an object's encryption and does not write crr's replica marker (the ledger
entry records the key as replicated, with the replica's own ETag from the CopyObject answer, by which
`crr verify` recognises a replica whose ETag is not the source's). So every object of a two-way rule
(whose loop guard and last-writer-wins need the marker), of a rule with ``replica_kms_key_arn`` (whose
SSE-KMS objects are re-encrypted), and of any rule when the stack may decrypt SSE-KMS sources
(``sse_kms_sources``: a rule without a replica key must refuse those, as the live path does), goes
through ``reconcile`` instead: HEAD, copy with the marker, conditional ledger write. So do objects
uploaded in parts (their replica keeps the part layout, hence the ETag) and objects above 5 GiB. An
SSE-KMS object under a key the stack does not list (the AWS managed key ``aws/s3`` included) is kept
from the fast path by IAM: the functions' policy denies kms:Decrypt through S3 on every unlisted key, so
its copy is refused and the key goes to the replication queue, where the live path refuses it with its
reason, as for a live change.

Failures: an object that fails (throttled, denied, ...) never stops the page and is never lost: its key
is sent to the replication queue as a synthetic change notice (configuration ``crr-backfill``), so the
live path retries it with backoff and, in the end, its dead-letter queue holds it with the reason. A
failure of the whole page (listing refused, bucket missing, the queue unreachable) raises
BackfillPageError; nothing of the page is recorded and running it again is safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Self

from crr.backfill_models import (
    MAX_FAILURE_SAMPLES,
    MAX_PAGE_SIZE,
    BackfillJob,
    BackfillStatus,
    CountProgress,
    FailedKey,
    ListedEntry,
    ListingCursor,
    PageCounts,
    PageRequest,
    PageResult,
    listing_prefixes,
    plan_digest,
)
from crr.copy_planning import MAX_SINGLE_COPY_BYTES
from crr.errors import (
    BackfillPageError,
    BackfillRefusedError,
    BucketMissingError,
    CrrError,
    LedgerConflictError,
    SourceChangedError,
    SourceGoneError,
    StorageError,
)
from crr.events import ChangeEvent, ChangeKind, change_notice
from crr.models import LedgerEntry
from crr.observability import logger
from crr.ports.objects import FastCopier, PageListing
from crr.ports.queues import ReplicationQueue
from crr.ports.table import BackfillJobs, KeyLedger
from crr.replication import Outcome, ReplicationResult, Replicator
from crr.rules import ReplicationRule

DEFAULT_CONCURRENCY = 32
MAX_REASON_CHARS = 300
# Notifications the backfill sends itself name this configuration, so logs tell them from S3's.
BACKFILL_CONFIGURATION_ID = "crr-backfill"
# The event name of the changes the backfill hands the live path (it reconciles state, not events).
BACKFILL_EVENT_NAME = "crr:Backfill"
NOTICE_BATCH_SIZE = 10  # SendMessageBatch takes at most 10 messages


# ---- values crossing the Lambda / Step Functions boundary ---------------------------------------


# ---- pure functions ----------------------------------------------------------------------------


def _within_bytes(entries: list[ListedEntry], budget: int, *, at_least_one: bool) -> list[ListedEntry]:
    """The leading entries whose sizes add up to at most ``budget`` (the first one regardless when
    ``at_least_one``, so a page always makes progress)."""
    kept: list[ListedEntry] = []
    total = 0
    for entry in entries:
        if total + entry.size > budget and not (at_least_one and not kept):
            break
        kept.append(entry)
        total += entry.size
    return kept


# ---- ports -------------------------------------------------------------------------------------


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


# ---- the engine --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """The part of a page listed under one prefix: the objects after ``after``."""

    prefix: str
    after: str | None
    entries: list[ListedEntry]


@dataclass(frozen=True)
class FetchedPage:
    """A listed page: the source objects and, per key, what the destination holds (size, ETag)."""

    cursor: ListingCursor
    next_cursor: ListingCursor
    segments: list[_Segment]
    destination: dict[str, tuple[int, str]]

    @property
    def entries(self) -> Iterator[ListedEntry]:
        for segment in self.segments:
            yield from segment.entries


class _Outcome(StrEnum):
    COPIED = "copied"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # not attempted: the page failed as a whole


@dataclass(frozen=True)
class _Done:
    outcome: _Outcome
    bytes_copied: int = 0
    reason: str = ""
    fatal: BaseException | None = None


# How live-path outcomes count for the backfill. Anything else (the rule was paused or removed
# meanwhile) did not copy the object: it counts as failed, and its key is queued.
_LIVE_OUTCOMES = {
    Outcome.COPIED: _Outcome.COPIED,
    Outcome.COPY_STARTED: _Outcome.COPIED,  # too large for this step: the large-copy workflow copies it
    Outcome.DELETED: _Outcome.SUPERSEDED,  # deleted at the source since it was listed
    Outcome.DELETES_NOT_REPLICATED: _Outcome.SUPERSEDED,
    Outcome.DELETE_HELD: _Outcome.SUPERSEDED,
    Outcome.DELETE_DISCARDED: _Outcome.SUPERSEDED,
    Outcome.DESTINATION_CURRENT: _Outcome.SKIPPED,
    Outcome.REPLICA_OF_DESTINATION: _Outcome.SKIPPED,
    Outcome.DUPLICATE: _Outcome.SKIPPED,
    Outcome.STALE: _Outcome.SKIPPED,
}


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PageCounts.model_fields, 0))
    failures: list[FailedKey] = field(default_factory=list)
    failed_keys: list[str] = field(default_factory=list)

    def add(self, entry: ListedEntry, done: _Done) -> None:
        self.counts[done.outcome.value] += 1
        self.counts["bytes_copied"] += done.bytes_copied
        if done.outcome is _Outcome.FAILED:
            self.failed_keys.append(entry.key)
            if len(self.failures) < MAX_FAILURE_SAMPLES:
                self.failures.append(FailedKey(key=entry.key, reason=done.reason[:MAX_REASON_CHARS]))


class BackfillEngine:
    """Copies backfill pages. Thread-safe; holds a thread pool of ``concurrency`` workers (``close`` it,
    or use the engine as a context manager). ``concurrency=1`` copies in the calling thread."""

    def __init__(
        self,
        listing: PageListing,
        copier: FastCopier,
        ledger: KeyLedger,
        reconcile: Reconcile,
        notices: ReplicationQueue,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        sse_kms_sources: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._listing = listing
        self._copier = copier
        self._ledger = ledger
        self._reconcile = reconcile
        self._notices = notices
        self._concurrency = concurrency
        self._sse_kms_sources = sse_kms_sources
        self._clock = clock
        self._monotonic = monotonic
        self._pool: ThreadPoolExecutor | None = None
        self._count_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def timer(self) -> float:
        """The engine's monotonic clock (seconds), which times the steps."""
        return self._monotonic()

    def close(self) -> None:
        with self._pool_lock:
            pools = [self._pool, self._count_pool]
            self._pool = self._count_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)

    # ---- one step ------------------------------------------------------------------------------

    def copy_page(self, rule: ReplicationRule, request: PageRequest, *, max_bytes: int | None = None) -> PageResult:
        """List one page of the rule's source and copy it (see the module's docstring).

        Raises BackfillRefusedError when the rule is paused or is not the rule the job was planned
        for, and BackfillPageError when the page cannot be listed or copied as a whole (nothing of it
        is recorded then; running the request again is safe).
        """
        started = self.timer()
        page = self.fetch(rule, request, max_bytes=max_bytes)
        return self.process(rule, request, page, started=started)

    def fetch(self, rule: ReplicationRule, request: PageRequest, *, max_bytes: int | None = None) -> FetchedPage:
        """List ``request``'s source page and the destination over its key range (no copy yet). With
        ``max_bytes`` (the step's byte budget) the page ends early once its objects would exceed it
        (it always holds one object); the next page goes on from there.

        Raises BackfillRefusedError and BackfillPageError as ``copy_page`` does.
        """
        prefixes = self._check(rule, request)
        try:
            segments, next_cursor = self._list_filled(
                rule.source_bucket, rule.source_region, prefixes, request.cursor, request.page_size, max_bytes=max_bytes
            )
            destination: dict[str, tuple[int, str]] = {}
            for segment in segments:
                destination.update(self._destination_range(rule, segment))
        except StorageError as exc:
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(exc), exc.code) from exc
        return FetchedPage(request.cursor, next_cursor, segments, destination)

    def process(self, rule: ReplicationRule, request: PageRequest, page: FetchedPage, *, started: float) -> PageResult:
        """Copy a fetched page, queue its failed keys, advance the count; the step's result.

        Raises BackfillPageError as ``copy_page`` does.
        """
        prefixes = self._check(rule, request)
        listed = sum(len(segment.entries) for segment in page.segments)
        bytes_listed = sum(entry.size for entry in page.entries)

        def count_ahead() -> CountProgress:
            return self._advance_count(rule, prefixes, request, page, listed=listed, bytes_listed=bytes_listed)

        # The count lists while the page is copied (its requests wait on the server as the copies do).
        counting = self._counter().submit(count_ahead) if self._concurrency > 1 else None
        try:
            tally = self._copy(rule, request, page)
            if tally.failed_keys:
                self._queue(rule, request, tally.failed_keys)
        except BaseException:
            if counting is not None:
                wait([counting])  # no request of this step outlives it
            raise
        try:
            count = counting.result() if counting is not None else count_ahead()
        except StorageError as exc:
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(exc), exc.code) from exc
        done = page.next_cursor.prefix_index >= len(prefixes)
        next_request = None
        if not done:
            next_request = request.model_copy(
                update={"sequence": request.sequence + 1, "cursor": page.next_cursor, "count": count}
            )
        return PageResult(
            job_id=request.job_id,
            rule_id=request.rule_id,
            plan=request.plan,
            sequence=request.sequence,
            counts=PageCounts(**tally.counts),
            cursor=page.next_cursor,
            done=done,
            count=count,
            failures=tally.failures,
            elapsed_seconds=max(0.0, self._monotonic() - started),
            next_request=next_request,
        )

    def _check(self, rule: ReplicationRule, request: PageRequest) -> tuple[str, ...]:
        if rule.rule_id != request.rule_id or plan_digest(rule) != request.plan:
            raise BackfillRefusedError(
                f"backfill {request.job_id} was planned for another rule {request.rule_id} (plan {request.plan}) "
                f"than rule {rule.rule_id} (plan {plan_digest(rule)}): start a new job"
            )
        if not rule.enabled:
            raise BackfillRefusedError(f"rule {rule.rule_id} is paused: resume it, then resume the backfill")
        return listing_prefixes(rule.prefixes)

    # ---- listing -------------------------------------------------------------------------------

    def _list_filled(
        self,
        bucket: str,
        region: str,
        prefixes: tuple[str, ...],
        cursor: ListingCursor,
        page_size: int,
        *,
        max_bytes: int | None = None,
    ) -> tuple[list[_Segment], ListingCursor]:
        """Up to ``page_size`` objects from ``cursor`` on: one request, more only when a prefix ends before
        the page is full (the next prefix fills the rest, so small prefixes do not cost a step each)."""
        segments: list[_Segment] = []
        room = page_size
        index, after = cursor.prefix_index, cursor.after
        while room > 0 and index < len(prefixes):
            listed = self._listing.list_page(bucket, region, prefixes[index], start_after=after, max_keys=room)
            entries = listed.entries[:room]
            if max_bytes is not None:
                kept = _within_bytes(entries, max_bytes, at_least_one=not segments)
                max_bytes -= sum(entry.size for entry in kept)
                if len(kept) < len(entries):  # the byte budget ends the page here
                    if kept:
                        segments.append(_Segment(prefixes[index], after, kept))
                        after = kept[-1].key
                    break
            if not listed.truncated and len(entries) == len(listed.entries):
                if entries:
                    segments.append(_Segment(prefixes[index], after, entries))
                    room -= len(entries)
                index, after = index + 1, None
                continue
            if not entries:
                # Without a key to start after, the listing cannot go on (S3 never answers so).
                raise StorageError("ListObjectsV2", bucket, None, "EmptyTruncatedPage", "a truncated page held no key")
            segments.append(_Segment(prefixes[index], after, entries))
            room -= len(entries)
            after = entries[-1].key
            break  # the prefix goes on: the next step lists from here
        return segments, ListingCursor(prefix_index=index, after=after)

    def _destination_range(self, rule: ReplicationRule, segment: _Segment) -> dict[str, tuple[int, str]]:
        """What the destination holds of the segment's keys: listed from the segment's start until the
        listing passes its last key (usually one request). Only the segment's keys are kept."""
        if not segment.entries:
            return {}
        wanted = {entry.key for entry in segment.entries}
        last = segment.entries[-1].sort_key
        found: dict[str, tuple[int, str]] = {}
        after = segment.after
        while True:
            listed = self._listing.list_page(
                rule.destination_bucket,
                rule.destination_region,
                segment.prefix,
                start_after=after,
                max_keys=MAX_PAGE_SIZE,
            )
            for entry in listed.entries:
                if entry.sort_key > last:
                    return found
                if entry.key in wanted:
                    found[entry.key] = (entry.size, entry.etag)
            if not listed.truncated or not listed.entries:
                return found
            after = listed.entries[-1].key

    def _advance_count(
        self,
        rule: ReplicationRule,
        prefixes: tuple[str, ...],
        request: PageRequest,
        page: FetchedPage,
        *,
        listed: int,
        bytes_listed: int,
    ) -> CountProgress:
        count = request.count
        if count.complete:
            return count
        if count.cursor.position() == request.cursor.position():
            # The count has not got ahead of the copy: the page just listed counts, at no request.
            count = CountProgress(
                cursor=page.next_cursor,
                objects=count.objects + listed,
                bytes=count.bytes + bytes_listed,
                complete=page.next_cursor.prefix_index >= len(prefixes),
            )
        for _ in range(request.count_pages):
            if count.complete:
                break
            segments, cursor = self._list_filled(
                rule.source_bucket, rule.source_region, prefixes, count.cursor, request.page_size
            )
            count = CountProgress(
                cursor=cursor,
                objects=count.objects + sum(len(s.entries) for s in segments),
                bytes=count.bytes + sum(e.size for s in segments for e in s.entries),
                complete=cursor.prefix_index >= len(prefixes),
            )
        return count

    # ---- copying -------------------------------------------------------------------------------

    def _copy(self, rule: ReplicationRule, request: PageRequest, page: FetchedPage) -> _Tally:
        tally = _Tally()
        todo = self._not_yet_replicated(rule, page, tally)
        whole_rule_full = rule.two_way or rule.replica_kms_key_arn is not None or self._sse_kms_sources
        abandon = threading.Event()

        def one(entry: ListedEntry) -> _Done:
            if abandon.is_set():
                return _Done(_Outcome.ABANDONED)
            done = self._copy_one(rule, request, entry, whole_rule_full)
            if done.fatal is not None:
                abandon.set()
            return done

        results = self._map(one, todo)
        fatal = next((done.fatal for done in results if done.fatal is not None), None)
        if fatal is not None:
            code = fatal.code if isinstance(fatal, StorageError) else type(fatal).__name__
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(fatal), code) from fatal
        for entry, done in zip(todo, results, strict=True):
            tally.add(entry, done)
        return tally

    def _not_yet_replicated(self, rule: ReplicationRule, page: FetchedPage, tally: _Tally) -> list[ListedEntry]:
        """The page's objects to copy; the others are counted as skipped in ``tally``.

        Skipped: a one-way rule's object whose replica lists the same size and ETag (same bytes; a copy
        would change nothing the listing shows), and any object on both sides that the ledger says crr
        applied at exactly this listed write (one BatchGetItem per 100 such keys). The ledger is what
        recognises an SSE-KMS replica, whose ETag is its own; and a two-way rule needs it for every key,
        because equal bytes with other metadata are a change there (the live path compares stamps).
        """
        todo: list[ListedEntry] = []
        on_both_sides: list[ListedEntry] = []
        for entry in page.entries:
            tally.counts["listed"] += 1
            tally.counts["bytes_listed"] += entry.size
            if not rule.two_way and page.destination.get(entry.key) == (entry.size, entry.etag):
                tally.add(entry, _Done(_Outcome.SKIPPED))
            elif entry.key in page.destination:
                on_both_sides.append(entry)
            else:
                todo.append(entry)
        recorded = self._ledger.read_many(rule.rule_id, [entry.key for entry in on_both_sides]) if on_both_sides else {}
        for entry in on_both_sides:
            if _replicated(entry, recorded.get(entry.key)):
                tally.add(entry, _Done(_Outcome.SKIPPED))
            else:
                todo.append(entry)
        return todo

    def _map(self, work: Callable[[ListedEntry], _Done], entries: list[ListedEntry]) -> list[_Done]:
        if self._concurrency == 1 or len(entries) <= 1:
            return [work(entry) for entry in entries]
        return list(self._executor().map(work, entries))

    def _counter(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._count_pool is None:
                self._count_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crr-backfill-count")
            return self._count_pool

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="crr-backfill")
            return self._pool

    def _copy_one(self, rule: ReplicationRule, request: PageRequest, entry: ListedEntry, full: bool) -> _Done:
        """Never raises: a failure is an outcome (``fatal`` when it dooms the whole page)."""
        try:
            if full or _needs_full_path(entry):
                return _from_live(self._reconcile(rule, entry.key))
            return self._fast_copy(rule, entry)
        except BucketMissingError as exc:
            return _Done(_Outcome.FAILED, reason=str(exc), fatal=exc)
        except Exception as exc:  # noqa: BLE001 - one object's failure must never stop the page
            logger.warning(
                "backfill could not copy a key; handing it to the replication queue",
                extra={
                    "rule": rule.rule_id,
                    "job": request.job_id,
                    "page": request.sequence,
                    "bucket": rule.source_bucket,
                    "key": entry.key,
                    "error_code": _code_of(exc),
                    "reason": str(exc)[:MAX_REASON_CHARS],
                },
            )
            return _Done(_Outcome.FAILED, reason=f"{_code_of(exc)}: {exc}")

    def _fast_copy(self, rule: ReplicationRule, entry: ListedEntry) -> _Done:
        """One CopyObject pinned to the listed ETag, then the ledger entry "no entry yet", which records the
        replica's own ETag from the copy's answer (what `crr verify` recognises the replica by when an
        SSE-KMS destination gave it an ETag of its own: the fast path writes no marker)."""
        try:
            replica_etag = self._copier.copy_listed(rule, entry)
        except (SourceChangedError, SourceGoneError):
            return _Done(_Outcome.SUPERSEDED)  # changed since listed: its own notification is the live path's
        written = LedgerEntry(
            revision=1,
            sequencer=None,
            etag=f'"{entry.etag}"',
            deleted=False,
            applied_at=self._clock(),
            source_modified=entry.last_modified,
            replica_etag=replica_etag,
        )
        try:
            self._ledger.record(rule.rule_id, entry.key, written, None)
        except LedgerConflictError:
            # The live path wrote the key meanwhile, and our copy may have landed over its newer copy or
            # its delete: reconcile the key from the source's current state.
            settled = _from_live(self._reconcile(rule, entry.key))
            if settled.outcome in {_Outcome.SUPERSEDED, _Outcome.FAILED}:
                return settled
            return _Done(_Outcome.COPIED, entry.size + settled.bytes_copied)
        return _Done(_Outcome.COPIED, entry.size)

    def _queue(self, rule: ReplicationRule, request: PageRequest, keys: list[str]) -> None:
        """Hand failed keys to the replication queue; if that fails, the page fails (and is retried)."""
        at = self._clock()
        bodies = [
            change_notice(
                rule.source_bucket, rule.source_region, key, configuration_id=BACKFILL_CONFIGURATION_ID, at=at
            )
            for key in keys
        ]
        try:
            for start in range(0, len(bodies), NOTICE_BATCH_SIZE):
                self._notices.send_batch(bodies[start : start + NOTICE_BATCH_SIZE])
        except CrrError as exc:
            raise BackfillPageError(
                rule.rule_id,
                request.job_id,
                request.sequence,
                f"{len(keys)} key(s) failed and could not all be handed to the replication queue: {exc}",
                _code_of(exc),
            ) from exc


def _replicated(entry: ListedEntry, recorded: LedgerEntry | None) -> bool:
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


def _needs_full_path(entry: ListedEntry) -> bool:
    """Uploaded in parts (ETag "<md5>-<parts>": the replica must keep the layout to keep the ETag), or too
    large for one CopyObject."""
    return "-" in entry.etag or entry.size > MAX_SINGLE_COPY_BYTES


def _from_live(result: ReplicationResult) -> _Done:
    outcome = _LIVE_OUTCOMES.get(result.outcome, _Outcome.FAILED)
    if outcome is _Outcome.FAILED:
        return _Done(_Outcome.FAILED, reason=f"{result.outcome.value}: {result.detail or 'not copied'}")
    return _Done(outcome, result.bytes_copied if outcome is _Outcome.COPIED else 0)


def _code_of(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return str(code) if code else type(exc).__name__


# ---- running a whole job in process ------------------------------------------------------------


def run_pages(
    engine: BackfillEngine, rule: ReplicationRule, request: PageRequest, *, prefetch: bool = True
) -> Iterator[PageResult]:
    """Every page from ``request`` to the end of the listing, as the workflow would run them, but in this
    process; with ``prefetch`` the next page (source and destination) is listed while the current one
    is copied. Stops early if the caller stops iterating. Raises what ``copy_page`` raises."""
    prefixes = len(listing_prefixes(rule.prefixes))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crr-backfill-prefetch") as lister:
        started = engine.timer()
        page = engine.fetch(rule, request)
        ahead: Future[FetchedPage] | None = None
        try:
            while True:
                if prefetch and page.next_cursor.prefix_index < prefixes:
                    ahead = lister.submit(engine.fetch, rule, request.model_copy(update={"cursor": page.next_cursor}))
                result = engine.process(rule, request, page, started=started)
                started = engine.timer()
                yield result
                if result.next_request is None:
                    return
                request = result.next_request
                page = ahead.result() if ahead is not None else engine.fetch(rule, request)
                ahead = None
        finally:
            if ahead is not None:
                ahead.cancel()


def run_job(
    engine: BackfillEngine,
    rule: ReplicationRule,
    jobs: BackfillJobs,
    job: BackfillJob,
    *,
    prefetch: bool = True,
    max_pages: int | None = None,
    on_page: Callable[[BackfillJob, PageResult], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackfillJob:
    """Run ``job`` from its stored cursor, recording every page in ``jobs``; marks it succeeded when the
    listing ends, failed (with the reason) when a page fails as a whole, and returns it as stored.
    ``max_pages`` stops after that many pages (an interruption, for tests and benchmarks).

    Raises BackfillPageError and BackfillRefusedError after recording the failure.
    """
    if job.done:
        return job if job.status is BackfillStatus.SUCCEEDED else jobs.mark_succeeded(job.rule_id, job.job_id, clock())
    ran = 0
    try:
        for result in run_pages(engine, rule, job.next_request(), prefetch=prefetch):
            job = jobs.record_page(result)
            ran += 1
            if on_page is not None:
                on_page(job, result)
            if max_pages is not None and ran >= max_pages:
                break
    except (BackfillPageError, BackfillRefusedError) as exc:
        jobs.mark_failed(job.rule_id, job.job_id, str(exc), clock())
        raise
    if job.done:
        job = jobs.mark_succeeded(job.rule_id, job.job_id, clock())
    return job
