"""The backfill engine: one listing page per step, from its listing to its result (the model: the
package's docstring). The parts it drives: pages.py lists, triage.py decides, copying.py copies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime
from typing import Self

from crr.backfill.copying import PageCopier
from crr.backfill.models import (
    MAX_AHEAD_KEYS,
    MAX_WORKERS,
    JobRef,
    PageRequest,
    PageResult,
    listing_prefixes,
    plan_digest,
)
from crr.backfill.pages import CountAhead, FetchedPage, PageLister, later, thin_out
from crr.backfill.ranges import KeyRange
from crr.backfill.reconcile import Reconcile
from crr.backfill.tally import SKIPPED, PageTally, error_code
from crr.backfill.triage import plan_page
from crr.errors import BackfillPageError, BackfillRefusedError, CrrError, StorageError
from crr.events import change_notice
from crr.ports.objects import FastCopier, PageListing
from crr.ports.queues import ReplicationQueue
from crr.ports.table import KeyLedger
from crr.rules import ReplicationRule

DEFAULT_CONCURRENCY = 32
# Notifications the backfill sends itself name this configuration, so logs tell them from S3's.
BACKFILL_CONFIGURATION_ID = "crr-backfill"
NOTICE_BATCH_SIZE = 10  # SendMessageBatch takes at most 10 messages


class BackfillEngine:
    """Copies backfill pages. Thread-safe; holds two thread pools (``close`` them, or use the engine as a
    context manager): the copy pool of ``concurrency`` workers and the count's (one thread per page
    copied at once: one in a Lambda step).
    ``concurrency=1`` copies and counts in the calling thread.

    Why two pools: the count lists ahead while the page is copied, and it must never take a copy's
    worker. On one shared pool of ``concurrency`` workers the count would hold one of them for the whole
    page, so fewer copies than ``concurrency`` would run at once; on one of ``concurrency + 1`` a worker
    freed by an early count would run a copy, so more would. Either changes what the step's time budget
    assumes (``BackfillSteps.copy_share``: each of ``concurrency`` copies gets that share of the time).
    """

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
        self._lister = PageLister(listing)
        self._copier = PageCopier(copier, ledger, reconcile, concurrency=concurrency, clock=clock)
        self._ledger = ledger
        self._notices = notices
        self._concurrency = concurrency
        self._sse_kms_sources = sse_kms_sources
        self._clock = clock
        self._monotonic = monotonic
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
            count_pool, self._count_pool = self._count_pool, None
        self._copier.close()
        if count_pool is not None:
            count_pool.shutdown(wait=True)

    def copy_page(self, rule: ReplicationRule, request: PageRequest, *, max_bytes: int | None = None) -> PageResult:
        """List one page of the request's range and copy it (see the package's docstring).

        Raises BackfillRefusedError when the rule is paused or is not the rule the job was planned
        for, and BackfillPageError when the page cannot be listed or copied as a whole (nothing of it
        is recorded then; running the request again is safe).
        """
        started = self.timer()
        page = self.fetch(rule, request, max_bytes=max_bytes)
        return self.process(rule, request, page, started=started)

    def fetch(self, rule: ReplicationRule, request: PageRequest, *, max_bytes: int | None = None) -> FetchedPage:
        """List ``request``'s source page and the destination over its keys (no copy yet). With
        ``max_bytes`` (the step's byte budget) the page ends early once its objects would exceed it
        (it always holds one object); the next page goes on from there.

        Raises BackfillRefusedError and BackfillPageError as ``copy_page`` does.
        """
        self._check(rule, request)
        try:
            return self._lister.fetch(rule, request, max_bytes=max_bytes)
        except StorageError as exc:
            raise self._page_error(request, exc) from exc

    def process(self, rule: ReplicationRule, request: PageRequest, page: FetchedPage, *, started: float) -> PageResult:
        """Copy a fetched page, queue its failed keys, advance the count (and probe ahead when the request
        asks); the step's result.

        Raises BackfillPageError as ``copy_page`` does.
        """
        self._check(rule, request)

        def look_ahead() -> CountAhead:
            counted = self._lister.count_ahead(rule, request, page)
            # Room for the two keys a probe finds.
            count = replace(counted, ahead=thin_out(counted.ahead, MAX_AHEAD_KEYS - 2))
            if not request.probe or page.done or count.complete:
                # A counted range has at most ``count_pages`` pages left past its copy, each page of the
                # count already a boundary: a probe could only cut what little is left.
                return count
            # Probe past everything counted, so the key found cuts the part nobody listed yet in two.
            found = self._lister.probe(rule, page.key_range, later(page.next_cursor, count.cursor))
            return replace(count, ahead=[*count.ahead, *found])

        # The count lists while the page is copied (its requests wait on the server as the copies do).
        counting = self._counter().submit(look_ahead) if self._concurrency > 1 else None
        try:
            tally = self._copy(rule, request, page)
            if tally.failed_keys:
                self._queue(rule, request, tally.failed_keys)
        except BaseException:
            if counting is not None:
                wait([counting])  # no request of this step outlives it
            raise
        try:
            count = counting.result() if counting is not None else look_ahead()
        except StorageError as exc:
            raise self._page_error(request, exc) from exc
        return PageResult(
            job_id=request.job_id,
            rule_id=request.rule_id,
            plan=request.plan,
            range_id=request.range_id,
            sequence=request.sequence,
            kind=request.kind,
            prefix=request.prefix,
            after=request.after,
            until=request.until,
            counts=tally.counts(),
            cursor=page.next_cursor,
            done=page.done,
            count_cursor=count.cursor,
            count_complete=count.complete,
            count_completed=count.complete and not request.count_complete,
            counted=count.objects,
            counted_bytes=count.bytes,
            ahead=count.ahead,
            failures=tally.failures,
            elapsed_seconds=max(0.0, self._monotonic() - started),
        )

    def plan_ranges(self, rule: ReplicationRule, job: JobRef, wanted: int) -> list[KeyRange]:
        """The ranges a new job starts with: one per listing prefix, divided by probes into up to
        ``wanted`` (see ``PageLister.presplit``).

        Raises BackfillRefusedError as ``copy_page`` does, BackfillPageError when the source cannot be
        listed."""
        prefixes = self._check(rule, job)
        try:
            return self._lister.presplit(rule, [KeyRange(prefix) for prefix in prefixes], wanted)
        except StorageError as exc:
            raise BackfillPageError(rule.rule_id, job.job_id, 0, str(exc), exc.code) from exc

    def _page_error(self, request: PageRequest, exc: StorageError) -> BackfillPageError:
        return BackfillPageError(
            request.rule_id, request.job_id, request.sequence, f"range {request.range_id}: {exc}", exc.code
        )

    def _check(self, rule: ReplicationRule, request: PageRequest | JobRef) -> tuple[str, ...]:
        if rule.rule_id != request.rule_id or plan_digest(rule) != request.plan:
            raise BackfillRefusedError(
                f"backfill {request.job_id} was planned for another rule {request.rule_id} (plan {request.plan}) "
                f"than rule {rule.rule_id} (plan {plan_digest(rule)}): start a new job"
            )
        if not rule.enabled:
            raise BackfillRefusedError(f"rule {rule.rule_id} is paused: resume it, then resume the backfill")
        return listing_prefixes(rule.prefixes)

    def _copy(self, rule: ReplicationRule, request: PageRequest, page: FetchedPage) -> PageTally:
        """Each object of the page counted by its outcome: skipped, or copied on the copy pool."""
        tally = PageTally()
        for entry in page.entries:
            tally.count_listed(entry)
        plan = plan_page(rule, page, self._ledger, sse_kms_sources=self._sse_kms_sources)
        results = self._copier.copy(rule, request, plan.copies)
        fatal = next((result.fatal for result in results if result.fatal is not None), None)
        if fatal is not None:
            code = fatal.code if isinstance(fatal, StorageError) else type(fatal).__name__
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(fatal), code) from fatal
        for entry in plan.skipped:
            tally.add(entry, SKIPPED)
        for planned, result in zip(plan.copies, results, strict=True):
            tally.add(planned.entry, result)
        return tally

    def _counter(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._count_pool is None:
                # One count per page at a time: one thread in a Lambda step; in a process running several
                # pages at once (the tests' fanned-out runner) one per page, never more than a job's workers.
                self._count_pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="crr-backfill-count")
            return self._count_pool

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
                error_code(exc),
            ) from exc
