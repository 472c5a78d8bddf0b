"""Starting, resuming and stepping backfill jobs: the workflow's side of the backfill (no AWS)."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crr.backfill.engine import BackfillEngine
from crr.backfill.fanout import initial_ranges
from crr.backfill.models import BackfillJob, BackfillRange, BackfillStatus, PageCounts, PageResult
from crr.backfill.ranges import KeyRange
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import (
    BackfillControl,
    BackfillPageRefusedError,
    BackfillStep,
    BackfillSteps,
    Claimed,
    ClaimStep,
    CopyPageStep,
    ExecutionInput,
    FailStep,
    FinishStep,
    JobOutcome,
    JobProgress,
    PlannedWork,
    PlanStep,
    ProgressStep,
    RecordedPage,
    RecordPageStep,
    RegisterStep,
    ReleaseStep,
    StartedBackfill,
)
from crr.errors import (
    BackfillPageError,
    BackfillRefusedError,
    RuleNotFoundError,
    StepError,
)
from crr.large_copy import LargeObjectSettings
from crr.replication import Replicator
from crr.rules import ReplicationRule, RuleStatus
from crr_cli.backfill_command import (
    BackfillInterruptedError,
    describe_job,
    describe_start,
    follow,
    progress_line,
    range_lines,
)
from tests.support.backfill_runner import prefix_requests
from tests.support.events import load_event
from tests.support.fakes import (
    FakeBackfillExecutions,
    FakeBackfillJobs,
    FakeFastCopier,
    FakeLedger,
    FakePageListing,
    FakeProgress,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
)
from tests.support.lambda_context import FakeLambdaContext
from tests.support.rules import make_rule

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SRC, DST = "src-bucket", "dst-bucket"


def control_with(*rules: ReplicationRule) -> tuple[BackfillControl, FakeBackfillJobs, FakeBackfillExecutions]:
    jobs, executions = FakeBackfillJobs(lambda: NOW), FakeBackfillExecutions()
    control = BackfillControl(jobs, FakeRules(*rules), executions, clock=lambda: NOW)
    return control, jobs, executions


def replace_job(jobs: FakeBackfillJobs, job: BackfillJob) -> None:
    """Put ``job`` in the store as it is (a job that got that far)."""
    jobs.jobs[(job.rule_id, job.job_id)] = job


# ---- starting and resuming ------------------------------------------------------------------------


def test_a_first_start_creates_a_job_and_an_execution_with_its_fan_out() -> None:
    # Given a rule without a backfill
    control, jobs, executions = control_with(make_rule())
    # When its backfill is started with 4 ranges at once and small pages
    started = control.start("r1", workers=4, page_size=50)
    # Then a job exists, and round 1 of its execution was started with its workers and their step share
    assert not started.resumed
    assert not started.already_running
    [(name, document)] = executions.started.items()
    execution = ExecutionInput.model_validate_json(document)
    assert (execution.job, execution.workers, execution.steps_per_worker, execution.round) == (
        started.job.ref,
        4,
        250,
        1,
    )
    assert name == f"{started.job.job_id}-r1"
    stored = jobs.latest("r1")
    assert stored is not None
    assert (stored.execution_arn, stored.workers, stored.page_size, stored.planned) == (
        started.execution_arn,
        4,
        50,
        False,
    )


def test_a_start_while_the_job_runs_starts_nothing() -> None:
    control, _, executions = control_with(make_rule())
    first = control.start("r1")
    # When the backfill is started again while its execution runs
    again = control.start("r1")
    # Then the running job is returned and no second execution exists
    assert again.already_running
    assert again.job.job_id == first.job.job_id
    assert len(executions.started) == 1


def test_a_failed_job_resumes_in_a_fresh_round_with_the_fan_out_asked_for_now() -> None:
    # Given a job whose third execution failed with ranges still open
    rule = make_rule()
    control, jobs, executions = control_with(rule)
    first = control.start("r1", workers=2)
    third = first.job.execution_arn.replace("-r1", "-r3")  # type: ignore[union-attr]
    executions.status_of[third.rsplit(":", 1)[1]] = "FAILED"
    replace_job(
        jobs,
        first.job.model_copy(
            update={"status": BackfillStatus.FAILED, "execution_arn": third, "ranges_made": 3, "ranges_open": 2}
        ),
    )
    # When it is started again with 6 workers
    resumed = control.start("r1", workers=6)
    # Then the same job goes on in round 4 (a name no execution of it had), with 6 workers
    assert resumed.resumed
    assert resumed.job.job_id == first.job.job_id
    name, document = list(executions.started.items())[-1]
    assert name == f"{first.job.job_id}-r4"
    assert (ExecutionInput.model_validate_json(document).round, resumed.job.workers) == (4, 6)
    assert resumed.job.status is BackfillStatus.RUNNING


def test_a_finished_job_or_a_changed_rule_gets_a_new_job() -> None:
    rule = make_rule("a/")
    control, jobs, _ = control_with(rule)
    first = control.start("r1")
    finished = {"ranges_made": 2, "ranges_open": 0}
    replace_job(jobs, first.job.model_copy(update={**finished, "status": BackfillStatus.SUCCEEDED}))
    # When a succeeded job's rule is backfilled again, Then a new job lists everything again
    second = control.start("r1")
    assert second.job.job_id != first.job.job_id
    assert not second.resumed
    # And a failed job is resumed for the rule it was planned for, but not for the rule with other prefixes
    failed = first.job.model_copy(update={"job_id": "old", "status": BackfillStatus.FAILED})
    control, jobs, _ = control_with(rule)
    replace_job(jobs, failed)
    assert control.start("r1").job.job_id == "old"
    control, jobs, _ = control_with(make_rule("b/"))
    replace_job(jobs, failed)
    fresh = control.start("r1")
    assert fresh.job.job_id != "old"
    assert not fresh.resumed


def test_a_job_whose_ranges_are_all_done_but_not_finished_is_marked_done_and_not_resumed() -> None:
    # Given a job with every range done whose Finish step failed (so it was marked failed)
    control, jobs, _ = control_with(make_rule())
    first = control.start("r1")
    done = {"ranges_made": 2, "ranges_open": 0, "status": BackfillStatus.FAILED}
    replace_job(jobs, first.job.model_copy(update=done))
    # When the backfill is started again
    second = control.start("r1")
    # Then the finished job is marked succeeded, and a new job lists everything again
    assert jobs.get("r1", first.job.job_id).status is BackfillStatus.SUCCEEDED
    assert second.job.job_id != first.job.job_id


def test_an_unfinished_single_cursor_job_is_replaced_by_a_new_one_and_the_start_says_so() -> None:
    # Given an unfinished job stored by the single-cursor backfill
    control, jobs, _ = control_with(make_rule())
    old = BackfillJob.start(make_rule(), at=NOW - timedelta(days=1), job_id="old").model_copy(
        update={"legacy": True, "ranges_made": 1, "ranges_open": 1, "status": BackfillStatus.FAILED}
    )
    replace_job(jobs, old)
    # When the backfill is started
    started = control.start("r1")
    # Then a new job starts over every object, and the result names the job it replaced
    assert (started.resumed, started.replaced) == (False, "old")
    assert started.job.job_id != "old"
    assert not started.job.legacy


def test_an_unknown_rule_is_refused() -> None:
    control, _, _ = control_with(make_rule())
    with pytest.raises(RuleNotFoundError):
        control.start("nope")


def test_a_paused_rule_is_refused_before_anything_starts() -> None:
    # Given a paused rule
    control, jobs, executions = control_with(make_rule().model_copy(update={"status": RuleStatus.PAUSED}))
    # When its backfill is started, Then it is refused with the way out, and nothing was created
    with pytest.raises(BackfillRefusedError, match="crr rules resume r1"):
        control.start("r1")
    assert jobs.latest("r1") is None
    assert executions.started == {}


# ---- the steps ------------------------------------------------------------------------------------


def steps_for(rule: ReplicationRule, s3: FakeS3) -> tuple[BackfillSteps, FakeBackfillJobs]:
    jobs = FakeBackfillJobs(lambda: NOW)
    engine = BackfillEngine(
        FakePageListing(s3),
        FakeFastCopier(s3),
        FakeLedger(),
        lambda rule, key: pytest.fail(f"no reconcile expected for {key}"),
        FakeReplicationQueue(),
        concurrency=1,
        clock=lambda: NOW,
    )
    return BackfillSteps(engine, jobs, FakeRules(rule), clock=lambda: NOW), jobs


def bucket_with(*keys: str) -> FakeS3:
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    for key in keys:
        s3.put(SRC, key, b"x")
    return s3


def planned_job(steps: BackfillSteps, jobs: FakeBackfillJobs, rule: ReplicationRule, **settings: Any) -> BackfillJob:
    """A started job whose Register and Plan steps ran (workers: ``settings['workers']``, default 2)."""
    job = BackfillJob.start(rule, at=NOW, **settings)
    jobs.create(job)
    steps.run(RegisterStep(action="register", job=job.ref, execution_arn=EXECUTION))
    steps.run(PlanStep(action="plan", job=job.ref, workers=job.workers, steps_per_worker=10, execution_arn=EXECUTION))
    return jobs.get(job.rule_id, job.job_id)


EXECUTION = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r1"
WORKER = f"{EXECUTION}#0"


def first_page_copied(steps: BackfillSteps, job: BackfillJob) -> PageResult:
    """The page a job's only worker claims first, copied (not recorded yet)."""
    claimed = steps.run(ClaimStep(action="claim", job=job.ref, worker=WORKER, workers=1))
    assert isinstance(claimed, Claimed)
    assert claimed.request is not None
    result = steps.run(CopyPageStep(action="copy_page", request=claimed.request))
    assert isinstance(result, PageResult)
    return result


