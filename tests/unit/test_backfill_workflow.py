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
from crr.backfill.models import BackfillJob, BackfillStatus, CountProgress, PageCounts, PageResult
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import (
    BackfillControl,
    BackfillPageRefusedError,
    BackfillStep,
    BackfillSteps,
    CopyPageStep,
    ExecutionInput,
    FailStep,
    RecordedPage,
    RecordPageStep,
    RegisterStep,
)
from crr.errors import BackfillPageError, BackfillRefusedError, RuleNotFoundError, StepError
from crr.large_copy import LargeObjectSettings
from crr.replication import Replicator
from crr.rules import ReplicationRule, RuleStatus
from crr_cli.backfill_command import BackfillInterruptedError, follow, progress_line
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


def test_a_first_start_creates_a_job_and_an_execution_for_its_first_page() -> None:
    # Given a rule without a backfill
    control, jobs, executions = control_with(make_rule())
    # When its backfill is started with small pages and few pages per execution
    started = control.start("r1", page_size=50, pages_per_execution=3)
    # Then a job exists, an execution was started with the request of page 1, and the job knows it
    assert not started.resumed
    assert not started.already_running
    [(name, document)] = executions.started.items()
    execution = ExecutionInput.model_validate_json(document)
    assert (execution.request.sequence, execution.request.page_size, execution.pages_per_execution) == (1, 50, 3)
    assert name == f"{started.job.job_id}-p1"
    stored = jobs.latest("r1")
    assert stored is not None
    assert stored.execution_arn == started.execution_arn


def test_a_start_while_the_job_runs_starts_nothing() -> None:
    control, _, executions = control_with(make_rule())
    first = control.start("r1")
    # When the backfill is started again while its execution runs
    again = control.start("r1")
    # Then the running job is returned and no second execution exists
    assert again.already_running
    assert again.job.job_id == first.job.job_id
    assert len(executions.started) == 1


def test_a_failed_job_resumes_at_the_page_after_its_last_recorded_one() -> None:
    # Given a job that recorded 4 pages, then failed, its execution gone
    rule = make_rule()
    control, jobs, executions = control_with(rule)
    first = control.start("r1")
    for name in executions.started:
        executions.status_of[name] = "FAILED"
    replace_job(jobs, first.job.model_copy(update={"pages": 4, "status": BackfillStatus.FAILED}))
    # When it is started again
    resumed = control.start("r1")
    # Then the same job continues at page 5 in a new execution
    assert resumed.resumed
    assert resumed.job.job_id == first.job.job_id
    last = ExecutionInput.model_validate_json(list(executions.started.values())[-1])
    assert last.request.sequence == 5
    assert resumed.job.status is BackfillStatus.RUNNING


def test_a_finished_job_or_a_changed_rule_gets_a_new_job() -> None:
    rule = make_rule("a/")
    control, jobs, _ = control_with(rule)
    first = control.start("r1")
    replace_job(jobs, first.job.model_copy(update={"done": True, "status": BackfillStatus.SUCCEEDED}))
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


def test_a_job_whose_last_page_was_recorded_but_not_finished_is_marked_done_and_not_resumed() -> None:
    # Given a job with every page recorded whose Finish step failed (so it was marked failed)
    control, jobs, _ = control_with(make_rule())
    first = control.start("r1")
    replace_job(jobs, first.job.model_copy(update={"done": True, "status": BackfillStatus.FAILED}))
    # When the backfill is started again
    second = control.start("r1")
    # Then the finished job is marked succeeded, and a new job lists everything again
    assert jobs.get("r1", first.job.job_id).status is BackfillStatus.SUCCEEDED
    assert second.job.job_id != first.job.job_id


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


def test_the_steps_run_a_job_to_its_end_as_the_state_machine_chains_them() -> None:
    # Given 7 source objects and a job of pages of 3
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    for n in range(7):
        s3.put(SRC, f"k{n}", b"x")
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    job = BackfillJob.start(rule, at=NOW, page_size=3)
    jobs.create(job)
    request = job.next_request()
    steps.run(RegisterStep(action="register", request=request, execution_arn="arn:exec"))
    # When each page is copied and recorded, the recorded page's request feeding the next copy
    pages = 0
    while True:
        result = steps.run(CopyPageStep(action="copy_page", request=request))
        recorded = steps.run(RecordPageStep.model_validate({"action": "record_page", "result": result.model_dump()}))
        assert isinstance(recorded, RecordedPage)
        pages += 1
        if recorded.done:
            break
        assert recorded.next_request is not None
        request = recorded.next_request
    # Then three pages copied every object and the job is done
    assert pages == 3
    assert sorted(s3.keys(DST)) == [f"k{n}" for n in range(7)]
    stored = jobs.get("r1", job.job_id)
    assert (stored.totals.copied, stored.execution_arn) == (7, "arn:exec")


