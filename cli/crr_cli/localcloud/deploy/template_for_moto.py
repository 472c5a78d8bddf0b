"""The transformed template made fit for moto's CloudFormation, and what comes back after creation.

moto's CloudFormation mishandles some of the template: it casts Number parameters before looking them
up in Mappings (`resolve_find_in_map`), creates resources the local cloud must run itself or serve
elsewhere, and ignores some properties. `defer_to_outputs` takes those resources (or properties) out
or leaves them in, as the tables below say, and exports their properties through stack outputs
wrapped in `Fn::ToJsonString`, so moto resolves every intrinsic in them; after creation
`deferred_from_outputs` reads them back for the fix-ups (`fixups`) and the event-source mappings
(`describe`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from crr_cli.localcloud.deploy.errors import DeployError

DEFERRED_OUTPUT_PREFIX = "LocalCloudDeferred"

# Resource types taken out of the template before moto sees it, with the reason.
_DEFERRED_TYPES: Mapping[str, str] = {
    # moto would run the mapping inline inside SendMessage, and needs Docker to run Lambda code.
    "AWS::Lambda::EventSourceMapping": "run by the local SQS poller",
    # moto's CloudFormation has no QueuePolicy; applied with SetQueueAttributes instead.
    "AWS::SQS::QueuePolicy": "applied with SetQueueAttributes",
}
# Resource types moto's CloudFormation creates (they keep their physical ids, Refs and GetAtts) but
# which are really served elsewhere: all their properties are exported and `fixups.FIXUPS` creates them
# again where they are served.
_RECREATED_TYPES: Mapping[str, str] = {
    # The local cloud serves DynamoDB from its own moto process (cloud.py). The table moto's
    # CloudFormation creates in the main process is an orphan nothing reads or writes (every
    # DynamoDB client of the local cloud goes to the DynamoDB process): harmless. It also carries
    # neither TTL nor point-in-time recovery, which moto's CloudFormation ignores.
    "AWS::DynamoDB::Table": "created again in the DynamoDB process",
    # moto's CloudFormation creates state machines in a backend the Step Functions API does not
    # serve when execution is on (MOTO_CONFIG in cloud.py): created again through the API, with the
    # definition read from DefinitionS3Location and DefinitionSubstitutions applied.
    "AWS::StepFunctions::StateMachine": "created again where executions run",
}
# Properties moto's CloudFormation ignores on resources it does create; applied after creation.
# (Later: AWS::S3::Bucket NotificationConfiguration/VersioningConfiguration belong here, with a
# fix-up in `fixups.FIXUPS`.)
_SHADOWED_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    # moto's CloudFormation ignores ManagedPolicyArns, and an update keeps the old inline policies.
    "AWS::IAM::Role": ("Policies", "ManagedPolicyArns"),
    # moto validates the document before it drops AWS::NoValue (a conditional statement left out
    # fails as "Syntax errors in policy"), and has no update for a managed policy.
    "AWS::IAM::ManagedPolicy": ("PolicyDocument",),
}
# What moto's CloudFormation creates in place of a shadowed property it would refuse; the fix-up
# then applies the real value.
_STAND_INS: Mapping[str, Mapping[str, Any]] = {
    "AWS::IAM::ManagedPolicy": {
        "PolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Action": "none:null", "Resource": "*"}],
        }
    },
}


@dataclass(frozen=True)
class DeferredResource:
    """A resource (or some properties of one) whose settings we apply after the stack exists."""

    logical_id: str
    resource_type: str
    properties: Mapping[str, Any]


def cfn_true(value: Any) -> bool:
    """A CloudFormation boolean as an exported property carries it: `true` or the string "true"."""
    return value is True or str(value).lower() == "true"


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def resolve_find_in_map(template: dict[str, Any], values: Mapping[str, str]) -> int:
    """Replace `Fn::FindInMap` whose keys are literals or parameter refs by the mapped value.

    moto casts Number parameters to int before looking them up in a mapping whose keys are strings
    (KeyError, HTTP 500). Returns how many lookups were resolved.
    """
    mappings: Mapping[str, Any] = template.get("Mappings", {})

    def key_of(node: Any) -> str | None:
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return values.get(node["Ref"])
        if isinstance(node, str | int | float):
            return str(node)
        return None

    resolved = 0
    for node in list(_walk(template.get("Resources", {}))) + list(_walk(template.get("Outputs", {}))):
        for key, value in list(node.items()):
            if not (isinstance(value, dict) and set(value) == {"Fn::FindInMap"}):
                continue
            parts = [key_of(part) for part in value["Fn::FindInMap"]]
            path = [part for part in parts if part is not None]
            if len(path) != 3 or len(parts) != 3:
                continue
            try:
                node[key] = mappings[path[0]][path[1]][path[2]]
            except KeyError as error:
                raise DeployError(f"Fn::FindInMap {path} has no value in Mappings") from error
            resolved += 1
    return resolved


def defer_to_outputs(template: dict[str, Any]) -> list[str]:
    """Take deferred resources out of `template` and export the properties we apply later.

    Each export is an output `<prefix><LogicalId>` whose value is `Fn::ToJsonString` of the
    properties, so moto resolves their intrinsics. Returns the logical ids removed.
    """
    resources: dict[str, Any] = template["Resources"]
    outputs: dict[str, Any] = template.setdefault("Outputs", {})
    removed: list[str] = []
    for logical_id, resource in list(resources.items()):
        kind = resource.get("Type", "")
        properties = resource.get("Properties", {})
        if kind in _DEFERRED_TYPES:
            exported = properties
            removed.append(logical_id)
            del resources[logical_id]
        elif kind in _RECREATED_TYPES:
            exported = properties
        elif kind in _SHADOWED_PROPERTIES:
            exported = {name: properties[name] for name in _SHADOWED_PROPERTIES[kind] if name in properties}
            if not exported:
                continue
            properties.update(copy.deepcopy(_STAND_INS.get(kind, {})))
        else:
            continue
        output: dict[str, Any] = {"Value": {"Fn::ToJsonString": {"Type": kind, "Properties": exported}}}
        if "Condition" in resource:  # a resource its condition leaves out has nothing to apply
            output["Condition"] = resource["Condition"]
        outputs[f"{DEFERRED_OUTPUT_PREFIX}{logical_id}"] = output
    for resource in resources.values():
        depends = resource.get("DependsOn")
        if isinstance(depends, str) and depends in removed:
            del resource["DependsOn"]
        elif isinstance(depends, list):
            resource["DependsOn"] = [name for name in depends if name not in removed]
    return removed


def deferred_from_outputs(stack_outputs: list[Mapping[str, str]]) -> tuple[dict[str, str], list[DeferredResource]]:
    """The stack's own outputs, and the deferred resources `defer_to_outputs` exported, resolved by moto."""
    outputs: dict[str, str] = {}
    deferred: list[DeferredResource] = []
    for output in stack_outputs:
        key, value = output["OutputKey"], output["OutputValue"]
        if key.startswith(DEFERRED_OUTPUT_PREFIX):
            exported = json.loads(value)
            logical_id = key.removeprefix(DEFERRED_OUTPUT_PREFIX)
            deferred.append(DeferredResource(logical_id, exported["Type"], exported["Properties"]))
        else:
            outputs[key] = value
    return outputs, deferred
