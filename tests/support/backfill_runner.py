"""The fanned-out backfill run in this process, step by step as statemachine/backfill.asl.json runs it:
Register, Plan, then one thread per worker looping Claim → CopyPage → RecordProgress through
``BackfillSteps.run`` (the same step models the state machine sends), then Progress → Finish.

Only tests and benchmarks use it (the deployed backfill is the Step Functions workflow,
crr.backfill.workflow), so it lives here rather than in the Lambda layer.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator

from crr.backfill.engine import BackfillEngine
from crr.backfill.models import (
    DEFAULT_COUNT_PAGES,
    DEFAULT_PAGE_SIZE,
    BackfillJob,
    PageRequest,
    PageResult,
    listing_prefixes,
    plan_digest,
)
from crr.backfill.workflow import (
    DEFAULT_STEPS_PER_EXECUTION,
    BackfillSteps,
    Claimed,
    ClaimStep,
    CopyPageStep,
    FailStep,
    FinishStep,
    JobProgress,
    PlannedWork,
    PlanStep,
    ProgressStep,
    RecordedPage,
    RecordPageStep,
    RegisterStep,
    ReleaseStep,
    WorkerSlot,
    round_of,
)
from crr.errors import StepError
from crr.rules import ReplicationRule

OnPage = Callable[[BackfillJob, PageResult], None]
# How long an idle worker waits before claiming again when no page is recorded meanwhile (the state
# machine's Idle state waits 1 s; a recorded page, which may have split a range, wakes the runner's at once).
IDLE_WAIT_SECONDS = 0.05
_executions = itertools.count(1)


class _Run:
    """One execution's workers, sharing what tells them to stop or wake."""

    def __init__(self, steps: BackfillSteps, steps_per_worker: int | None, on_page: OnPage | None) -> None:
        self.steps = steps
        self.quota = steps_per_worker
        self.on_page = on_page
        self.failure: Exception | None = None
        self.recorded = threading.Condition()
        self.observing = threading.Lock()

    def work(self, slot: WorkerSlot) -> None:
        try:
            self._loop(slot)
        except Exception as exc:  # noqa: BLE001 (any step's error fails the Map as a whole, as in the ASL)
            with self.recorded:
                self.failure = self.failure or exc
                self.recorded.notify_all()

    def _loop(self, slot: WorkerSlot) -> None:
        taken = 0
        request: PageRequest | None = None
        while self.failure is None:
            if self.quota is not None and taken >= self.quota:
                self.steps.run(ReleaseStep(action="release", job=slot.job, worker=slot.worker))
                return
            if request is None:
                claimed = self.steps.run(
                    ClaimStep(action="claim", job=slot.job, worker=slot.worker, workers=slot.workers)
                )
                assert isinstance(claimed, Claimed)
                if claimed.finished:
                    return
                if claimed.request is None:
                    taken += 1  # an idle poll is a step of the worker's share too
                    with self.recorded:
                        self.recorded.wait(IDLE_WAIT_SECONDS)
                    continue
                request = claimed.request
            result = self.steps.run(CopyPageStep(action="copy_page", request=request))
            assert isinstance(result, PageResult)
            recorded = self.steps.run(
                RecordPageStep(action="record_page", result=result, worker=slot.worker, workers=slot.workers)
            )
            assert isinstance(recorded, RecordedPage)
            taken += 1
            with self.recorded:
                self.recorded.notify_all()
            if self.on_page is not None:
                with self.observing:  # observations in the order the job was read
                    self.on_page(self.steps.jobs.get(result.rule_id, result.job_id), result)
            request = recorded.next_request


def run_fanned_out(
    steps: BackfillSteps,
    job: BackfillJob,
    *,
    workers: int,
    steps_per_worker: int | None = None,
    on_page: OnPage | None = None,
) -> BackfillJob:
    """Run ``job`` as one execution of the workflow would, with ``workers`` threads (each worker's pages
    go through ``steps``, so they share its engine and its copy pool: give the engine ``workers`` times
    the concurrency one page step would have to mimic that many Lambda invocations).

    ``steps_per_worker`` None: the workers run until no range is open, then the job is finished. With a
    quota each worker releases its range after that many steps (idle polls count) and stops, as the
    state machine's workers do before it continues as new: the job stays running with its ranges open,
    and calling this again (with any ``workers``) resumes every range from its cursor, as a fresh
    execution (whose workers take over the stale claims). ``on_page`` sees the job as stored after each
    recorded page, in the order it was read.

    Returns the job as stored. When a step fails, the job is marked failed (as the state machine's
    RecordFailure does) and the step's error is raised.
    """
    chain = max(round_of(job.execution_arn), 0) + 1
    execution_arn = (
        f"arn:aws:states:local:000000000000:execution:crr-backfill:{job.job_id}-r{chain}-{next(_executions)}"
    )
    try:
        _run_execution(steps, job, execution_arn, workers, steps_per_worker, on_page)
    except Exception as exc:
        error = StepError(error=type(exc).__name__, cause=str(exc))
        steps.run(FailStep(action="fail", job=job.ref, error=error))
        raise
    return steps.jobs.get(job.rule_id, job.job_id)


def _run_execution(
    steps: BackfillSteps,
    job: BackfillJob,
    execution_arn: str,
    workers: int,
    steps_per_worker: int | None,
    on_page: OnPage | None,
) -> None:
    """Register, Plan, the Map's workers (each in a thread), Progress, and Finish when done. Raises the
    first error a step raised."""
    steps.run(RegisterStep(action="register", job=job.ref, execution_arn=execution_arn))
    planned = steps.run(
        PlanStep(
            action="plan",
            job=job.ref,
            workers=workers,
            steps_per_worker=steps_per_worker or DEFAULT_STEPS_PER_EXECUTION,
            execution_arn=execution_arn,
        )
    )
    assert isinstance(planned, PlannedWork)
    run = _Run(steps, steps_per_worker, on_page)
    threads = [
        threading.Thread(target=run.work, args=(slot,), name=f"crr-backfill-worker-{index}")
        for index, slot in enumerate(planned.workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if run.failure is not None:
        raise run.failure
    progress = steps.run(ProgressStep(action="progress", job=job.ref))
    assert isinstance(progress, JobProgress)
    if progress.done:
        steps.run(FinishStep(action="finish", job=job.ref))


def prefix_requests(
    rule: ReplicationRule,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    count_pages: int = DEFAULT_COUNT_PAGES,
    job_id: str = "job",
) -> list[PageRequest]:
    """The first page's request of one whole range per listing prefix of ``rule`` (for tests of the engine
    alone, without a job store)."""
    return [
        PageRequest(
            job_id=job_id,
            rule_id=rule.rule_id,
            plan=plan_digest(rule),
            range_id=f"{index:04d}",
            sequence=1,
            prefix=prefix,
            page_size=page_size,
            count_pages=count_pages,
        )
        for index, prefix in enumerate(listing_prefixes(rule.prefixes))
    ]


def run_range(engine: BackfillEngine, rule: ReplicationRule, request: PageRequest) -> Iterator[PageResult]:
    """Every page of ``request``'s range from where it stands to its end, one after another, never split
    (the engine alone: nothing is recorded). Stops early if the caller stops iterating."""
    while True:
        result = engine.copy_page(rule, request)
        yield result
        if result.done:
            return
        request = request.model_copy(
            update={
                "sequence": request.sequence + 1,
                "cursor": result.cursor,
                "count_cursor": result.count_cursor,
                "count_complete": result.count_complete,
            }
        )