def test_the_steps_run_a_job_to_its_end_as_the_state_machine_chains_them() -> None:
    # Given 7 source objects in two prefixes and a job of pages of 3 with one worker
    s3 = bucket_with(*[f"a/{n}" for n in range(5)], "b/0", "b/1")
    rule = make_rule("a/", "b/")
    steps, jobs = steps_for(rule, s3)
    job = planned_job(steps, jobs, rule, page_size=3, workers=1)
    # When the worker claims, copies and records until nothing is open
    pages = 0
    while True:
        claimed = steps.run(ClaimStep(action="claim", job=job.ref, worker=WORKER, workers=1))
        assert isinstance(claimed, Claimed)
        if claimed.finished:
            break
        request = claimed.request
        while request is not None:
            result = steps.run(CopyPageStep(action="copy_page", request=request))
            recorded = steps.run(
                RecordPageStep.model_validate(
                    {"action": "record_page", "result": result.model_dump(), "worker": WORKER, "workers": 1}
                )
            )
            assert isinstance(recorded, RecordedPage)
            pages += 1
            assert recorded.range_done is (recorded.next_request is None)
            request = recorded.next_request
    progress = steps.run(ProgressStep(action="progress", job=job.ref))
    finished = steps.run(FinishStep(action="finish", job=job.ref))
    # Then every object was copied, the job is done and succeeded, each range named its execution's worker
    assert sorted(s3.keys(DST)) == sorted(s3.keys(SRC))
    assert progress == JobProgress(done=True, ranges_open=0)
    assert isinstance(finished, JobOutcome)
    assert finished.status is BackfillStatus.SUCCEEDED
    stored = jobs.get("r1", job.job_id)
    assert (stored.totals.copied, stored.pages, stored.execution_arn) == (7, pages, EXECUTION)


