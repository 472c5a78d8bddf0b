"""State machines created again where moto executes them, as CloudFormation would have created them.

moto's CloudFormation puts state machines in a Step Functions backend that the API does not serve
once the local cloud has turned on moto's ASL interpreter, and it ignores `DefinitionS3Location`
and `DefinitionSubstitutions`. `recreate` reads the definition, applies the substitutions (resolved
by moto like every exported property) and creates the state machine through the Step Functions API
under the name and ARN the stack already gave it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy.describe import DeployedStateMachine
from crr_cli.localcloud.deploy.errors import DeployError
from crr_cli.localcloud.deploy.template_for_moto import DeferredResource, cfn_true

# Step Functions runs at most 40 iterations of an inline Map at once; the local pools stop there too.
MAP_CONCURRENCY_LIMIT = 40
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def _definition_of(s3: Any, deferred: DeferredResource) -> str:
    """The state machine's definition text, from DefinitionString, Definition or DefinitionS3Location."""
    properties = deferred.properties
    if "DefinitionString" in properties:
        return str(properties["DefinitionString"])
    if "Definition" in properties:
        return json.dumps(properties["Definition"])
    location = properties.get("DefinitionS3Location")
    if not location:
        raise DeployError(f"{deferred.logical_id}: the state machine has no definition")
    request = {"Bucket": location["Bucket"], "Key": location["Key"]}
    if location.get("Version"):
        request["VersionId"] = location["Version"]
    body: bytes = s3.get_object(**request)["Body"].read()
    return body.decode("utf-8")


def substitute_definition(definition: str, substitutions: Mapping[str, Any]) -> tuple[str, list[str]]:
    """Replace each `${Name}` of `definition` whose Name is in `substitutions`, as CloudFormation does
    with DefinitionSubstitutions (strings as they are, other values as JSON); returns the text and
    the placeholders left in it."""
    left: list[str] = []

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in substitutions:
            left.append(match.group(0))
            return match.group(0)
        value = substitutions[name]
        return value if isinstance(value, str) else json.dumps(value)

    return _PLACEHOLDER.sub(value_of, definition), left


