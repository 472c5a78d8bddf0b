"""The embedded local cloud runs the state machines of a SAM template, over HTTP.

The test app (tests/support/stepfunctions_app) has one workflow whose `$.scenario` picks the
behaviour under test: Lambda tasks with Retry/Catch and a timeout, DynamoDB tasks, a Choice loop,
an inline Map and a "continue as new" chain. moto interprets the ASL; the Lambda tasks must run on
the local cloud's own executor.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.deploy import DeployedStack

pytestmark = pytest.mark.integration

REGION = "us-west-1"
APP = Path(__file__).resolve().parents[1] / "support" / "stepfunctions_app"
EXECUTION_TIMEOUT_S = 20.0


@dataclass
class Workflow:
    """The deployed test app and the clients to drive it."""

    cloud: LocalCloud
    stack: DeployedStack

    @property
    def arn(self) -> str:
        return self.stack.state_machine("Workflow").arn

    @property
    def sfn(self) -> Any:
        return self.cloud.client("stepfunctions", REGION)

    @property
    def table(self) -> str:
        return self.stack.outputs["WorkflowTableName"]

    def start(self, document: dict[str, Any], name: str | None = None) -> str:
        """Start an execution (always named, as moto needs); returns its ARN."""
        started = self.sfn.start_execution(
            stateMachineArn=self.arn, name=name or uuid.uuid4().hex, input=json.dumps(document)
        )
        return str(started["executionArn"])

    def finished(self, execution_arn: str, eventually: Any) -> dict[str, Any]:
        """The execution's description once it is no longer RUNNING."""

        def described() -> dict[str, Any] | None:
            execution: dict[str, Any] = self.sfn.describe_execution(executionArn=execution_arn)
            return None if execution["status"] == "RUNNING" else execution

        result: dict[str, Any] = eventually(described, timeout=EXECUTION_TIMEOUT_S, what=f"{execution_arn} to end")
        return result

    def run(self, document: dict[str, Any], eventually: Any) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Start an execution and wait for it: (description, output, seconds it ran by the server's clock)."""
        execution = self.finished(self.start(document), eventually)
        assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause"))
        took = (execution["stopDate"] - execution["startDate"]).total_seconds()
        return execution, json.loads(execution["output"]), took

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        pages = self.sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        return [event for page in pages for event in page["events"]]

    def item(self, key: str) -> dict[str, Any]:
        dynamodb = self.cloud.client("dynamodb", REGION)
        found: dict[str, Any] = dynamodb.get_item(TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True)
        return dict(found.get("Item", {}))


@pytest.fixture(scope="module")
def workflow(local_cloud: LocalCloud) -> Workflow:
    stack = local_cloud.deploy(APP / "template.yaml", f"sfn-{uuid.uuid4().hex[:8]}", REGION, {})
    return Workflow(local_cloud, stack)


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one instant (one that ends as another starts does not overlap it)."""
    spans = list(intervals)
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# ------------------------------------------------------------------ deploy


def test_deploy_creates_the_state_machine_with_substitutions_logging_and_tracing(workflow: Workflow) -> None:
    # Given the test app deployed, whose state machine has a local DefinitionUri and substitutions
    stack = workflow.stack
    machine = stack.state_machine("Workflow")

    # When the state machine is described over the Step Functions API
    described = workflow.sfn.describe_state_machine(stateMachineArn=stack.physical_id("Workflow"))
    definition = json.loads(described["definition"])

    # Then it exists under its explicit Name, at the ARN the stack reports, with every placeholder replaced
    assert machine.arn == stack.physical_id("Workflow") == stack.outputs["WorkflowArn"]
    assert described["name"] == machine.name == f"{stack.stack_name}-workflow" == stack.outputs["WorkflowName"]
    assert "${" not in described["definition"]
    work = stack.function("WorkFunction")
    assert definition["States"]["Flaky"]["Parameters"]["FunctionName"] == work.arn
    assert definition["States"]["Overrun"]["Parameters"]["FunctionName"] == stack.function("DeadlineFunction").arn
    assert definition["States"]["Record"]["Parameters"]["TableName"] == workflow.table
    assert definition["States"]["ContinueAsNew"]["Parameters"]["StateMachineArn"] == machine.arn
    # and the role, logging and tracing of the template
    assert described["roleArn"].endswith(f":role/{stack.physical_id('WorkflowRole')}")
    (destination,) = described["loggingConfiguration"]["destinations"]
    assert stack.physical_id("WorkflowLogs") in destination["cloudWatchLogsLogGroup"]["logGroupArn"]
    assert (described["loggingConfiguration"]["level"], described["tracingConfiguration"]) == ("ALL", {"enabled": True})
    assert f"Workflow: state machine {machine.name} created, 4 substitution(s)" in stack.fixups
    # and the functions it invokes get a worker per Map iteration that may run at once
    assert set(machine.invoked_functions) == {"WorkFunction", "DeadlineFunction"}
    assert machine.task_concurrency == 4
    assert workflow.cloud.executor.pool(work.arn).size == 4


# ------------------------------------------------------------------ Lambda tasks


def test_a_lambda_task_retries_its_named_error_on_the_local_executor(workflow: Workflow, eventually: Any) -> None:
    # Given an execution whose function fails once with TransientError, which the task retries
    key = uuid.uuid4().hex

    # When it runs
    execution, output, _ = workflow.run({"scenario": "retry", "action": "flaky", "failures": 1, "key": key}, eventually)

    # Then the second attempt succeeded, in one of the local executor's warm workers
    assert output["result"]["attempts"] == 2
    work = workflow.stack.function("WorkFunction")
    assert output["result"]["pid"] in workflow.cloud.executor.pool(work.arn).worker_pids()
    # and the history shows the failed attempt under the exception's class name, then the success
    failures = [
        e["taskFailedEventDetails"] for e in workflow.history(execution["executionArn"]) if e["type"] == "TaskFailed"
    ]
    assert [failure["error"] for failure in failures] == ["TransientError"]
    assert json.loads(failures[0]["cause"])["errorMessage"] == f"attempt 1 of {key} fails on purpose"
    # and the DynamoDB updateItem task wrote the outcome in the DynamoDB process
    assert output["recorded"] == {"runs": "1"}
    assert workflow.item(f"outcome#{key}")["outcome"] == {"S": "succeeded"}


def test_a_named_function_error_is_caught_into_the_recovery_state(workflow: Workflow, eventually: Any) -> None:
    # Given an execution whose function raises PermanentError, which the task catches by name
    key = uuid.uuid4().hex

    # When it runs
    _, output, _ = workflow.run(
        {"scenario": "retry", "action": "fail", "message": "no such bucket", "key": key}, eventually
    )

    # Then the Catch led to the recovery state, with Lambda's error payload as the cause
    assert output["outcome"] == "recovered"
    assert output["error"]["Error"] == "PermanentError"
    cause = json.loads(output["error"]["Cause"])
    assert (cause["errorType"], cause["errorMessage"]) == ("PermanentError", "no such bucket")
    assert any("handler.py" in frame for frame in cause["stackTrace"])
    assert workflow.item(f"outcome#{key}")["outcome"] == {"S": "recovered"}


def test_a_function_timeout_surfaces_as_sandbox_timedout(workflow: Workflow, eventually: Any) -> None:
    # Given an execution whose task sleeps past its function's 1 s timeout
    key = uuid.uuid4().hex

    # When it runs
    _, output, took = workflow.run({"scenario": "timeout", "seconds": 5, "key": key}, eventually)

    # Then the task failed with Lambda's timeout error, which States.ALL caught, after about 1 s
    assert output["error"]["Error"] == "Sandbox.Timedout"
    assert json.loads(output["error"]["Cause"])["errorMessage"] == "Task timed out after 1.00 seconds"
    assert output["outcome"] == "unexpected"
    assert took < 5


# ------------------------------------------------------------------ flow control


def test_a_choice_loop_runs_every_round(workflow: Workflow, eventually: Any) -> None:
    # Given an execution that loops Task -> Choice 20 times
    rounds = 20

    # When it runs
    execution, output, took = workflow.run(
        {"scenario": "loop", "action": "count", "count": 0, "rounds": rounds}, eventually
    )
    history = workflow.history(execution["executionArn"])

    # Then every round ran, and the history holds every state of every round
    assert output["count"] == rounds
    lambda_tasks = [e for e in history if e["type"] == "TaskSucceeded"]
    assert len(lambda_tasks) == rounds
    per_round = len(history) / rounds
    assert per_round >= 5
    print(
        f"\n{rounds}-round Task->Choice loop: {took:.2f} s ({took / rounds * 1000:.0f} ms a round), "
        f"{len(history)} history events ({per_round:.1f} a round)"
    )


def test_an_inline_map_runs_its_lambda_iterations_concurrently_within_max_concurrency(
    workflow: Workflow, eventually: Any
) -> None:
    # Given four workers started, and a Map (MaxConcurrency 4) over 8 items that each hold one 0.5 s
    work = workflow.stack.function("WorkFunction")
    workflow.cloud.executor.pool(work.arn).prewarm(4)
    items = list(range(8))

    # When it runs
    _, output, took = workflow.run({"scenario": "map", "items": items, "sleep": 0.5}, eventually)

    # Then every item was visited once, several at a time but never more than MaxConcurrency
    visits = output["visits"]
    assert sorted(visit["item"] for visit in visits) == items
    overlap = max_overlap((visit["started"], visit["finished"]) for visit in visits)
    assert 2 <= overlap <= 4
    assert len({visit["pid"] for visit in visits}) >= 2
    print(f"\n8-item Map, MaxConcurrency 4, 0.5 s items: {took:.2f} s, at most {overlap} iterations at once")


def test_an_execution_continues_as_new_through_start_execution(workflow: Workflow, eventually: Any) -> None:
    # Given a chain of three generations, each an execution started by the one before it
    chain = uuid.uuid4().hex[:12]
    first = workflow.start({"scenario": "chain", "chain": chain, "generation": 0, "generations": 2}, f"{chain}-0")

    # When the chain has run to its last generation
    last = first.rsplit(":", 1)[0] + f":{chain}-2"

    def last_generation() -> dict[str, Any] | None:
        try:
            return workflow.finished(last, eventually)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionDoesNotExist":
                raise
            return None

    finished = eventually(last_generation, timeout=EXECUTION_TIMEOUT_S, what="the chain's last generation")

    # Then each generation succeeded and started the next one with its own name and input
    assert finished["status"] == "SUCCEEDED", finished.get("cause")
    described = [workflow.finished(first.rsplit(":", 1)[0] + f":{chain}-{n}", eventually) for n in range(3)]
    assert [execution["status"] for execution in described] == ["SUCCEEDED"] * 3
    assert json.loads(described[0]["output"]) == {"next": described[1]["executionArn"]}
    assert json.loads(described[1]["input"])["AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID"] == first
    # and the DynamoDB tasks (updateItem, getItem, putItem) counted and recorded them
    assert workflow.item(f"chain#{chain}")["generations"] == {"N": "3"}
    done = workflow.item(f"chain#{chain}#done")
    assert (done["generations"], done["finishedBy"]) == ({"N": "3"}, {"S": f"{chain}-2"})


# ------------------------------------------------------------------ the local Lambda API


def test_the_local_lambda_api_answers_invocations_like_lambda(workflow: Workflow) -> None:
    # Given a Lambda client pointed at the local cloud's Lambda API
    cloud, work = workflow.cloud, workflow.stack.function("WorkFunction")
    lambda_api = boto3.client(
        "lambda",
        region_name=REGION,
        endpoint_url=cloud.lambda_endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    # When functions are invoked by name, ARN, partial ARN and with a qualifier, and one fails
    answers = [
        json.loads(
            lambda_api.invoke(FunctionName=name, Payload=json.dumps({"action": "echo", "n": i}))["Payload"].read()
        )
        for i, name in enumerate([work.name, work.arn, f"123456789012:function:{work.name}", f"{work.arn}:$LATEST"])
    ]
    failed = lambda_api.invoke(FunctionName=work.arn, Payload=json.dumps({"action": "fail", "message": "m"}))
    with pytest.raises(ClientError) as unknown:
        lambda_api.invoke(FunctionName=f"{work.name}-missing", Payload=b"{}")

    # Then each ran the handler with the payload unchanged, and the failure is Lambda's function error
    assert answers == [{"action": "echo", "n": i} for i in range(4)]
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert (error["errorType"], error["errorMessage"]) == ("PermanentError", "m")
    assert error["stackTrace"]
    assert unknown.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # and the rest of the Lambda API still comes from moto, on both endpoints
    assert lambda_api.get_function(FunctionName=work.name)["Configuration"]["FunctionArn"] == work.arn
    assert cloud.client("lambda", REGION).get_function(FunctionName=work.name)["Configuration"]["Timeout"] == 10


def test_a_task_whose_resource_is_a_function_arn_runs_on_the_local_executor(
    workflow: Workflow, eventually: Any
) -> None:
    # Given a state machine with the older Task form: Resource is the function's ARN
    work = workflow.stack.function("WorkFunction")
    definition = {"StartAt": "Echo", "States": {"Echo": {"Type": "Task", "Resource": work.arn, "End": True}}}
    machine = workflow.sfn.create_state_machine(
        name=f"direct-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::123456789012:role/{workflow.stack.physical_id('WorkflowRole')}",
    )["stateMachineArn"]

    # When it runs
    started = workflow.sfn.start_execution(
        stateMachineArn=machine, name="echo", input=json.dumps({"action": "echo", "value": [1, "two", None]})
    )
    execution = workflow.finished(started["executionArn"], eventually)

    # Then the handler's answer is the output
    assert execution["status"] == "SUCCEEDED", execution.get("cause")
    assert json.loads(execution["output"]) == {"action": "echo", "value": [1, "two", None]}
