"""The one loader of sample events in ``events/`` (also used by ``sam local invoke -e``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str) -> dict[str, Any]:
    """``load_event("s3/object-created-put")`` → the parsed JSON document."""
    document: dict[str, Any] = json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return document


def load_body(name: str) -> str:
    """A sample event as the body of a queue message."""
    return json.dumps(load_event(name))


def load_raw_body(name: str) -> str:
    """A sample file's text verbatim, for bodies that are not JSON (``load_body`` would re-dump them)."""
    return (EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8")


def sqs_event(*bodies: str, queue_arn: str = "arn:aws:sqs:us-west-1:111122223333:crr-test") -> dict[str, Any]:
    """An SQS Lambda event with one record per body, shaped like the event source mapping's."""
    template = load_event("sqs/replicate-batch")["Records"][0]
    records = []
    for body in bodies:
        record = dict(template)
        record.update(messageId=str(uuid.uuid4()), body=body, eventSourceARN=queue_arn)
        records.append(record)
    return {"Records": records}
