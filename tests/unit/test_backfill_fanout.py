"""The fanned-out backfill: the split and claim policy (pure), and whole jobs run by several workers over
random key sets, interrupted and resumed with other worker counts: every key copied exactly once, the
job's totals exact, its progress never going backwards."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crr.backfill.engine import BackfillEngine
from crr.backfill.fanout import (
    claim_order,
    count_state,
    initial_ranges,
    page_record,
    pieces_wanted,
    split_keys,
    wants_more_ranges,
    worker_token,
)
from crr.backfill.models import BackfillJob, BackfillProgress, BackfillRange, PageCounts, PageResult
from crr.backfill.ranges import KeyRange, utf8_order
from crr.backfill.workflow import BackfillSteps
from tests.support.backfill_runner import run_fanned_out
from tests.support.fakes import (
    FakeBackfillJobs,
    FakeFastCopier,
    FakeLedger,
    FakePageListing,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
)
from tests.support.rules import make_rule

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SRC, DST = "src-bucket", "dst-bucket"
EXECUTION = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r1"

# ASCII, a byte above 0x7F, high-BMP and astral characters (UTF-16 and UTF-8 order them differently).
TRICKY = "a/~\u00e9\uff5e\U0001f600"
characters = st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
suffixes = st.one_of(st.text(st.sampled_from(TRICKY), max_size=3), st.text(characters, max_size=5))


# ---- when and how much to split -------------------------------------------------------------------


def test_a_job_keeps_two_open_ranges_per_worker() -> None:
    # A job of 4 workers with 3 open ranges wants 5 more: the range split stays one of 6 pieces
    assert wants_more_ranges(3, 4)
    assert pieces_wanted(3, 4) == 6
    # With 8 open it has what it wants: no split (one piece)
    assert not wants_more_ranges(8, 4)
    assert pieces_wanted(8, 4) == pieces_wanted(20, 4) == 1


ordered_keys = st.lists(
    st.text(st.sampled_from("abcxyz\u00e9\U0001f600"), min_size=1, max_size=4), min_size=2, max_size=40, unique=True
).map(lambda found: sorted(found, key=utf8_order))


@given(data=st.data(), keys=ordered_keys)
def test_a_splits_pieces_share_out_the_count_so_every_key_is_counted_exactly_once(
    data: st.DataObject, keys: list[str]
) -> None:
    # Given a range's keys, its copy at one of them and its count at or past it (maybe complete), and
    # keys known ahead
    copy = data.draw(st.integers(min_value=0, max_value=len(keys) - 2), label="copy")
    count = data.draw(st.integers(min_value=copy, max_value=len(keys) - 1), label="count")
    complete = count == len(keys) - 1 and data.draw(st.booleans(), label="complete")
    ahead = data.draw(st.lists(st.sampled_from(keys[copy + 1 :]), max_size=8), label="ahead")
    result = PageResult(
        job_id="j",
        rule_id="r",
        plan="p",
        range_id="0000",
        sequence=3,
        counts=PageCounts(),
        cursor=keys[copy],
        done=False,
        count_cursor=keys[count],
        count_complete=complete,
        ahead=ahead,
        elapsed_seconds=1.0,
    )
    # When the page is recorded in a job that wants many more ranges
    page = page_record(result, "w#0", ranges_open=1, workers=8, at=T0)
    kept = KeyRange("", None, page.until)
    pieces: list[tuple[KeyRange, str | None, str | None, bool]] = [
        (kept, keys[copy], page.count_cursor, page.count_complete)
    ]
    pieces += [(item.key_range(), None, item.count_cursor, item.count_complete) for item in page.new_ranges]
    # Then the pieces cover what was left, without overlap, and the kept piece goes on from the copy
    left = [key for key in keys[copy + 1 :]]
    assert (
        sorted(
            (
                key
                for key in keys
                for piece, *_ in pieces
                if piece.contains(key) and utf8_order(key) > utf8_order(keys[copy])
            ),
            key=utf8_order,
        )
        == left
    )
    cuts = split_keys(ahead, keys[count], pieces_wanted(1, 8))
    assert len(page.new_ranges) == max(0, min(pieces_wanted(1, 8), len(cuts)) - 1)
    # And what each piece will still count, with what was counted before, is every key exactly once
    counted_before = set(keys[: count + 1]) if not complete else set(keys)
    still: list[str] = []
    for piece, copy_at, count_at, done_counting in pieces:
        if done_counting:
            continue
        start = count_at if count_at is not None else (copy_at if copy_at is not None else piece.after)
        still += [key for key in keys if piece.contains(key) and (start is None or utf8_order(key) > utf8_order(start))]
        # a piece's count never lags its copy
        if copy_at is not None and count_at is not None:
            assert utf8_order(count_at) >= utf8_order(copy_at)
    assert len(still) == len(set(still))
    assert counted_before.isdisjoint(still)
    assert counted_before | set(still) | set(keys[: copy + 1]) == set(keys)
    # And the job's count of uncounted ranges moves by the pieces still counting, less the range itself
    assert page.uncounted == sum(not done for *_, done in pieces) - int(not complete)
    assert page.opened == len(page.new_ranges)


def test_a_range_is_cut_at_the_probed_key_first_so_the_unknown_part_is_halved() -> None:
    # Given counted pages ending at c1..c4 (the count cursor) and a probe that found p1, p2 past it
    ahead = ["c1", "c2", "c3", "c4", "p1", "p2"]
    # When the range is cut in two, Then at the probed key (the upper piece holds p2)
    assert split_keys(ahead, "c4", 2) == ["p1", "p2"]
    # And in four: two cuts among the counted pages, spread, then the probed one
    assert split_keys(ahead, "c4", 4) == ["c2", "c4", "p1", "p2"]
    # And without two probed keys, the counted pages' keys as they are
    assert split_keys(["c1", "c2", "p1"], "c2", 2) == ["c1", "c2", "p1"]


def test_a_piece_inherits_the_count_by_where_the_count_cursor_stands() -> None:
    # Behind the cursor: counted; the cursor inside: from it; beyond: from the piece's start
    assert count_state(KeyRange("", "b", "d"), "f", False) == (None, True)
    assert count_state(KeyRange("", "b", "f"), "d", False) == ("d", False)
    assert count_state(KeyRange("", "f", "h"), "d", False) == ("f", False)
    assert count_state(KeyRange("", "f", None), "d", True) == (None, True)


def test_a_worker_claims_its_own_range_then_free_ones_then_stale_ones_each_worker_starting_elsewhere() -> None:
    me = worker_token(EXECUTION, 1)
    gone = worker_token(EXECUTION.replace("-r1", "-r0"), 1)

    def item(range_id: str, after: str | None, claim: str | None = None, done: bool = False) -> BackfillRange:
        return BackfillRange(rule_id="r", job_id="j", range_id=range_id, after=after, claim=claim, done=done)

    ranges = [
        item("a", None),
        item("b", "b"),
        item("c", "c", claim=gone),
        item("d", "d", claim=worker_token(EXECUTION, 0)),  # a live worker's: never taken
        item("e", "e", done=True),
        item("f", "f", claim=me),
    ]
    # Then its own comes first, the free ones rotated by its index, then the stale one
    assert [found.range_id for found in claim_order(ranges, me)] == ["f", "b", "a", "c"]
    # And worker 0 tries the free ones from the first
    assert [found.range_id for found in claim_order(ranges, worker_token(EXECUTION, 0))][:3] == ["d", "a", "b"]


# ---- whole jobs over random key sets ---------------------------------------------------------------

RULE_PREFIXES = st.sampled_from([("",), ("logs/",), ("logs/", "other/"), ("a/", "logs/2026/11/25/", "z/")])
STEMS = ["", "logs/", "logs/2026/11/25/", "logs/2026/11/25/hour=10/a-stem-that-many-keys-share-", "other/", "a/", "z/"]
keys = st.builds(lambda stem, suffix: stem + suffix, st.sampled_from(STEMS), suffixes).filter(bool)


class Observed:
    """Progress seen after each recorded page, in the order the job was read."""

    def __init__(self) -> None:
        self.seen: list[BackfillProgress] = []

    def __call__(self, job: BackfillJob, _result: PageResult) -> None:
        self.seen.append(job.progress())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefixes=RULE_PREFIXES,
    bucket=st.sets(keys, max_size=70),
    page_size=st.sampled_from([1, 2, 3, 7, 1000]),
    count_pages=st.integers(min_value=0, max_value=3),
    first_workers=st.integers(min_value=1, max_value=5),
    quota=st.integers(min_value=1, max_value=4),
    then_workers=st.integers(min_value=1, max_value=5),
)
def test_a_fanned_out_job_interrupted_and_resumed_copies_every_key_exactly_once(
    prefixes: tuple[str, ...],
    bucket: set[str],
    page_size: int,
    count_pages: int,
    first_workers: int,
    quota: int,
    then_workers: int,
) -> None:
    # Given a source bucket of unicode keys sharing long stems, a rule over some prefixes of it
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    for key in bucket:
        s3.put(SRC, key, key.encode("utf-8"))
    rule = make_rule(*[prefix for prefix in prefixes if prefix], created_at=T0)
    wanted = {key for key in bucket if any(key.startswith(prefix) for prefix in prefixes)}
    copier = FakeFastCopier(s3)
    jobs = FakeBackfillJobs(lambda: T0)
    engine = BackfillEngine(
        FakePageListing(s3),
        copier,
        FakeLedger(),
        lambda rule, key: pytest.fail(f"no reconcile expected for {key}"),
        FakeReplicationQueue(),
        concurrency=2,
        clock=lambda: T0,
    )
    steps = BackfillSteps(engine, jobs, FakeRules(rule), clock=lambda: T0)
    job = BackfillJob.start(rule, at=T0, page_size=page_size, count_pages=count_pages, workers=first_workers)
    jobs.create(job)
    observed = Observed()
    # When the job runs with some workers until each has taken a few steps, then is resumed with others
    with engine:
        job = run_fanned_out(steps, job, workers=first_workers, steps_per_worker=quota, on_page=observed)
        rounds = 1
        while not job.done and rounds < 200:
            job = run_fanned_out(steps, job, workers=then_workers, steps_per_worker=quota * 3, on_page=observed)
            rounds += 1
    # Then every key under the prefixes was copied exactly once, and none outside
    assert sorted(copier.copied) == sorted(wanted)
    assert s3.keys(DST) == wanted
    # And the job's totals are exact: listed and counted once each, no range open
    assert (job.done, job.totals.listed, job.counted, job.ranges_open, job.ranges_uncounted) == (
        True,
        len(wanted),
        len(wanted),
        0,
        0,
    )
    # And its ranges, all done (so gone from the store), tile each prefix: every key in exactly one
    assert jobs.ranges(rule.rule_id, job.job_id) == []
    ranges = list(jobs.finished_ranges[(rule.rule_id, job.job_id)].values())
    for key in wanted:
        assert sum(item.key_range().contains(key) for item in ranges) == 1
    assert sum(item.totals.listed for item in ranges) == len(wanted)
    # And progress never went backwards between observations
    listed = [progress.processed for progress in observed.seen]
    assert listed == sorted(listed)
    percents = [progress.percent for progress in observed.seen if progress.percent is not None]
    assert all(later >= earlier for earlier, later in pairwise(percents))
    totals = {progress.total for progress in observed.seen if progress.total is not None}
    assert totals <= {len(wanted)}


def test_the_first_ranges_of_a_job_are_one_per_prefix_when_nothing_can_be_probed() -> None:
    made = initial_ranges("r", "j", [KeyRange("a/"), KeyRange("b/")])
    assert [(item.range_id, item.prefix, item.after, item.until) for item in made] == [
        ("0000", "a/", None, None),
        ("0001", "b/", None, None),
    ]