def _logging_configuration(logging: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's LoggingConfiguration in the Step Functions API's spelling."""
    configuration: dict[str, Any] = {}
    if "Level" in logging:
        configuration["level"] = logging["Level"]
    if "IncludeExecutionData" in logging:
        configuration["includeExecutionData"] = cfn_true(logging["IncludeExecutionData"])
    destinations = []
    for destination in logging.get("Destinations", []):
        group = destination.get("CloudWatchLogsLogGroup", {})
        destinations.append({"cloudWatchLogsLogGroup": {"logGroupArn": group.get("LogGroupArn", "")}})
    if destinations:
        configuration["destinations"] = destinations
    return configuration


def _state_machine_settings(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The CreateStateMachine/UpdateStateMachine settings besides name, definition and type."""
    settings: dict[str, Any] = {"roleArn": properties["RoleArn"]}
    if properties.get("LoggingConfiguration"):
        settings["loggingConfiguration"] = _logging_configuration(properties["LoggingConfiguration"])
    if properties.get("TracingConfiguration"):
        settings["tracingConfiguration"] = {"enabled": cfn_true(properties["TracingConfiguration"].get("Enabled"))}
    return settings


def task_concurrency(states: Mapping[str, Any]) -> int:
    """How many tasks one run of `states` (a definition's or a branch's States) may run at once:
    a Map multiplies its iterations' by its MaxConcurrency (MAP_CONCURRENCY_LIMIT when unbounded or
    read from the input), a Parallel adds up its branches'; capped at MAP_CONCURRENCY_LIMIT."""
    most = 1
    for state in states.values():
        kind = state.get("Type")
        if kind == "Map":
            inner = state.get("ItemProcessor") or state.get("Iterator") or {}
            limit = state.get("MaxConcurrency")
            width = limit if isinstance(limit, int) and limit > 0 else MAP_CONCURRENCY_LIMIT
            most = max(most, width * task_concurrency(inner.get("States", {})))
        elif kind == "Parallel":
            most = max(most, sum(task_concurrency(branch.get("States", {})) for branch in state.get("Branches", [])))
    return min(most, MAP_CONCURRENCY_LIMIT)


# CloudFormation properties of AWS::StepFunctions::StateMachine the fix-up applies; any other (such as
# EncryptionConfiguration) is reported as not applied locally.
_STATE_MACHINE_PROPERTIES = (
    "Definition",
    "DefinitionString",
    "DefinitionS3Location",
    "DefinitionSubstitutions",
    "RoleArn",
    "StateMachineName",
    "StateMachineType",
    "LoggingConfiguration",
    "TracingConfiguration",
    "Tags",
)


def _state_machine_exists(sfn: Any, arn: str) -> bool:
    try:
        sfn.describe_state_machine(stateMachineArn=arn)
    except sfn.exceptions.StateMachineDoesNotExist:
        return False
    return True


def _put_state_machine(sfn: Any, deferred: DeferredResource, arn: str, definition: str) -> str:
    """Create the state machine through the API under the ARN moto's CloudFormation gave it, or update
    it when it exists already; returns which. Raises DeployError when moto refuses the definition."""
    properties = deferred.properties
    settings = _state_machine_settings(properties)
    try:
        if _state_machine_exists(sfn, arn):
            sfn.update_state_machine(stateMachineArn=arn, definition=definition, **settings)
            return "updated"
        created = sfn.create_state_machine(
            name=arn.rsplit(":", 1)[1],
            definition=definition,
            type=str(properties.get("StateMachineType", "STANDARD")),
            tags=[{"key": tag["Key"], "value": str(tag["Value"])} for tag in properties.get("Tags", [])],
            **settings,
        )
    except sfn.exceptions.InvalidDefinition as error:
        raise DeployError(f"{deferred.logical_id}: moto refuses the definition: {error}") from error
    if created["stateMachineArn"] != arn:
        raise DeployError(f"{deferred.logical_id}: created as {created['stateMachineArn']}, not {arn}")
    return "created"


def recreate(
    clients: ClientFactory, region: str, deferred: DeferredResource, arn: str
) -> tuple[DeployedStateMachine, list[str]]:
    """Create the state machine `arn` where executions run, its definition read and substituted;
    returns it and notes on what was applied. Raises DeployError when the definition is missing, is
    not JSON after substitution, or moto refuses it, or when moto creates it under another ARN."""
    properties = deferred.properties
    substitutions = properties.get("DefinitionSubstitutions") or {}
    definition, left = substitute_definition(_definition_of(clients.client("s3", region), deferred), substitutions)
    try:
        parsed = json.loads(definition)
    except json.JSONDecodeError as error:
        raise DeployError(f"{deferred.logical_id}: the substituted definition is not JSON: {error}") from error
    verb = _put_state_machine(clients.client("stepfunctions", region), deferred, arn, definition)
    name = arn.rsplit(":", 1)[1]
    notes = [f"{deferred.logical_id}: state machine {name} {verb}, {len(substitutions)} substitution(s)"]
    ignored = sorted(key for key in properties if key not in _STATE_MACHINE_PROPERTIES)
    if ignored:
        notes.append(f"{deferred.logical_id}: not applied locally: {', '.join(ignored)}")
    if left:
        notes.append(f"{deferred.logical_id}: placeholders without a substitution: {', '.join(sorted(set(left)))}")
    machine = DeployedStateMachine(
        logical_id=deferred.logical_id,
        name=name,
        arn=arn,
        definition=definition,
        role_arn=str(properties["RoleArn"]),
        type=str(properties.get("StateMachineType", "STANDARD")),
        task_concurrency=task_concurrency(parsed.get("States", {})),
    )
    return machine, notes