def test_a_page_step_copies_only_what_fits_half_its_time_at_the_assumed_rate() -> None:
    # Given 10 objects of 100 bytes, a step told copies run at 100 bytes/s, and 7 s left
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    for n in range(10):
        s3.put(SRC, f"k{n}", b"x" * 100)
    rule = make_rule()
    steps, jobs = steps_for(rule, s3)
    budgeted = replace(steps, copy_bytes_per_second=100.0)
    job = BackfillJob.start(rule, at=NOW, page_size=1000)
    jobs.create(job)
    # When one page is copied
    result = budgeted.run(CopyPageStep(action="copy_page", request=job.next_request()), remaining_seconds=lambda: 7.0)
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
    job = BackfillJob.start(rule, at=NOW)
    jobs.create(job)
    with pytest.raises(BackfillPageRefusedError):
        denied.run(CopyPageStep(action="copy_page", request=job.next_request()))


def test_a_recorded_failure_keeps_the_error_and_its_message() -> None:
    rule = make_rule()
    steps, jobs = steps_for(rule, FakeS3())
    job = BackfillJob.start(rule, at=NOW)
    jobs.create(job)
    cause = json.dumps({"errorType": "BackfillPageRefusedError", "errorMessage": "ListObjectsV2 denied"})
    # When the workflow records a failure caught from a step
    error = StepError.model_validate({"Error": "BackfillPageRefusedError", "Cause": cause})
    steps.run(FailStep(action="fail", request=job.next_request(), error=error))
    # Then the job says why, in words
    failed = jobs.get("r1", job.job_id)
    assert failed.status is BackfillStatus.FAILED
    assert failed.failure_reason == "BackfillPageRefusedError: ListObjectsV2 denied"


def test_every_step_payload_of_the_sample_events_parses_as_its_step() -> None:
    for name, action in [
        ("backfill-copy-page", "copy_page"),
        ("backfill-record-page", "record_page"),
        ("backfill-fail", "fail"),
    ]:
        step = BackfillStep.model_validate(load_event(f"stepfunctions/{name}")).root
        assert step.action == action


# ---- following a job ------------------------------------------------------------------------------


def running_job(rule: ReplicationRule, processed: int, counted: int | None) -> BackfillJob:
    job = BackfillJob.start(rule, at=NOW, job_id="j1")
    count = CountProgress(objects=counted or 0, complete=counted is not None)
    return job.model_copy(
        update={
            "pages": 2,
            "totals": PageCounts(listed=processed, copied=processed, bytes_copied=processed * 1024),
            "count": count,
            "active_seconds": 2.0,
            "execution_arn": "arn:aws:states:us-west-1:1:execution:crr-backfill:j1-p1",
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
    executions.status_of["j1-p1"] = "ABORTED"
    out = io.StringIO()
    # When it is followed, Then after the hand-over grace it is reported interrupted
    with pytest.raises(BackfillInterruptedError, match="resumes it"):
        follow(control, "r1", out, monotonic=lambda: float(next(ticks)) * 5, sleep=lambda _: None)
    # And a job that succeeds ends the following with its last line
    replace_job(jobs, job.model_copy(update={"status": BackfillStatus.SUCCEEDED, "done": True}))
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
    job = BackfillJob.start(rule, at=NOW)
    jobs.create(job)
    # When the page is copied with the step's remaining time
    result = steps.run(CopyPageStep(action="copy_page", request=job.next_request()), remaining_seconds=lambda: 20.0)
    # Then the object was handed to the workflow (counted as copied), not copied inside the step
    assert launched == ["big.bin"]
    assert isinstance(result, PageResult)
    assert result.counts.copied == 1
    assert s3.current(DST, "big.bin") is None