def test_the_plan_makes_one_range_per_prefix_divided_by_probes_and_one_map_item_per_worker() -> None:
    # Given one prefix holding keys spread over the key space, and a job of 4 workers
    s3 = bucket_with(*[f"d/{letter}{n}" for letter in "bhmqx" for n in range(3)])
    rule = make_rule("d/")
    steps, jobs = steps_for(rule, s3)
    job = BackfillJob.start(rule, at=NOW, workers=4)
    jobs.create(job)
    # When the plan step runs (twice, as a retried step would)
    step = PlanStep(action="plan", job=job.ref, workers=4, steps_per_worker=250, execution_arn=EXECUTION)
    planned = steps.run(step)
    ranges = jobs.ranges("r1", job.job_id)
    again = steps.run(step)
    # Then the prefix was divided into 4 ranges, each holding keys, covering it without overlap
    assert isinstance(planned, PlannedWork)
    assert len(ranges) == 4
    assert ranges[0].after is None
    assert ranges[-1].until is None
    assert all(left.until == right.after for left, right in itertools.pairwise(ranges))
    assert all(any(item.key_range().contains(key) for key in s3.keys(SRC)) for item in ranges)
    # And a worker item per worker, each with its own token of this execution
    assert [slot.worker for slot in planned.workers] == [f"{EXECUTION}#{index}" for index in range(4)]
    assert {(slot.workers, slot.steps_per_worker, slot.job) for slot in planned.workers} == {(4, 250, job.ref)}
    # And the retried plan kept the ranges it made the first time
    assert again == planned
    assert jobs.ranges("r1", job.job_id) == ranges
    assert jobs.get("r1", job.job_id).ranges_open == 4


