"""Step Functions: start workflow executions (the large-copy workflow)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import WorkflowError
from crr.large_copy import LargeCopyJob


class StepFunctionsLargeCopies:
    """LargeCopyLauncher: one execution per source version, named after it, so a redelivered record
    finds the execution the first delivery started instead of starting a second copy."""

    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, job: LargeCopyJob) -> None:
        try:
            self._sfn.start_execution(stateMachineArn=self._arn, name=job.execution_name, input=job.model_dump_json())
        except ClientError as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                return  # this version's copy is running, or has run (a later version gets a new name)
            raise WorkflowError(
                f"StartExecution of {self._arn} for {job.request.state.key!r} failed: {error_message(exc)}",
                error_code(exc),
            ) from exc
