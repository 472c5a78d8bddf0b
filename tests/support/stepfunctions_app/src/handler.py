"""The Step Functions test app's function: each `action` of the event is one behaviour a workflow
test needs. Test code only; it runs in the local cloud's warm workers."""

from __future__ import annotations

import os
import time
from typing import Any

import boto3


class TransientError(Exception):
    """A failure that a retry cures (the workflow retries it by name)."""


class PermanentError(Exception):
    """A failure no retry cures (the workflow catches it by name)."""


def _flaky(event: dict[str, Any]) -> dict[str, Any]:
    """Fail with TransientError on the first `failures` attempts for `key`, then succeed."""
    table = boto3.resource("dynamodb").Table(os.environ["TABLE_NAME"])
    answer = table.update_item(
        Key={"pk": f"attempts#{event['key']}"},
        UpdateExpression="ADD attempts :one",
        ExpressionAttributeValues={":one": 1},
        ReturnValues="UPDATED_NEW",
    )
    attempts = int(str(answer["Attributes"]["attempts"]))  # a Decimal, typed as any attribute value
    if attempts <= int(event.get("failures", 0)):
        raise TransientError(f"attempt {attempts} of {event['key']} fails on purpose")
    return {"attempts": attempts, "pid": os.getpid()}


def _visit(event: dict[str, Any]) -> dict[str, Any]:
    """Hold the item for `sleep` seconds and say when, and in which worker."""
    started = time.time()
    time.sleep(float(event.get("sleep", 0)))
    return {"item": event["item"], "pid": os.getpid(), "started": started, "finished": time.time()}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Do what `event["action"]` asks; raises PermanentError for `fail`, ValueError for an unknown action."""
    action = event.get("action")
    if action == "count":
        return {**event, "count": int(event.get("count", 0)) + 1}
    if action == "flaky":
        return _flaky(event)
    if action == "fail":
        raise PermanentError(str(event.get("message", "asked to fail")))
    if action == "visit":
        return _visit(event)
    if action == "sleep":
        time.sleep(float(event["seconds"]))
        return {"slept": event["seconds"]}
    if action == "echo":
        return event
    raise ValueError(f"unknown action {action!r}")