def test_a_plan_asking_for_more_workers_than_the_stack_allows_gets_the_stacks_maximum() -> None:
    rule = make_rule()
    steps, jobs = steps_for(rule, bucket_with("k"))
    job = BackfillJob.start(rule, at=NOW, workers=40)
    jobs.create(job)
    planned = replace(steps, max_workers=16).run(
        PlanStep(action="plan", job=job.ref, workers=40, steps_per_worker=25, execution_arn=EXECUTION)
    )
    assert isinstance(planned, PlannedWork)
    assert len(planned.workers) == 16
    assert jobs.get("r1", job.job_id).workers == 16


def test_a_claim_takes_the_workers_own_range_then_a_free_one_then_a_stale_one_and_waits_when_none() -> None:
    # Given a job of three ranges (three prefixes): one free, one held by a worker of an execution that
    # is gone, one held by another worker of this execution
    rule = make_rule("a/", "b/", "c/")
    steps, jobs = steps_for(rule, bucket_with("a/1", "b/1", "c/1"))
    job = planned_job(steps, jobs, rule, workers=3)
    first, second, third = jobs.ranges("r1", job.job_id)
    gone = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r0#2"
    assert jobs.claim("r1", job.job_id, first.range_id, gone, None) is not None
    assert jobs.claim("r1", job.job_id, third.range_id, f"{EXECUTION}#1", None) is not None

    def claim() -> Claimed:
        claimed = steps.run(ClaimStep(action="claim", job=job.ref, worker=WORKER, workers=3))
        assert isinstance(claimed, Claimed)
        return claimed

    # When this worker claims, Then it gets the free range, and claiming again (a retried step) the same
    taken = claim()
    assert (taken.request is not None and taken.request.range_id, taken.finished) == (second.range_id, False)
    assert claim().request == taken.request
    # And once that range is done, the range of the stale claim
    jobs.stored_ranges[("r1", job.job_id)][second.range_id] = second.model_copy(update={"done": True})
    stale = claim()
    assert stale.request is not None
    assert stale.request.range_id == first.range_id
    # And with the last open range held by a live worker of this execution, nothing: wait, not finished
    jobs.stored_ranges[("r1", job.job_id)][first.range_id] = first.model_copy(update={"done": True})
    assert claim() == Claimed(request=None, finished=False)
    # And with none open, finished
    jobs.stored_ranges[("r1", job.job_id)][third.range_id] = third.model_copy(update={"done": True})
    assert claim() == Claimed(request=None, finished=True)


