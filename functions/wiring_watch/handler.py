"""WiringWatchFunction (scheduled): is every rule's source bucket still wired into the queue?

Publishes `RulesUnwired` (and `RulesWiringUnchecked`), which `ReplicationWiringAlarm` watches, and
logs each rule whose changes no longer reach the queue. Returns the report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.composition import watch_wiring
from crr.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = watch_wiring(datetime.now(UTC))
    metrics.add_metric(name="RulesUnwired", unit=MetricUnit.Count, value=len(report.unwired))
    metrics.add_metric(name="RulesWiringUnchecked", unit=MetricUnit.Count, value=len(report.unchecked))
    for finding in report.unwired:
        logger.error("rule not wired: its new changes are not replicated", extra=finding.model_dump())
    for finding in report.unchecked:
        logger.warning("rule wiring could not be checked", extra=finding.model_dump())
    return report.model_dump(mode="json")
