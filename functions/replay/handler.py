"""ReplayFunction: move dead-lettered records matching a filter back to the replication queue.

Event: {"reason": "NoSuchBucket", "prefix": "logs/", "since": "2026-11-25T10:00:00Z", "max": 100,
"dry_run": false} (every field optional). Returns the replay report.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.composition import replay_dead_letters
from crr.observability import logger, tracer
from crr.replay import parse_replay_event


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = replay_dead_letters(parse_replay_event(event))
    logger.info("replay finished", extra=report.model_dump())
    return report.model_dump()