def test_a_full_page_splits_its_range_at_keys_counted_ahead_when_the_job_wants_more_ranges() -> None:
    # Given one prefix of 40 keys, a job of 2 workers (so it wants 4 open ranges), pages of 4 counted 4 ahead
    s3 = bucket_with(*[f"k{n:02d}" for n in range(40)])
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    job = planned_job(steps, jobs, rule, workers=1, page_size=4, count_pages=4)
    claimed = steps.run(ClaimStep(action="claim", job=job.ref, worker=WORKER, workers=2))
    assert isinstance(claimed, Claimed)
    assert claimed.request is not None
    assert claimed.request.probe  # one open range, four wanted: probe for a boundary
    # When its first page is copied and recorded
    result = steps.run(CopyPageStep(action="copy_page", request=claimed.request))
    assert isinstance(result, PageResult)
    recorded = steps.run(RecordPageStep(action="record_page", result=result, worker=WORKER, workers=2))
    # Then the rest of the range was cut into 4 pieces at keys known ahead; the worker keeps the first
    assert isinstance(recorded, RecordedPage)
    assert recorded.next_request is not None
    ranges = jobs.ranges("r1", job.job_id)
    assert len(ranges) == 4
    pieces = sorted((item.after or "", item.until or "\uffff") for item in ranges)
    assert pieces[0][0] == ""
    assert all(left[1] == right[0] for left, right in itertools.pairwise(pieces))
    assert recorded.next_request.until == ranges[0].until
    assert recorded.next_request.cursor == "k03"
    # And the count already listed up to k19 travelled with the pieces: those behind it are counted
    counted = jobs.get("r1", job.job_id)
    assert (counted.counted, counted.ranges_open, counted.ranges_made) == (20, 4, 4)
    behind = [item for item in ranges if item.until is not None and item.until <= "k19"]
    assert behind
    assert all(item.count_complete for item in behind)
    assert counted.ranges_uncounted == sum(not item.count_complete for item in ranges)


def test_a_retried_record_step_counts_the_page_once() -> None:
    s3 = bucket_with(*[f"k{n}" for n in range(6)])
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    job = planned_job(steps, jobs, rule, workers=1, page_size=2)
    result = first_page_copied(steps, job)
    record = RecordPageStep(action="record_page", result=result, worker=WORKER, workers=1)
    # When the record step runs twice (a retry after a lost answer)
    first = steps.run(record)
    second = steps.run(record)
    # Then the second answers as the first, and the page counts once
    assert first == second
    assert jobs.get("r1", job.job_id).totals.listed == 2
    assert len(jobs.recorded) == 1


def test_a_worker_that_lost_its_range_records_nothing_and_claims_another() -> None:
    s3 = bucket_with("k1", "k2", "k3")
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    job = planned_job(steps, jobs, rule, workers=1, page_size=1)
    result = first_page_copied(steps, job)
    # Given a worker of a newer execution took the range over meanwhile
    newer = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r2#0"
    assert jobs.claim("r1", job.job_id, result.range_id, newer, WORKER) is not None
    # When the old worker records its page
    recorded = steps.run(RecordPageStep(action="record_page", result=result, worker=WORKER, workers=1))
    # Then it is told to claim another range, and nothing of its page is counted (the holder lists it again)
    assert recorded == RecordedPage(range_done=True, next_request=None)
    assert jobs.get("r1", job.job_id).totals.listed == 0
    assert jobs.ranges("r1", job.job_id)[0].claim == newer


