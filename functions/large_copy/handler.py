"""LargeCopyFunction: one step of the large-copy workflow (statemachine/large_copy.asl.json)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.composition import large_copier
from crr.large_copy import LargeCopier, LargeCopyStep
from crr.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext, copier: LargeCopier | None = None) -> dict[str, Any]:
    """``copier`` is for tests; Lambda passes none, and the environment's is used."""
    step = parse(event=event, model=LargeCopyStep).root
    logger.append_keys(step=step.action, key=step.job.request.state.key, rule=step.job.rule_id)
    copier = copier or large_copier(context.get_remaining_time_in_millis() / 1000)
    result = copier.run(step)
    logger.info("large copy step done", extra={"result": result.model_dump(mode="json", exclude={"job"})})
    return result.model_dump(mode="json")
