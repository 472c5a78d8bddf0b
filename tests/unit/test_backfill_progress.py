"""Backfill progress: percent complete and ETA as pure functions, and a job's progress as pages are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crr.backfill.models import (
    PERCENT_CAP,
    BackfillJob,
    CountProgress,
    ListingCursor,
    PageCounts,
    PageResult,
    eta_seconds,
    new_job_id,
    percent_complete,
)
from crr.errors import BackfillJobConflictError
from tests.support.rules import make_rule

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
counts = st.integers(min_value=0, max_value=10**9)


@given(processed=counts, counted=counts, complete=st.booleans(), done=st.booleans())
def test_percent_is_between_0_and_100_and_100_only_when_done(
    processed: int, counted: int, complete: bool, done: bool
) -> None:
    percent = percent_complete(processed, counted, count_complete=complete, done=done)
    if done:
        assert percent == 100.0
    elif not complete:
        assert percent is None
    else:
        assert percent is not None
        assert 0.0 <= percent <= PERCENT_CAP


@given(total=counts, steps=st.lists(st.integers(min_value=0, max_value=10**6), max_size=30))
def test_percent_never_goes_backwards_as_objects_are_processed(total: int, steps: list[int]) -> None:
    # Given a fixed counted total and the processed count growing page by page, then the job ending
    processed, shown = 0, []
    for step in steps:
        processed += step
        shown.append(percent_complete(processed, total, count_complete=True, done=False))
    shown.append(percent_complete(processed, total, count_complete=True, done=True))
    # Then each figure is at least the one before
    figures = [percent for percent in shown if percent is not None]
    assert len(figures) == len(shown)
    assert all(later >= earlier for earlier, later in pairwise(figures))


def test_percent_examples() -> None:
    assert percent_complete(250, 1000, count_complete=True, done=False) == 25.0
    assert percent_complete(1000, 1000, count_complete=True, done=False) == PERCENT_CAP
    assert percent_complete(1200, 1000, count_complete=True, done=False) == PERCENT_CAP
    assert percent_complete(0, 0, count_complete=True, done=True) == 100.0
    assert percent_complete(10, 999, count_complete=False, done=False) is None


@given(
    processed=st.integers(min_value=1, max_value=10**9),
    total=counts,
    elapsed=st.floats(min_value=1e-3, max_value=1e7, allow_nan=False),
)
def test_eta_is_what_is_left_at_the_rate_so_far(processed: int, total: int, elapsed: float) -> None:
    eta = eta_seconds(processed, total, elapsed, done=False)
    assert eta is not None
    assert eta >= 0
    assert eta == pytest.approx(max(total - processed, 0) * elapsed / processed)


@given(
    total=st.integers(min_value=1, max_value=10**6),
    rate=st.floats(min_value=0.1, max_value=1e4),
    fractions=st.lists(st.floats(min_value=0.01, max_value=1.0), min_size=2, max_size=20),
)
def test_at_a_steady_rate_the_eta_only_shrinks(total: int, rate: float, fractions: list[float]) -> None:
    moments = sorted(fractions)
    etas: list[float] = []
    for fraction in moments:
        processed = max(1, int(total * fraction))
        eta = eta_seconds(processed, total, processed / rate, done=False)
        assert eta is not None
        etas.append(eta)
    assert all(later <= earlier * (1 + 1e-9) + 1e-9 for earlier, later in pairwise(etas))


def test_eta_is_unknown_before_the_total_or_any_progress_and_zero_when_done() -> None:
    assert eta_seconds(10, None, 5.0, done=False) is None
    assert eta_seconds(0, 100, 5.0, done=False) is None
    assert eta_seconds(10, 100, 0.0, done=False) is None
    assert eta_seconds(10, 100, 5.0, done=True) == 0.0


# ---- a job's progress as pages are recorded ---------------------------------------------------------


def _result(job: BackfillJob, sequence: int, listed: int, counted: int, *, complete: bool, done: bool) -> PageResult:
    return PageResult(
        job_id=job.job_id,
        rule_id=job.rule_id,
        plan=job.plan,
        sequence=sequence,
        counts=PageCounts(listed=listed, copied=listed, bytes_listed=listed, bytes_copied=listed),
        cursor=ListingCursor(prefix_index=1 if done else 0, after=None if done else f"k{sequence}"),
        done=done,
        count=CountProgress(objects=counted, bytes=counted, complete=complete),
        elapsed_seconds=1.0,
    )


@given(
    pages=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=25),
    extra=st.integers(min_value=0, max_value=3000),
    count_after=st.integers(min_value=0, max_value=25),
    retries=st.lists(st.integers(min_value=0, max_value=24), max_size=5),
)
def test_a_jobs_percentage_never_goes_backwards_nor_above_100(
    pages: list[int], extra: int, count_after: int, retries: list[int]
) -> None:
    # Given pages recorded in order (some delivered twice, as a retried step is), a count that completes
    # part way, and objects written meanwhile that the count missed (``extra`` fewer counted)
    job = BackfillJob.start(make_rule(created_at=T0), at=T0, page_size=1000)
    total = max(sum(pages) - extra, 0)
    shown: list[float] = []
    for sequence, listed in enumerate(pages, start=1):
        complete = sequence >= count_after
        done = sequence == len(pages)
        result = _result(job, sequence, listed, total if complete else 0, complete=complete, done=done)
        job = job.with_page(result, T0 + timedelta(seconds=sequence))
        if sequence - 1 in retries:
            job = job.with_page(result, T0)  # the same page again: no change
        percent = job.progress().percent
        if percent is not None:
            shown.append(percent)
    # Then the figures rise monotonically within 0..100 and the job ends at 100 with every object counted once
    assert shown == sorted(shown)
    assert all(0.0 <= percent <= 100.0 for percent in shown)
    assert shown[-1] == 100.0
    assert job.totals.listed == sum(pages)
    assert job.pages == len(pages)


def test_a_page_that_skips_one_is_refused() -> None:
    job = BackfillJob.start(make_rule(created_at=T0), at=T0)
    with pytest.raises(BackfillJobConflictError, match="page 2 arrived, but only 0 are recorded"):
        job.with_page(_result(job, 2, 5, 0, complete=False, done=False), T0)


def test_a_finished_job_has_no_next_request() -> None:
    job = BackfillJob.start(make_rule(created_at=T0), at=T0)
    job = job.with_page(_result(job, 1, 5, 5, complete=True, done=True), T0)
    with pytest.raises(BackfillJobConflictError, match="no page left"):
        job.next_request()


def test_job_ids_sort_by_creation_time() -> None:
    moments = [T0 + timedelta(microseconds=n) for n in (0, 1, 999_999, 10**6, 86_400 * 10**6)]
    ids = [new_job_id(moment) for moment in moments]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
