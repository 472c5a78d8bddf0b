"""The fanned-out backfill as a Step Functions workflow (statemachine/backfill.asl.json), and how jobs start.

    Register   the execution names itself in the job (so followers find it after a hand-over)
    Plan       the job's ranges, made the first time (one per listing prefix, divided by probes into up
               to W), and the W worker slots of the Map
    Work       an inline Map over the W slots (at most 40 at once, AWS's limit for an inline Map); each
               worker loops: Claim a range → CopyPage → RecordProgress (maybe splitting the range) → the
               same range's next page, or Claim another once it is done; an idle worker (no range free
               yet, ranges still open elsewhere) waits and claims again; after ``steps_per_worker`` steps
               it Releases its range and ends
    Progress   done → Finish; else ContinueAsNew: a fresh execution of the same machine goes on with
               the open ranges, before this one nears Step Functions' 25,000-event history limit
    any failure → RecordFailure (the job is marked failed with the reason) → Fail

The rules table is the truth: the job item (status, aggregate progress) and one item per range (bounds,
cursors, claim). So ``crr backfill start`` resumes an interrupted or failed job with every range from its
own cursor, ranges split while the job runs are taken by whichever worker is idle, and a retried step
is harmless (a page is recorded once per range sequence; copying a page again skips what the
destination already holds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from crr.backfill.budget import page_byte_budget
from crr.backfill.engine import BackfillEngine
from crr.backfill.fanout import claim_order, initial_ranges, page_record, wants_more_ranges, worker_token
from crr.backfill.inventory_pages import InventoryPages
from crr.backfill.models import (
    DEFAULT_COUNT_PAGES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    BackfillJob,
    BackfillRange,
    BackfillStatus,
    JobRef,
    PageRequest,
    PageResult,
    WorkKind,
    plan_digest,
)
from crr.errors import BackfillJobConflictError, BackfillPageError, BackfillRefusedError, CrrError, StepError
from crr.failures import PERMANENT_S3_CODES
from crr.ports.services import BackfillExecutions
from crr.ports.table import BackfillJobs, RuleReader

# Steps one execution's workers run in all before it continues as new: a step is about 6-8 history
# events, so 1000 steps keep an execution near 8,000 of its 25,000 events, leaving room for retries.
DEFAULT_STEPS_PER_EXECUTION = 1000
# The most workers the stack lets a job run (BACKFILL_MAX_RANGES), when not configured.
DEFAULT_MAX_WORKERS = 16
_ROUND = re.compile(r"-r(\d+)(?:-\d+)?$")


class BackfillPageRefusedError(CrrError):
    """A page failed for a reason no retry fixes (access denied, bucket missing)."""


class _Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExecutionInput(_Step):
    """What each execution of the backfill state machine starts with."""

    job: JobRef
    workers: int = Field(ge=1, le=MAX_WORKERS)
    steps_per_worker: int = Field(ge=1)
    round: int = Field(default=1, ge=1, description="this execution's number in the job's chain")


class RegisterStep(_Step):
    action: Literal["register"]
    job: JobRef
    execution_arn: str


class PlanStep(_Step):
    action: Literal["plan"]
    job: JobRef
    workers: int = Field(ge=1, le=MAX_WORKERS)
    steps_per_worker: int = Field(ge=1)
    execution_arn: str


class ClaimStep(_Step):
    action: Literal["claim"]
    job: JobRef
    worker: str = Field(min_length=1)
    workers: int = Field(ge=1, le=MAX_WORKERS)


class CopyPageStep(_Step):
    action: Literal["copy_page"]
    request: PageRequest


class RecordPageStep(_Step):
    action: Literal["record_page"]
    result: PageResult
    worker: str = Field(min_length=1)
    workers: int = Field(ge=1, le=MAX_WORKERS)


class ReleaseStep(_Step):
    action: Literal["release"]
    job: JobRef
    worker: str = Field(min_length=1)


class ProgressStep(_Step):
    action: Literal["progress"]
    job: JobRef


class FinishStep(_Step):
    action: Literal["finish"]
    job: JobRef


class FailStep(_Step):
    action: Literal["fail"]
    job: JobRef
    error: StepError


class WorkerSlot(_Step):
    """One item of the Map: the job, which worker this iteration is, and the job's fan-out."""

    job: JobRef
    worker: str
    workers: int
    steps_per_worker: int


class PlannedWork(_Step):
    workers: list[WorkerSlot]


class Claimed(_Step):
    """A claim's answer: the page to copy next of a range the worker now holds; or none, then either the
    job is ``finished`` (no range open) or ranges are still open elsewhere (wait, then claim again)."""

    request: PageRequest | None
    finished: bool


