"""A stand-in for the Lambda context object the handlers receive, for tests that call a handler in process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeLambdaContext:
    """What Powertools and our handlers read from a context; ``remaining_millis`` is the time the
    invocation has left (a minute by default, so no test runs near the deadline unless it asks to)."""

    function_name: str = "ReplicateFunction"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-west-1:123456789012:function:ReplicateFunction"
    aws_request_id: str = "req-1"
    remaining_millis: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis
