"""The backfill as a Step Functions workflow (statemachine/backfill.asl.json), and how jobs start.

    Register        the execution names itself in the job (so followers find it after a hand-over)
    CopyPage        one listing page of the source, copied (crr.backfill.engine.BackfillEngine.copy_page)
    RecordProgress  the page's counts and cursors into the job, once per page sequence
    MorePages?      done → Finish; this execution ran its share of pages → ContinueAsNew; else CopyPage
    ContinueAsNew   a fresh execution of the same machine with the next page's request, before this
                    one nears Step Functions' 25,000-event history limit (a page is about 12 events)
    any failure     → RecordFailure (the job is marked failed with the reason) → Fail

The job in the rules table is the truth: each execution's input is just the next page's request, which
the job yields from its stored cursor. So ``crr backfill start`` resumes an interrupted or failed job
from the page after the last recorded one, and a retried step is harmless (the job store counts a page
once, and copying a page again skips what the destination already holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from crr.backfill.budget import page_byte_budget
from crr.backfill.engine import BackfillEngine
from crr.backfill.models import (
    DEFAULT_COUNT_PAGES,
    DEFAULT_PAGE_SIZE,
    BackfillJob,
    BackfillStatus,
    PageRequest,
    PageResult,
    plan_digest,
)
from crr.errors import BackfillPageError, BackfillRefusedError, CrrError, StepError
from crr.failures import PERMANENT_S3_CODES
from crr.ports.services import BackfillExecutions
from crr.ports.table import BackfillJobs, RuleReader

# Pages per execution before it continues as a new one: ~12 history events a page keeps an execution
# near 12,000 events, half the limit, so retries and failures have room.
DEFAULT_PAGES_PER_EXECUTION = 1000


class BackfillPageRefusedError(CrrError):
    """A page failed for a reason no retry fixes (access denied, bucket missing)."""


class ExecutionInput(BaseModel):
    """What each execution of the backfill state machine starts with."""

    model_config = ConfigDict(frozen=True)

    request: PageRequest
    pages_per_execution: int = Field(default=DEFAULT_PAGES_PER_EXECUTION, ge=1)


class RegisterStep(BaseModel):
    action: Literal["register"]
    request: PageRequest
    execution_arn: str


class CopyPageStep(BaseModel):
    action: Literal["copy_page"]
    request: PageRequest


class RecordPageStep(BaseModel):
    action: Literal["record_page"]
    result: PageResult


class FinishStep(BaseModel):
    action: Literal["finish"]
    request: PageRequest


class FailStep(BaseModel):
    action: Literal["fail"]
    request: PageRequest
    error: StepError


class RecordedPage(BaseModel):
    """The job after a page: whether it is done, and the next page's request."""

    model_config = ConfigDict(frozen=True)

    done: bool
    pages: int
    next_request: PageRequest | None


class JobOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    status: BackfillStatus


AnyStep = Annotated[RegisterStep | CopyPageStep | RecordPageStep | FinishStep | FailStep, Field(discriminator="action")]
StepResult = PageResult | RecordedPage | JobOutcome

# What each step takes and gives back (the state machine's contract, checked against its ASL by a test).
STEP_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "register": (RegisterStep, JobOutcome),
    "copy_page": (CopyPageStep, PageResult),
    "record_page": (RecordPageStep, RecordedPage),
    "finish": (FinishStep, JobOutcome),
    "fail": (FailStep, JobOutcome),
}


class BackfillStep(RootModel[AnyStep]):
    """The payload each task state of statemachine/backfill.asl.json sends the BackfillFunction."""


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

    def run(
        self,
        step: RegisterStep | CopyPageStep | RecordPageStep | FinishStep | FailStep,
        remaining_seconds: Callable[[], float] = lambda: math.inf,
    ) -> StepResult:
        match step:
            case RegisterStep():
                # Each execution names itself in the job, so a follower finds the one running it (after a
                # continue-as-new too).
                request = step.request
                job = self.jobs.set_execution(request.rule_id, request.job_id, step.execution_arn, self.clock())
                return JobOutcome(job_id=job.job_id, status=job.status)
            case CopyPageStep():
                try:
                    with self.live_scope(lambda: remaining_seconds() / self.copy_share):
                        return self.engine.copy_page(
                            self.rules.get(step.request.rule_id),
                            step.request,
                            max_bytes=page_byte_budget(self.copy_bytes_per_second, remaining_seconds()),
                        )
                except BackfillPageError as exc:
                    if exc.code in PERMANENT_S3_CODES:
                        # Its own name, which the state machine does not retry: no retry fixes a denial.
                        raise BackfillPageRefusedError(str(exc)) from exc
                    raise
            case RecordPageStep():
                job = self.jobs.record_page(step.result)
                return RecordedPage(
                    done=job.done, pages=job.pages, next_request=None if job.done else job.next_request()
                )
            case FinishStep():
                job = self.jobs.mark_succeeded(step.request.rule_id, step.request.job_id, self.clock())
                return JobOutcome(job_id=job.job_id, status=job.status)
            case FailStep():
                reason = f"{step.error.error}: {step.error.message}"[:1000]
                job = self.jobs.mark_failed(step.request.rule_id, step.request.job_id, reason, self.clock())
                return JobOutcome(job_id=job.job_id, status=job.status)


@dataclass(frozen=True)
class StartedBackfill:
    job: BackfillJob
    execution_arn: str
    resumed: bool  # the job existed and continues from its stored cursor
    already_running: bool  # an execution was already working on it: nothing was started


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
        page_size: int = DEFAULT_PAGE_SIZE,
        count_pages: int = DEFAULT_COUNT_PAGES,
        pages_per_execution: int = DEFAULT_PAGES_PER_EXECUTION,
    ) -> StartedBackfill:
        """Resume the rule's unfinished job (same rule, same prefixes) from its stored cursor, or start a
        new job over every object; a job whose execution is still running is left to it."""
        rule = self.rules.get(rule_id)
        if not rule.enabled:
            # Its pages would be refused one by one (a paused rule copies nothing): say so now.
            raise BackfillRefusedError(f"rule {rule_id} is paused: `crr rules resume {rule_id}` first")
        latest = self.jobs.latest(rule_id)
        if latest is not None and latest.done and latest.status is not BackfillStatus.SUCCEEDED:
            # Its last page was recorded but its Finish step failed: it is complete, so say so.
            latest = self.jobs.mark_succeeded(rule_id, latest.job_id, self.clock())
        resumable = (
            latest is not None
            and not latest.done
            and latest.status is not BackfillStatus.SUCCEEDED
            and latest.plan == plan_digest(rule)
        )
        if resumable and latest is not None:
            if latest.execution_arn and self.executions.status(latest.execution_arn) == "RUNNING":
                return StartedBackfill(latest, latest.execution_arn, resumed=True, already_running=True)
            job = latest
        else:
            job = BackfillJob.start(rule, at=self.clock(), page_size=page_size, count_pages=count_pages)
            self.jobs.create(job)
        request = job.next_request()
        document = ExecutionInput(request=request, pages_per_execution=pages_per_execution).model_dump_json()
        arn, started = self.executions.start(f"{job.job_id}-p{request.sequence}", document)
        if started:
            job = self.jobs.set_execution(rule_id, job.job_id, arn, self.clock())
        return StartedBackfill(job, arn, resumed=resumable, already_running=not started)

    def latest(self, rule_id: str) -> BackfillJob | None:
        return self.jobs.latest(rule_id)