class RecordedPage(_Step):
    """After a page: whether this worker is done with its range (the range is done, or another worker
    holds it now), else the range's next page."""

    range_done: bool
    next_request: PageRequest | None


class JobProgress(_Step):
    done: bool
    ranges_open: int


class JobOutcome(_Step):
    job_id: str
    status: BackfillStatus


AnyStep = Annotated[
    RegisterStep
    | PlanStep
    | ClaimStep
    | CopyPageStep
    | RecordPageStep
    | ReleaseStep
    | ProgressStep
    | FinishStep
    | FailStep,
    Field(discriminator="action"),
]
StepResult = PageResult | PlannedWork | Claimed | RecordedPage | JobProgress | JobOutcome

# What each step takes and gives back (the state machine's contract, checked against its ASL by a test).
STEP_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "register": (RegisterStep, JobOutcome),
    "plan": (PlanStep, PlannedWork),
    "claim": (ClaimStep, Claimed),
    "copy_page": (CopyPageStep, PageResult),
    "record_page": (RecordPageStep, RecordedPage),
    "release": (ReleaseStep, JobOutcome),
    "progress": (ProgressStep, JobProgress),
    "finish": (FinishStep, JobOutcome),
    "fail": (FailStep, JobOutcome),
}


class BackfillStep(RootModel[AnyStep]):
    """The payload each task state of statemachine/backfill.asl.json sends the BackfillFunction."""

    def job_names(self) -> tuple[str, str]:
        """The rule and job the step is about (for the logs)."""
        step = self.root
        match step:
            case CopyPageStep():
                return step.request.rule_id, step.request.job_id
            case RecordPageStep():
                return step.result.rule_id, step.result.job_id
            case _:
                return step.job.rule_id, step.job.job_id


