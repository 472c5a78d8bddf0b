"""Step Functions: start workflow executions (the large-copy workflow)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import WorkflowError
from crr.large_copy import LargeCopyJob

# Attempts of one source version's copy: a replay or repair after a failed (or superseded) attempt
# starts the next one, since Step Functions keeps a closed execution's name for 90 days.
MAX_ATTEMPTS = 50


class StepFunctionsLargeCopies:
    """LargeCopyLauncher: executions are named after the source version (and an attempt number), so a
    redelivered record finds the execution that is already copying it instead of starting a second."""

    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, job: LargeCopyJob) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            name = job.execution_name if attempt == 1 else f"{job.execution_name}-{attempt}"
            if self._started(job, name):
                return
            if self._status(name) == "RUNNING":
                return  # this version is being copied right now
        raise WorkflowError(f"{MAX_ATTEMPTS} copies of {job.request.state.key!r} at this version were started")

    def _started(self, job: LargeCopyJob, name: str) -> bool:
        try:
            self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=job.model_dump_json())
        except ClientError as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                return False
            raise self._error("StartExecution", job, exc) from exc
        return True

    def _status(self, name: str) -> str:
        # arn:aws:states:<region>:<account>:stateMachine:<machine> → ...:execution:<machine>:<name>
        execution = f"{self._arn.replace(':stateMachine:', ':execution:', 1)}:{name}"
        try:
            return str(self._sfn.describe_execution(executionArn=execution)["status"])
        except ClientError as exc:
            raise WorkflowError(
                f"DescribeExecution of {execution} failed: {error_message(exc)}", error_code(exc)
            ) from exc

    def _error(self, operation: str, job: LargeCopyJob, exc: ClientError) -> WorkflowError:
        return WorkflowError(
            f"{operation} of {self._arn} for {job.request.state.key!r} failed: {error_message(exc)}", error_code(exc)
        )
