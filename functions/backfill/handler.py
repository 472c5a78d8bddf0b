"""BackfillFunction: one step of the fanned-out backfill workflow (statemachine/backfill.asl.json)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.backfill.workflow import BackfillStep, BackfillSteps
from crr.composition import backfill_steps
from crr.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext, steps: BackfillSteps | None = None) -> dict[str, Any]:
    """``steps`` is for tests; Lambda passes none, and the environment's are used (BACKFILL_MAX_RANGES
    bounds a job's workers)."""
    parsed = parse(event=event, model=BackfillStep)
    step = parsed.root
    rule_id, job_id = parsed.job_names()
    logger.append_keys(step=step.action, rule=rule_id, job=job_id, worker=getattr(step, "worker", None))
    steps = steps or backfill_steps()
    result = steps.run(step, remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    logger.info("backfill step done", extra={"result": result.model_dump(mode="json", exclude={"next_request"})})
    return result.model_dump(mode="json")