def test_a_release_drops_the_workers_claims_so_the_next_execution_takes_them_at_their_cursor() -> None:
    s3 = bucket_with(*[f"k{n}" for n in range(6)])
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    job = planned_job(steps, jobs, rule, workers=1, page_size=2)
    result = first_page_copied(steps, job)
    steps.run(RecordPageStep(action="record_page", result=result, worker=WORKER, workers=1))
    # When the worker reaches its step quota and releases
    outcome = steps.run(ReleaseStep(action="release", job=job.ref, worker=WORKER))
    # Then it holds nothing, the job still runs, and another worker claims the range where it stands
    assert isinstance(outcome, JobOutcome)
    assert outcome.status is BackfillStatus.RUNNING
    assert all(item.claim is None for item in jobs.ranges("r1", job.job_id))
    released = jobs.ranges("r1", job.job_id)[0]
    assert (released.cursor, released.pages, released.claim) == ("k1", 1, None)
    for index in range(len(jobs.ranges("r1", job.job_id))):
        other = steps.run(ClaimStep(action="claim", job=job.ref, worker=f"{EXECUTION}#{index + 1}", workers=1))
        assert isinstance(other, Claimed)
        assert other.request is not None
        if other.request.range_id == released.range_id:
            assert (other.request.cursor, other.request.sequence) == ("k1", 2)
            break
    else:
        pytest.fail("nobody took the released range")


def test_a_page_step_copies_only_what_fits_half_its_time_at_the_assumed_rate() -> None:
    # Given 10 objects of 100 bytes, a step told copies run at 100 bytes/s, and 7 s left
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    for n in range(10):
        s3.put(SRC, f"k{n}", b"x" * 100)
    rule = make_rule()
    steps, _jobs = steps_for(rule, s3)
    budgeted = replace(steps, copy_bytes_per_second=100.0)
    request = prefix_requests(rule)[0]
    # When one page is copied
    result = budgeted.run(CopyPageStep(action="copy_page", request=request), remaining_seconds=lambda: 7.0)
    # Then it holds the 350 bytes that copy in half of those 7 s: three objects, and the job goes on
    assert isinstance(result, PageResult)
    assert (result.counts.copied, result.done) == (3, False)


