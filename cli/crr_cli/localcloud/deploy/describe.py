"""What a local deploy created, described for the rest of the local cloud.

`DeployedStack` is the answer of `deploy_stack`: outputs, resources, the functions the local
executor runs (code dir, handler, timeout, environment), the SQS event-source mappings the local
poller runs, and the state machines moto executes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy.template_for_moto import DeferredResource, cfn_true


@dataclass(frozen=True)
class StackResource:
    """One resource of the created stack, as moto's CloudFormation reports it."""

    logical_id: str
    resource_type: str
    physical_id: str


@dataclass(frozen=True)
class DeployedFunction:
    """A Lambda function of the stack and everything the local executor needs to run it."""

    stack_name: str
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout_s: int
    memory_mb: int
    environment: Mapping[str, str]
    role_arn: str = ""


@dataclass(frozen=True)
class EventSourceMapping:
    """An SQS event-source mapping of the template, resolved, for the local poller."""

    logical_id: str
    function_logical_id: str
    function_name: str
    queue_arn: str
    queue_url: str
    batch_size: int
    batching_window_s: int
    function_response_types: tuple[str, ...]
    maximum_concurrency: int | None
    enabled: bool

    @property
    def report_batch_item_failures(self) -> bool:
        return "ReportBatchItemFailures" in self.function_response_types


@dataclass(frozen=True)
class DeployedStateMachine:
    """A state machine of the stack as the local cloud created it (substitutions applied)."""

    logical_id: str
    name: str
    arn: str
    definition: str
    role_arn: str
    type: str
    # Logical ids of the stack's functions the definition names (by ARN or name).
    invoked_functions: tuple[str, ...] = ()
    # How many tasks one execution may run at once, from its Map/Parallel states (see `task_concurrency`).
    task_concurrency: int = 1


@dataclass(frozen=True)
class DeployedStack:
    """What `deploy_stack` created: outputs, resources, functions and SQS event sources."""

    stack_name: str
    stack_id: str
    region: str
    parameters: Mapping[str, str]
    outputs: Mapping[str, str]
    resources: Mapping[str, StackResource]
    functions: Mapping[str, DeployedFunction]
    event_source_mappings: tuple[EventSourceMapping, ...]
    fixups: tuple[str, ...] = field(default=())
    state_machines: Mapping[str, DeployedStateMachine] = field(default_factory=dict)

    def function(self, name: str) -> DeployedFunction:
        """The function with logical id or physical name `name`; KeyError when there is none."""
        if name in self.functions:
            return self.functions[name]
        for function in self.functions.values():
            if name in (function.name, function.arn):
                return function
        raise KeyError(name)

    def physical_id(self, logical_id: str) -> str:
        """Physical id of the resource `logical_id` (a state machine's is its ARN); KeyError when the
        stack has no such resource."""
        return self.resources[logical_id].physical_id

    def state_machine(self, name: str) -> DeployedStateMachine:
        """The state machine with logical id, name or ARN `name`; KeyError when there is none."""
        if name in self.state_machines:
            return self.state_machines[name]
        for machine in self.state_machines.values():
            if name in (machine.name, machine.arn):
                return machine
        raise KeyError(name)


def _queue_url(clients: ClientFactory, queue_arn: str) -> str:
    _, _, _, region, account, name = queue_arn.split(":", 5)
    sqs = clients.client("sqs", region)
    url: str = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url


def event_source_mapping(
    clients: ClientFactory, deferred: DeferredResource, functions: Mapping[str, DeployedFunction]
) -> EventSourceMapping | str:
    """The resolved mapping, or a note saying why the local cloud does not run it."""
    properties = deferred.properties
    source = str(properties.get("EventSourceArn", ""))
    if not source.startswith("arn:aws:sqs:"):
        return f"{deferred.logical_id}: event source {source or '?'} is not SQS; not polled locally"
    target = str(properties["FunctionName"])
    function = next((f for f in functions.values() if target in (f.name, f.arn, f.logical_id)), None)
    if function is None:
        return f"{deferred.logical_id}: function {target} is not run locally; not polled"
    scaling = properties.get("ScalingConfig") or {}
    concurrency = scaling.get("MaximumConcurrency")
    return EventSourceMapping(
        logical_id=deferred.logical_id,
        function_logical_id=function.logical_id,
        function_name=function.name,
        queue_arn=source,
        queue_url=_queue_url(clients, source),
        batch_size=int(properties.get("BatchSize", 10)),
        batching_window_s=int(properties.get("MaximumBatchingWindowInSeconds", 0)),
        function_response_types=tuple(properties.get("FunctionResponseTypes", ())),
        maximum_concurrency=int(concurrency) if concurrency is not None else None,
        enabled=cfn_true(properties.get("Enabled", True)),
    )


def describe_functions(
    clients: ClientFactory,
    stack_name: str,
    region: str,
    resources: Mapping[str, StackResource],
    code_dirs: Mapping[str, Path],
) -> tuple[dict[str, DeployedFunction], list[str]]:
    lambda_client = clients.client("lambda", region)
    functions: dict[str, DeployedFunction] = {}
    notes: list[str] = []
    for resource in resources.values():
        if resource.resource_type != "AWS::Lambda::Function":
            continue
        if resource.logical_id not in code_dirs:
            notes.append(f"{resource.logical_id}: no local CodeUri; the local cloud cannot run it")
            continue
        config = lambda_client.get_function_configuration(FunctionName=resource.physical_id)
        functions[resource.logical_id] = DeployedFunction(
            stack_name=stack_name,
            logical_id=resource.logical_id,
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            code_dir=code_dirs[resource.logical_id],
            handler=config["Handler"],
            runtime=config.get("Runtime", ""),
            timeout_s=int(config.get("Timeout", 3)),
            memory_mb=int(config.get("MemorySize", 128)),
            environment=dict(config.get("Environment", {}).get("Variables", {})),
            role_arn=str(config.get("Role", "")),
        )
    return functions, notes


def with_invoked_functions(
    machines: Mapping[str, DeployedStateMachine], functions: Mapping[str, DeployedFunction]
) -> dict[str, DeployedStateMachine]:
    """The state machines with `invoked_functions`: the functions whose ARN or name their definition holds."""
    return {
        logical_id: replace(
            machine,
            invoked_functions=tuple(
                function.logical_id
                for function in functions.values()
                if function.arn in machine.definition or json.dumps(function.name) in machine.definition
            ),
        )
        for logical_id, machine in machines.items()
    }
