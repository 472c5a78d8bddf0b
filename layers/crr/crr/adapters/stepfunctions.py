"""Step Functions: start workflow executions under stable names, and read their status."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import WorkflowError
from crr.models import LargeCopyJob

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


# Step Functions keeps a closed execution's name for 90 days, so a new attempt under the same base name
# takes the next free ``<base>-<n>``.
MAX_ATTEMPTS = 50


class StepFunctionsExecutions:
    """One state machine's executions (``crr.ports.services.BackfillExecutions``)."""

    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, base_name: str, document: str) -> tuple[str, bool]:
        """Start ``base_name`` or the next free ``base_name-<n>``; an execution already RUNNING under one of
        those names is returned instead (False: nothing started)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            name = base_name if attempt == 1 else f"{base_name}-{attempt}"
            try:
                started = self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=document)
            except ClientError as exc:
                if error_code(exc) != "ExecutionAlreadyExists":
                    raise WorkflowError(
                        f"StartExecution {name} of {self._arn} failed: {error_message(exc)}", error_code(exc)
                    ) from exc
                existing = self.execution_arn(name)
                if self.status(existing) == "RUNNING":
                    return existing, False
                continue
            return str(started["executionArn"]), True
        raise WorkflowError(f"{MAX_ATTEMPTS} executions named {base_name}[-n] exist already")

    def execution_arn(self, name: str) -> str:
        # arn:aws:states:<region>:<account>:stateMachine:<machine> → ...:execution:<machine>:<name>
        return f"{self._arn.replace(':stateMachine:', ':execution:', 1)}:{name}"

    def status(self, execution_arn: str) -> str:
        try:
            return str(self._sfn.describe_execution(executionArn=execution_arn)["status"])
        except ClientError as exc:
            raise WorkflowError(
                f"DescribeExecution of {execution_arn} failed: {error_message(exc)}", error_code(exc)
            ) from exc


class StepFunctionsLargeCopies:
    """LargeCopyLauncher: executions are named after the source version (and an attempt number), so a
    redelivered record finds the execution that is already copying it instead of starting a second,
    while a replay after a failed or superseded attempt starts the next one."""

    def __init__(self, client: SFNClient, state_machine_arn: str) -> None:
        self._executions = StepFunctionsExecutions(client, state_machine_arn)

    def start(self, job: LargeCopyJob) -> None:
        self._executions.start(job.execution_name, job.model_dump_json())