def test_a_denied_page_is_refused_under_a_name_the_state_machine_does_not_retry() -> None:
    rule = make_rule()
    s3 = FakeS3()
    steps, jobs = steps_for(rule, s3)

    class DeniedEngine:
        def copy_page(self, rule: ReplicationRule, request: object, *, max_bytes: int | None = None) -> None:
            raise BackfillPageError("r1", "j", 1, "ListObjectsV2 denied", "AccessDenied")

    denied = BackfillSteps(DeniedEngine(), jobs, steps.rules, clock=lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(BackfillPageRefusedError):
        denied.run(CopyPageStep(action="copy_page", request=prefix_requests(rule)[0]))


def test_a_recorded_failure_keeps_the_error_and_its_message() -> None:
    rule = make_rule()
    steps, jobs = steps_for(rule, FakeS3())
    job = BackfillJob.start(rule, at=NOW)
    jobs.create(job)
    cause = json.dumps({"errorType": "BackfillPageRefusedError", "errorMessage": "ListObjectsV2 denied"})
    # When the workflow records a failure caught from a step
    error = StepError.model_validate({"Error": "BackfillPageRefusedError", "Cause": cause})
    steps.run(FailStep(action="fail", job=job.ref, error=error))
    # Then the job says why, in words
    failed = jobs.get("r1", job.job_id)
    assert failed.status is BackfillStatus.FAILED
    assert failed.failure_reason == "BackfillPageRefusedError: ListObjectsV2 denied"


def test_every_step_payload_of_the_sample_events_parses_as_its_step() -> None:
    for name, action in [
        ("backfill-plan", "plan"),
        ("backfill-claim", "claim"),
        ("backfill-copy-page", "copy_page"),
        ("backfill-record-page", "record_page"),
        ("backfill-fail", "fail"),
    ]:
        step = BackfillStep.model_validate(load_event(f"stepfunctions/{name}")).root
        assert step.action == action


# ---- following a job ------------------------------------------------------------------------------


def running_job(rule: ReplicationRule, processed: int, counted: int | None) -> BackfillJob:
    job = BackfillJob.start(rule, at=NOW, job_id="j1", workers=1)
    return job.model_copy(
        update={
            "pages": 2,
            "totals": PageCounts(listed=processed, copied=processed, bytes_copied=processed * 1024),
            "counted": counted or 0,
            "ranges_made": 1,
            "ranges_open": 1,
            "ranges_uncounted": 0 if counted is not None else 1,
            "active_seconds": 2.0,
            "execution_arn": "arn:aws:states:us-west-1:1:execution:crr-backfill:j1-r1",
        }
    )


def test_the_progress_line_shows_a_bar_percent_rate_and_eta_once_counted() -> None:
    line = progress_line(running_job(make_rule(), processed=400, counted=1000))
    assert line.startswith("[############..................]  40.0%  400/1,000 objects  400.0 KiB  200/s  ETA 3.0s")
    assert progress_line(running_job(make_rule(), processed=400, counted=None)).startswith(
        "400 objects (counting: 0 so far)"
    )


def test_following_stops_when_the_job_ends_and_says_so_when_no_execution_runs_it() -> None:
    rule = make_rule()
    control, jobs, executions = control_with(rule)
    job = running_job(rule, processed=10, counted=20)
    jobs.create(job)
    ticks = itertools.count()
    # Given a job whose execution was stopped and nothing took over
    executions.status_of["j1-r1"] = "ABORTED"
    out = io.StringIO()
    # When it is followed, Then after the hand-over grace it is reported interrupted
    with pytest.raises(BackfillInterruptedError, match="resumes it"):
        follow(control, "r1", out, monotonic=lambda: float(next(ticks)) * 5, sleep=lambda _: None)
    # And a job that succeeds ends the following with its last line
    replace_job(jobs, job.model_copy(update={"status": BackfillStatus.SUCCEEDED, "ranges_open": 0}))
    finished = follow(control, "r1", out, sleep=lambda _: None)
    assert finished.status is BackfillStatus.SUCCEEDED
    assert out.getvalue().splitlines()[-1].startswith("[##############################] 100.0%")


def test_a_slow_jobs_eta_reads_in_days_and_hours() -> None:
    job = running_job(make_rule(), processed=10, counted=100_000).model_copy(
        update={"active_seconds": timedelta(minutes=1).total_seconds()}
    )
    assert "ETA 6d22h" in progress_line(job)


def test_an_object_too_large_for_the_page_steps_time_goes_to_the_large_copy_workflow() -> None:
    # Given a source object uploaded in parts (the backfill hands it to the live path's reconcile) whose
    # copy would take 64 s at the assumed rate, and a page step with 20 s left
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    stored = s3.put(SRC, "big.bin", b"x" * 64)
    s3.buckets[SRC].history["big.bin"] = [replace(stored, etag=stored.etag.rstrip('"') + '-2"')]
    rule = make_rule()
    launched: list[str] = []

    class Launcher:
        def start(self, job: Any) -> None:
            launched.append(job.request.state.key)

    replicator = Replicator(
        FakeRules(rule),
        s3,
        FakeLedger(),
        FakeProgress(),
        large_objects=LargeObjectSettings(copy_bytes_per_second=1.0),
        large_copies=Launcher(),
    )
    jobs = FakeBackfillJobs(lambda: NOW)
    engine = BackfillEngine(
        FakePageListing(s3),
        FakeFastCopier(s3),
        FakeLedger(),
        reconciler(replicator),
        FakeReplicationQueue(),
        concurrency=1,
    )
    steps = BackfillSteps(engine, jobs, FakeRules(rule), clock=lambda: NOW, live_scope=replicator.invocation_scope)
    # When the page is copied with the step's remaining time
    result = steps.run(
        CopyPageStep(action="copy_page", request=prefix_requests(rule)[0]), remaining_seconds=lambda: 20.0
    )
    # Then the object was handed to the workflow (counted as copied), not copied inside the step
    assert launched == ["big.bin"]
    assert isinstance(result, PageResult)
    assert result.counts.copied == 1
    assert s3.current(DST, "big.bin") is None


def test_the_function_answers_a_claim_with_the_next_page_of_a_range_as_json() -> None:
    # Given the job the sample claim names, planned with one range per prefix
    from functions.backfill import handler

    event = load_event("stepfunctions/backfill-claim")
    rule = make_rule("photos/", "videos/", rule_id="demo")
    steps, jobs = steps_for(rule, bucket_with())
    job = BackfillJob.start(rule, at=NOW, job_id=event["job"]["job_id"]).model_copy(
        update={"plan": event["job"]["plan"]}
    )
    jobs.create(job)
    jobs.add_ranges("demo", job.job_id, initial_ranges("demo", job.job_id, [KeyRange("photos/"), KeyRange("videos/")]))
    # When the function is invoked with the claim step
    answer = handler.lambda_handler(event, FakeLambdaContext(), steps=steps)
    # Then it answers, in the step's result model, the first page of a range the worker now holds
    claimed = Claimed.model_validate(answer)
    assert claimed.finished is False
    assert claimed.request is not None
    assert (claimed.request.sequence, claimed.request.cursor, claimed.request.probe) == (1, None, True)
    held = [item for item in jobs.ranges("demo", job.job_id) if item.claim == event["worker"]]
    assert [item.range_id for item in held] == [claimed.request.range_id]


# ---- the CLI's words --------------------------------------------------------------------------------


def test_backfill_start_takes_ranges_within_the_inline_maps_limit_and_status_takes_a_ranges_flag() -> None:
    from crr_cli.main import build_parser

    parser = build_parser()
    start = parser.parse_args(["backfill", "start", "r1", "--ranges", "16"])
    assert (start.ranges, start.page_size, start.steps_per_worker) == (16, 1000, None)
    assert parser.parse_args(["backfill", "start", "r1"]).ranges == 8
    for refused in ("0", "41"):
        with pytest.raises(SystemExit):
            parser.parse_args(["backfill", "start", "r1", "--ranges", refused])
    assert parser.parse_args(["backfill", "status", "r1", "--ranges"]).ranges is True


def test_a_start_says_how_many_ranges_run_and_which_old_job_it_replaced() -> None:
    control, jobs, executions = control_with(make_rule())
    first = control.start("r1", workers=4)
    assert describe_start(first).startswith(f"backfill {first.job.job_id} of rule r1 started, 4 range(s) at once (")
    # Given the job failed with ranges open, When it is resumed, Then the start says where it stands
    for name in executions.started:
        executions.status_of[name] = "FAILED"
    replace_job(
        jobs,
        first.job.model_copy(update={"status": BackfillStatus.FAILED, "ranges_made": 9, "ranges_open": 5, "pages": 12}),
    )
    resumed = control.start("r1", workers=2)
    assert "resumed with 5 open range(s) after 12 page(s), 2 range(s) at once" in describe_start(resumed)
    # And a start that replaced a single-cursor job says the old one cannot be resumed
    replaced = StartedBackfill(first.job, "arn:x", resumed=False, already_running=False, replaced="old")
    assert "the unfinished single-cursor backfill old cannot be resumed" in describe_start(replaced)


def test_backfill_status_shows_the_aggregate_and_a_line_per_range_in_key_order() -> None:
    rule = make_rule("logs/")
    job = running_job(rule, processed=400, counted=1000).model_copy(update={"ranges_made": 3, "ranges_open": 2})
    text = describe_job(job)
    assert "ranges: 3 made, 2 open, 0 still counting; 1 at once" in text
    assert "pages 2; listed 400" in text
    worker = "arn:aws:states:us-west-1:1:execution:crr-backfill:j1-r2#3"
    ranges = [
        BackfillRange(rule_id="r1", job_id="j1", range_id="0001", prefix="logs/", after="logs/m", claim=worker),
        BackfillRange(
            rule_id="r1",
            job_id="j1",
            range_id="0000",
            prefix="logs/",
            until="logs/m",
            pages=4,
            done=True,
            count_complete=True,
            totals=PageCounts(listed=4000),
        ),
    ]
    assert range_lines(ranges) == [
        'range 0000 "logs/": (start, "logs/m"]  pages 4  listed 4,000  done',
        'range 0001 "logs/": ("logs/m", end]  pages 0  listed 0  open, counting  held by worker 3 of j1-r2',
    ]
