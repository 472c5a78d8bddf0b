"""The backfill's in-process runner: every page of a job in one loop, as the workflow would run them, with
the next page listed while the current one is copied.

Only tests and benchmarks use it (the deployed backfill is the Step Functions workflow,
crr.backfill.workflow), so it lives here rather than in the Lambda layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from crr.backfill.engine import BackfillEngine
from crr.backfill.models import BackfillJob, BackfillStatus, PageRequest, PageResult, listing_prefixes
from crr.backfill.pages import FetchedPage
from crr.errors import BackfillPageError, BackfillRefusedError
from crr.ports.table import BackfillJobs
from crr.rules import ReplicationRule


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