@dataclass(frozen=True)
class BackfillSteps:
    """The workflow's steps. Each raises domain errors; the state machine retries or records the failure."""

    engine: BackfillEngine
    jobs: BackfillJobs
    rules: RuleReader
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # The live path's invocation scope (``Replicator.invocation_scope``) around a page: keys the page
    # hands to ``reconcile`` get the invocation's time budget (so one too large for it goes to the
    # large-copy workflow), and their progress is flushed like the live path's.
    live_scope: Callable[[Callable[[], float]], AbstractContextManager[object]] = lambda _: nullcontext()
    # Copies running at once in a page: each may plan on this share of the invocation's time.
    copy_share: int = 1
    # The step's assumed copy rate (the live path's CopyBytesPerSecond): a page holds at most what copies
    # in half the invocation's time at this rate (None: no byte budget).
    copy_bytes_per_second: float | None = None
    # The most workers a job may run at once here (the stack's BackfillMaxRanges): a plan asking for
    # more gets this many.
    max_workers: int = DEFAULT_MAX_WORKERS
    # Jobs driven by an S3 Inventory report: their work items are its data files (None: no such job runs).
    inventory: InventoryPages | None = None

    def run(
        self,
        step: RegisterStep
        | PlanStep
        | ClaimStep
        | CopyPageStep
        | RecordPageStep
        | ReleaseStep
        | ProgressStep
        | FinishStep
        | FailStep,
        remaining_seconds: Callable[[], float] = lambda: math.inf,
    ) -> StepResult:
        result: StepResult
        match step:
            case RegisterStep():
                # Each execution names itself in the job, so a follower finds the one running it (after a
                # continue-as-new too).
                result = self._outcome(
                    self.jobs.set_execution(step.job.rule_id, step.job.job_id, step.execution_arn, self.clock())
                )
            case PlanStep():
                result = self.plan(step)
            case ClaimStep():
                result = self.claim(step.job, step.worker, step.workers)
            case CopyPageStep():
                result = self.copy_page(step.request, remaining_seconds)
            case RecordPageStep():
                result = self.record_page(step.result, step.worker, step.workers)
            case ReleaseStep():
                self.jobs.release(step.job.rule_id, step.job.job_id, step.worker)
                result = self._outcome(self.jobs.get(step.job.rule_id, step.job.job_id))
            case ProgressStep():
                job = self.jobs.get(step.job.rule_id, step.job.job_id)
                result = JobProgress(done=job.done, ranges_open=job.ranges_open)
            case FinishStep():
                result = self._outcome(self.jobs.mark_succeeded(step.job.rule_id, step.job.job_id, self.clock()))
            case FailStep():
                reason = f"{step.error.error}: {step.error.message}"[:1000]
                result = self._outcome(self.jobs.mark_failed(step.job.rule_id, step.job.job_id, reason, self.clock()))
        return result

    @staticmethod
    def _outcome(job: BackfillJob) -> JobOutcome:
        return JobOutcome(job_id=job.job_id, status=job.status)

    def plan(self, step: PlanStep) -> PlannedWork:
        """The job's ranges, made once: one per listing prefix, divided by probes into up to the job's
        workers; a retried plan or a resumed job keeps the ranges stored. Then one Map item per worker.

        Raises BackfillRefusedError (paused or changed rule), BackfillPageError (source not listable)."""
        workers = min(step.workers, self.max_workers)
        job = self.jobs.get(step.job.rule_id, step.job.job_id)
        if not job.planned and job.inventory is not None:
            rule = self.rules.get(job.rule_id)
            self.engine.check(rule, job.ref)
            job = self.jobs.add_ranges(job.rule_id, job.job_id, self._inventory().plan_ranges(rule, job))
        elif not job.planned:
            pieces = self.engine.plan_ranges(self.rules.get(job.rule_id), job.ref, workers)
            job = self.jobs.add_ranges(job.rule_id, job.job_id, initial_ranges(job.rule_id, job.job_id, pieces))
        if job.workers != workers:
            self.jobs.set_execution(job.rule_id, job.job_id, step.execution_arn, self.clock(), workers=workers)
        return PlannedWork(
            workers=[
                WorkerSlot(
                    job=step.job,
                    worker=worker_token(step.execution_arn, index),
                    workers=workers,
                    steps_per_worker=step.steps_per_worker,
                )
                for index in range(workers)
            ]
        )

    def claim(self, ref: JobRef, worker: str, workers: int) -> Claimed:
        """The next page for ``worker``: of the range it holds, else of a free range, else of one held by
        a stale claim (see crr.backfill.fanout.claim_order). Raises BackfillJobConflictError when the job
        is not running or has no ranges."""
        job = self.jobs.get(ref.rule_id, ref.job_id)
        if job.status is not BackfillStatus.RUNNING or not job.planned:
            state = job.status.value if job.planned else "not planned"
            raise BackfillJobConflictError(f"backfill {job.job_id} of rule {job.rule_id} is {state}: nothing to claim")
        open_ranges = self.jobs.ranges(ref.rule_id, ref.job_id, open_only=True)
        if not open_ranges:
            return Claimed(request=None, finished=True)
        for candidate in claim_order(open_ranges, worker):
            taken: BackfillRange | None = candidate
            if candidate.claim != worker:
                taken = self.jobs.claim(ref.rule_id, ref.job_id, candidate.range_id, worker, candidate.claim)
            if taken is not None:
                probe = wants_more_ranges(len(open_ranges), workers)
                return Claimed(request=self._request(job, taken, probe=probe), finished=False)
        return Claimed(request=None, finished=False)

    def copy_page(self, request: PageRequest, remaining_seconds: Callable[[], float]) -> PageResult:
        try:
            with self.live_scope(lambda: remaining_seconds() / self.copy_share):
                max_bytes = page_byte_budget(self.copy_bytes_per_second, remaining_seconds())
                rule = self.rules.get(request.rule_id)
                if request.kind is WorkKind.INVENTORY:
                    return self._inventory().copy_page(
                        rule, request, max_bytes=max_bytes, seconds_left=remaining_seconds
                    )
                return self.engine.copy_page(rule, request, max_bytes=max_bytes)
        except BackfillPageError as exc:
            if exc.code in PERMANENT_S3_CODES:
                # Its own name, which the state machine does not retry: no retry fixes a denial.
                raise BackfillPageRefusedError(str(exc)) from exc
            raise

    def record_page(self, result: PageResult, worker: str, workers: int) -> RecordedPage:
        """Record the page in its range and its worker's tally (splitting the range when the job wants more ranges);
        the range's next page, unless it is done or no longer this worker's. Raises
        BackfillJobConflictError (see ``BackfillJobs.record_page``)."""
        job = self.jobs.get(result.rule_id, result.job_id)
        page = page_record(result, worker, ranges_open=job.ranges_open, workers=workers, at=self.clock())
        stored = self.jobs.record_page(page)
        if stored.done or stored.claim != worker:
            # Done; or another worker holds the range now (it took over a claim it found stale, or a
            # store without atomic conditions let two claims through): that worker lists these keys again,
            # and this one claims another range.
            return RecordedPage(range_done=True, next_request=None)
        probe = wants_more_ranges(job.ranges_open + page.opened, workers)
        return RecordedPage(range_done=False, next_request=self._request(job, stored, probe=probe))

    @staticmethod
    def _request(job: BackfillJob, item: BackfillRange, *, probe: bool) -> PageRequest:
        return item.request(
            job.ref, page_size=job.page_size, count_pages=job.count_pages, probe=probe, inventory=job.inventory
        )

    def _inventory(self) -> InventoryPages:
        if self.inventory is None:
            raise BackfillRefusedError("this BackfillFunction was built without S3 Inventory support")
        return self.inventory


