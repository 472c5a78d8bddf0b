"""`deploy_stack`: the steps of a local deploy, in order (see the package docstring)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy import cfn_checks
from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template
from crr_cli.localcloud.deploy.describe import (
    DeployedStack,
    EventSourceMapping,
    describe_functions,
    event_source_mapping,
    with_invoked_functions,
)
from crr_cli.localcloud.deploy.errors import DeployError
from crr_cli.localcloud.deploy.fixups import FixupContext, apply_fixups
from crr_cli.localcloud.deploy.package import package_artifacts
from crr_cli.localcloud.deploy.stack import STACK_WAIT_TIMEOUT_S, create_or_update, stack_resources
from crr_cli.localcloud.deploy.template_for_moto import defer_to_outputs, deferred_from_outputs, resolve_find_in_map
from crr_cli.localcloud.deploy.transform import transform_offline


def _check_parameters(sam: Mapping[str, Any], parameters: Mapping[str, str]) -> dict[str, str]:
    """Parameter values including defaults; DeployError names the required ones missing."""
    declared: Mapping[str, Any] = sam.get("Parameters", {})
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise DeployError(f"unknown template parameters: {', '.join(unknown)}")
    missing = sorted(name for name, spec in declared.items() if "Default" not in spec and name not in parameters)
    if missing:
        raise DeployError(f"missing required template parameters: {', '.join(missing)}")
    values = {name: str(spec["Default"]) for name, spec in declared.items() if "Default" in spec}
    values.update(parameters)
    return values


def _check_as_cloudformation_does(sam: Mapping[str, Any], values: Mapping[str, str], region: str, stack: str) -> None:
    """What CloudFormation refuses before it creates anything, and moto's does not check."""
    try:
        cfn_checks.check_parameters(sam, values)
        cfn_checks.check_rules(sam, values, {"AWS::Region": region, "AWS::StackName": stack})
    except cfn_checks.TemplateCheckError as error:
        raise DeployError(str(error)) from error


def deploy_stack(
    clients: ClientFactory,
    template_path: Path,
    stack_name: str,
    region: str,
    parameters: Mapping[str, str],
    *,
    timeout_s: float = STACK_WAIT_TIMEOUT_S,
) -> DeployedStack:
    """Package, transform and create `template_path` as stack `stack_name` in `region` (or update the
    stack when it exists: its fix-ups run again, so roles get the new policies).

    Raises DeployError when the template cannot be transformed or deployed locally, or the stack
    does not reach CREATE_COMPLETE within `timeout_s`; botocore errors from moto pass through.
    """
    sam = load_cfn_template(template_path)
    values = _check_parameters(sam, parameters)
    _check_as_cloudformation_does(sam, values, region, stack_name)
    code_dirs = package_artifacts(sam, template_path.parent.resolve(), clients, region, stack_name)
    template = transform_offline(sam, parameters, region)
    pseudo = {"AWS::Region": region, "AWS::StackName": stack_name}
    resolved_lookups = resolve_find_in_map(template, {**values, **pseudo})
    defer_to_outputs(template)

    cloudformation = clients.client("cloudformation", region)
    request = {
        "StackName": stack_name,
        "TemplateBody": json.dumps(template),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    }
    stack = create_or_update(cloudformation, request, timeout_s)
    resources = stack_resources(cloudformation, stack_name)

    outputs, deferred = deferred_from_outputs(stack.get("Outputs", []))

    context = FixupContext(clients, region, resources)
    if resolved_lookups:
        context.applied.append(f"template: {resolved_lookups} Fn::FindInMap lookup(s) resolved before creation")
    apply_fixups(context, deferred)

    functions, notes = describe_functions(clients, stack_name, region, resources, code_dirs)
    mappings: list[EventSourceMapping] = []
    for item in deferred:
        if item.resource_type == "AWS::Lambda::EventSourceMapping":
            mapping = event_source_mapping(clients, item, functions)
            if isinstance(mapping, str):
                notes.append(mapping)
            else:
                mappings.append(mapping)
                context.applied.append(f"{item.logical_id}: run by the local SQS poller")
    return DeployedStack(
        stack_name=stack_name,
        stack_id=str(stack["StackId"]),
        region=region,
        parameters=values,
        outputs=outputs,
        resources=resources,
        functions=functions,
        event_source_mappings=tuple(mappings),
        fixups=tuple(context.applied + notes),
        state_machines=with_invoked_functions(context.state_machines, functions),
    )
