"""Parity: the local cloud's Step Functions executions end as AWS documents them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud

pytestmark = pytest.mark.integration

REGION = "us-west-1"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
# Three iterations that wait long enough to be stopped in the act; a failure of the Map would be caught.
WAITING_MAP = {
    "StartAt": "Work",
    "States": {
        "Work": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 40,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "Wait",
                "States": {"Wait": {"Type": "Wait", "Seconds": 30, "End": True}},
            },
            "ResultPath": None,
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}],
            "End": True,
        },
        "Caught": {"Type": "Pass", "End": True},
    },
}


def test_an_execution_stopped_inside_an_inline_map_is_aborted_and_runs_nothing_more(
    local_cloud: LocalCloud, eventually: Callable[..., Any]
) -> None:
    """StopExecution ends an execution as ABORTED (DescribeExecution's status), and no state runs after
    it: not the Catch of the Map whose iterations it cut off.

    AWS: "StopExecution" (AWS Step Functions API Reference),
    https://docs.aws.amazon.com/step-functions/latest/apireference/API_StopExecution.html, and
    "DescribeExecution", https://docs.aws.amazon.com/step-functions/latest/apireference/API_DescribeExecution.html
    (status ABORTED); the inline Map: https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html
    """
    sfn = local_cloud.client("stepfunctions", REGION)
    iam = local_cloud.client("iam", REGION)
    name = f"parity-{uuid.uuid4().hex[:12]}"
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"]
    machine = sfn.create_state_machine(name=name, definition=json.dumps(WAITING_MAP), roleArn=role)["stateMachineArn"]
    # Given an execution whose inline Map's iterations are waiting
    execution = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps({"items": [1, 2, 3]}))[
        "executionArn"
    ]

    def history() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
        return events

    eventually(
        lambda: sum(event["type"] == "WaitStateEntered" for event in history()) == 3, what="the iterations to wait"
    )
    # When it is stopped, as an operator would
    sfn.stop_execution(executionArn=execution)
    # Then it ends ABORTED, not FAILED
    described = eventually(
        lambda: (found := sfn.describe_execution(executionArn=execution))["status"] != "RUNNING" and found,
        what="the execution to end",
    )
    assert described["status"] == "ABORTED", described
    # And nothing ran after the stop: the Map's Catch did not route the aborted iterations anywhere
    events = history()
    entered = [event["stateEnteredEventDetails"]["name"] for event in events if "stateEnteredEventDetails" in event]
    assert "Caught" not in entered
    # And the execution's end is recorded once, after which only the Map's own aborted bookkeeping may
    # follow (its iterations' abort events race the execution's here), never a state
    types = [event["type"] for event in events]
    assert types.count("ExecutionAborted") == 1
    after = types[types.index("ExecutionAborted") + 1 :]
    assert all(kind in ("MapIterationAborted", "MapStateAborted") for kind in after), after
