"""Ports to the other services: Step Functions (the large-copy and backfill workflows), KMS and
CloudWatch metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from crr.models import LargeCopyJob


class LargeCopyLauncher(Protocol):
    """Starts the large-copy workflow (statemachine/large_copy.asl.json).

    Implemented by ``crr.adapters.stepfunctions.StepFunctionsLargeCopies``; in tests by
    ``tests.support.fakes.FakeLargeCopyLauncher``."""

    def start(self, job: LargeCopyJob) -> None:
        """Start the large-copy workflow for ``job`` (idempotent per source version)."""
        ...


class BackfillExecutions(Protocol):
    """The backfill state machine's executions.

    Implemented by ``crr.adapters.stepfunctions.StepFunctionsExecutions``; in tests by
    ``tests.support.fakes.FakeBackfillExecutions``."""

    def start(self, base_name: str, document: str) -> tuple[str, bool]:
        """Start an execution named ``base_name`` (or the next free ``base_name-<n>``) with input
        ``document``; returns its ARN and True, or the ARN of one already RUNNING under those names and
        False."""
        ...

    def status(self, execution_arn: str) -> str:
        """RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED."""
        ...


class KeyDirectory(Protocol):
    """KMS, as a rule's replica key is checked.

    Implemented by ``crr_cli.adapters.kms.KmsKeys``; in tests by none: tested over moto."""

    def key_arn(self, key: str, region: str) -> str:
        """The key ARN a key or alias ARN names. Raises ReplicaKeyError when it names no usable key."""
        ...


class FailureMetric(Protocol):
    """The functions' ``ReplicationFailures`` metric, for ``crr status``.

    Implemented by ``crr_cli.adapters.health.CloudWatchFailureMetric``; in tests by
    ``tests.support.fakes.FakeFailureMetric``."""

    def failed_attempts(self, start: datetime, end: datetime) -> int:
        """Failed attempts the functions published (their ``ReplicationFailures`` metric) between
        ``start`` and ``end``; 0 without a datapoint. Raises StatusProbeError."""
        ...
