"""Backfill progress: percent complete and ETA as pure functions, and a job's progress read from its item alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crr.backfill.models import (
    PERCENT_CAP,
    BackfillJob,
    PageCounts,
    eta_seconds,
    new_job_id,
    percent_complete,
)
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
    eta = eta_seconds(processed, total, processed / elapsed, done=False)
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
        eta = eta_seconds(processed, total, rate, done=False)
        assert eta is not None
        etas.append(eta)
    assert all(later <= earlier * (1 + 1e-9) + 1e-9 for earlier, later in pairwise(etas))


def test_eta_is_unknown_before_the_total_or_any_progress_and_zero_when_done() -> None:
    assert eta_seconds(10, None, 5.0, done=False) is None
    assert eta_seconds(0, 100, 5.0, done=False) is None
    assert eta_seconds(10, 100, None, done=False) is None
    assert eta_seconds(10, 100, 5.0, done=True) == 0.0


# ---- a job's progress, from its item alone ----------------------------------------------------------


def _job(**fields: object) -> BackfillJob:
    return BackfillJob.start(make_rule(created_at=T0), at=T0).model_copy(update=fields)


def test_the_rate_is_page_time_per_object_times_the_workers_that_can_run() -> None:
    # Given 8 workers that spent 100 s of page time in all listing 4,000 objects, 3 ranges still open
    job = _job(
        workers=8,
        totals=PageCounts(listed=4000),
        active_seconds=100.0,
        ranges_made=10,
        ranges_open=3,
        ranges_uncounted=0,
        counted=10_000,
    )
    progress = job.progress()
    # Then the rate counts 3 ranges at once (no more can run), and the ETA is what is left at that rate
    assert progress.objects_per_second == pytest.approx(40 * 3)
    assert progress.eta_seconds == pytest.approx(6000 / 120)
    assert (progress.percent, progress.total, progress.done) == (40.0, 10_000, False)
    # And with more ranges open than workers, the workers bound it
    assert job.model_copy(update={"ranges_open": 20}).progress().objects_per_second == pytest.approx(40 * 8)


def test_the_total_is_unknown_until_every_range_is_counted_and_done_needs_ranges() -> None:
    # A job not planned yet has no range: it is not done, and has no total
    unplanned = _job()
    assert (unplanned.done, unplanned.progress().total, unplanned.progress().percent) == (False, None, None)
    # A range still counting: counted so far, no total
    counting = _job(ranges_made=4, ranges_open=2, ranges_uncounted=1, counted=900, totals=PageCounts(listed=500))
    assert (counting.progress().total, counting.progress().counted_so_far, counting.progress().percent) == (
        None,
        900,
        None,
    )
    # Every range done: 100 %, ETA 0
    done = _job(ranges_made=4, ranges_open=0, ranges_uncounted=0, counted=900, totals=PageCounts(listed=900))
    assert (done.done, done.progress().percent, done.progress().eta_seconds) == (True, 100.0, 0.0)


@given(
    deltas=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=1000), st.booleans()),
        min_size=1,
        max_size=30,
    ),
)
def test_a_jobs_percentage_never_goes_backwards_as_its_counters_grow(deltas: list[tuple[int, int, bool]]) -> None:
    # Given a job's listed and counted totals that only grow (counted stops once every range is counted),
    # and ranges that finish one by one
    job = _job(ranges_made=len(deltas), ranges_open=len(deltas), ranges_uncounted=len(deltas), active_seconds=1.0)
    shown: list[float] = []
    for listed, counted, counted_a_range in deltas:
        uncounted = max(job.ranges_uncounted - int(counted_a_range), 0)
        job = job.model_copy(
            update={
                "totals": PageCounts(listed=job.totals.listed + listed),
                "counted": job.counted + (counted if job.ranges_uncounted else 0),
                "ranges_uncounted": uncounted,
                "ranges_open": job.ranges_open - 1,
            }
        )
        percent = job.progress().percent
        if percent is not None:
            shown.append(percent)
    # Then the figures rise monotonically within 0..100, and end at 100
    assert shown == sorted(shown)
    assert all(0.0 <= percent <= 100.0 for percent in shown)
    assert shown[-1] == 100.0


def test_job_ids_sort_by_creation_time() -> None:
    moments = [T0 + timedelta(microseconds=n) for n in (0, 1, 999_999, 10**6, 86_400 * 10**6)]
    ids = [new_job_id(moment) for moment in moments]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