@dataclass(frozen=True)
class StartedBackfill:
    job: BackfillJob
    execution_arn: str
    resumed: bool  # the job existed and goes on, each range from its stored cursor
    already_running: bool  # an execution was already working on it: nothing was started
    replaced: str | None = None  # the id of an unfinished job stored by a single-cursor release, not resumed


@dataclass(frozen=True)
class BackfillControl:
    """Start, resume and look at a rule's backfill jobs (the CLI's side)."""

    jobs: BackfillJobs
    rules: RuleReader
    executions: BackfillExecutions
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def start(
        self,
        rule_id: str,
        *,
        workers: int = DEFAULT_WORKERS,
        page_size: int = DEFAULT_PAGE_SIZE,
        count_pages: int = DEFAULT_COUNT_PAGES,
        steps_per_worker: int | None = None,
        inventory: str | None = None,
    ) -> StartedBackfill:
        """Resume the rule's unfinished job (same rule, same prefixes), each range from its own cursor and
        with ``workers`` as its fan-out now, or start a new job over every object; a job whose execution is
        still running is left to it. A job stored by a single-cursor release is not resumed: a new job
        replaces it (``StartedBackfill.replaced``). ``steps_per_worker`` defaults to 1000 // workers.

        ``inventory`` (s3://BUCKET/KEY of an S3 Inventory manifest): the job's work items are that report's
        data files instead of key ranges; an unfinished job resumes only if it was started from the same
        report (a listing job and a report's job never stand in for each other)."""
        rule = self.rules.get(rule_id)
        if not rule.enabled:
            # Its pages would be refused one by one (a paused rule copies nothing): say so now.
            raise BackfillRefusedError(f"rule {rule_id} is paused: `crr rules resume {rule_id}` first")
        latest = self.jobs.latest(rule_id)
        if latest is not None and not latest.legacy and latest.done and latest.status is not BackfillStatus.SUCCEEDED:
            # Its last page was recorded but its Finish step failed: it is complete, so say so.
            latest = self.jobs.mark_succeeded(rule_id, latest.job_id, self.clock())
        unfinished = latest is not None and not latest.done and latest.status is not BackfillStatus.SUCCEEDED
        replaced = latest.job_id if latest is not None and unfinished and latest.legacy else None
        resumable = (
            unfinished
            and latest is not None
            and not latest.legacy
            and latest.plan == plan_digest(rule)
            and latest.inventory == inventory
        )
        if resumable and latest is not None:
            if latest.execution_arn and self.executions.status(latest.execution_arn) == "RUNNING":
                return StartedBackfill(latest, latest.execution_arn, resumed=True, already_running=True)
            job = latest
            chain = round_of(job.execution_arn) + 1
        else:
            job = BackfillJob.start(
                rule,
                at=self.clock(),
                page_size=page_size,
                count_pages=count_pages,
                workers=workers,
                inventory=inventory,
            )
            self.jobs.create(job)
            chain = 1
        document = ExecutionInput(
            job=job.ref,
            workers=workers,
            steps_per_worker=steps_per_worker or max(1, DEFAULT_STEPS_PER_EXECUTION // workers),
            round=chain,
        ).model_dump_json()
        arn, started = self.executions.start(f"{job.job_id}-r{chain}", document)
        if started:
            job = self.jobs.set_execution(rule_id, job.job_id, arn, self.clock(), workers=workers)
        return StartedBackfill(job, arn, resumed=resumable, already_running=not started, replaced=replaced)

    def latest(self, rule_id: str) -> BackfillJob | None:
        return self.jobs.latest(rule_id)

    def ranges(self, rule_id: str, job_id: str) -> list[BackfillRange]:
        return self.jobs.ranges(rule_id, job_id)


def round_of(execution_arn: str | None) -> int:
    """The round an execution of a job was named for (``<job id>-r<round>``); 0 for none or another name."""
    if execution_arn is None:
        return 0
    found = _ROUND.search(execution_arn.rsplit(":", 1)[-1])
    return int(found.group(1)) if found else 0
