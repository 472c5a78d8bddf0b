"""In-memory fakes of the ports to Step Functions and CloudWatch (``crr.ports.services``)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

from crr.errors import StatusProbeError
from crr.models import LargeCopyJob


@dataclass
class FakeLargeCopyLauncher:
    """Fake of ``crr.ports.services.LargeCopyLauncher``: records each job it was asked to start."""

    started: list[LargeCopyJob] = field(default_factory=list)

    def start(self, job: LargeCopyJob) -> None:
        self.started.append(job)


@dataclass
class FakeBackfillExecutions:
    """Fake of ``crr.ports.services.BackfillExecutions``: executions by name (each started one's input in
    ``started``); ``status_of`` says how each one stands (RUNNING unless set)."""

    started: dict[str, str] = field(default_factory=dict)
    status_of: dict[str, str] = field(default_factory=dict)

    def start(self, base_name: str, document: str) -> tuple[str, bool]:
        for n in itertools.count(1):
            name = base_name if n == 1 else f"{base_name}-{n}"
            arn = f"arn:aws:states:us-west-1:1:execution:crr-backfill:{name}"
            if name not in self.started:
                self.started[name] = document
                return arn, True
            if self.status(arn) == "RUNNING":
                return arn, False
        raise AssertionError("unreachable")

    def status(self, execution_arn: str) -> str:
        return self.status_of.get(execution_arn.rsplit(":", 1)[1], "RUNNING")


class FakeFailureMetric:
    """Fake of ``crr.ports.services.FailureMetric``: CloudWatch's sum of the functions' ReplicationFailures;
    remembers the windows asked for; raises ``error`` when given one."""

    def __init__(self, attempts: int = 0, error: StatusProbeError | None = None) -> None:
        self.attempts = attempts
        self.error = error
        self.windows: list[tuple[datetime, datetime]] = []

    def failed_attempts(self, start: datetime, end: datetime) -> int:
        self.windows.append((start, end))
        if self.error is not None:
            raise self.error
        return self.attempts
