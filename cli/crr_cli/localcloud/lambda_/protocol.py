"""Messages between the executor and its worker processes: one JSON object per line.

The parent writes to the worker's stdin; the worker answers on a private duplicate of its original
stdout, because handler code and Powertools Metrics print to fd 1, which the worker points at its
log. Kept stdlib-only so the worker starts fast.

parent -> worker  {"type": "invoke", "request_id": str, "deadline_ms": int, "event": any}
worker -> parent  {"type": "ready", "pid": int, "init_ms": float}
                  {"type": "init_error", "pid": int, "error": ErrorPayload}
                  {"type": "result", "request_id": str, "payload": any}
                  {"type": "error", "request_id": str, "error": ErrorPayload}
"""

from __future__ import annotations

import json
from typing import Any, TypedDict


class ErrorPayload(TypedDict):
    """Lambda's shape of an invocation error."""

    errorType: str
    errorMessage: str
    stackTrace: list[str]


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line; raises TypeError/ValueError when `message` is not JSON-serialisable."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one protocol line; raises ValueError when it is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise TypeError("protocol message is not an object")
    return message


def error_payload(error_type: str, message: str, stack: list[str] | None = None) -> ErrorPayload:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": stack or []}
