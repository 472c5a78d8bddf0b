"""The stack in moto's CloudFormation: create it or update it, wait until it is done, list its resources."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from crr_cli.localcloud.deploy.describe import StackResource
from crr_cli.localcloud.deploy.errors import DeployError

STACK_WAIT_TIMEOUT_S = 120.0


def create_or_update(cloudformation: Any, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Create the stack, or update it when one of that name exists, as `sam deploy` does (e.g. with a
    peer's ARNs for two-way sync); returns it once complete."""
    name = str(request["StackName"])
    if _stack_exists(cloudformation, name):
        cloudformation.update_stack(**request)
        return _wait_for_stack(cloudformation, name, timeout_s, "UPDATE_COMPLETE")
    cloudformation.create_stack(**request)
    return _wait_for_stack(cloudformation, name, timeout_s)


def _stack_exists(cloudformation: Any, stack_name: str) -> bool:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return False
        raise
    return any(stack["StackStatus"] != "DELETE_COMPLETE" for stack in stacks)


def _wait_for_stack(
    cloudformation: Any, stack_name: str, timeout_s: float, wanted: str = "CREATE_COMPLETE"
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    interval = 0.02
    while True:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = str(stack["StackStatus"])
        if not status.endswith("_IN_PROGRESS"):
            if status != wanted:
                reason = stack.get("StackStatusReason", "no reason given")
                raise DeployError(f"stack {stack_name} ended in {status}: {reason}")
            return stack
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {status} after {timeout_s:.0f}s")
        time.sleep(interval)
        interval = min(interval * 2, 0.5)


def stack_resources(cloudformation: Any, stack_name: str) -> dict[str, StackResource]:
    paginator = cloudformation.get_paginator("list_stack_resources")
    resources: dict[str, StackResource] = {}
    for page in paginator.paginate(StackName=stack_name):
        for summary in page["StackResourceSummaries"]:
            logical_id = summary["LogicalResourceId"]
            if logical_id:  # moto lists unsupported types under an empty id
                resources[logical_id] = StackResource(
                    logical_id, summary["ResourceType"], summary.get("PhysicalResourceId", "")
                )
    return resources
