"""Fix-ups after creation: apply what moto's CloudFormation ignored or must not create.

Each fix-up takes a resource `template_for_moto` deferred, with its properties resolved by moto, and
applies it through the service's own API: IAM roles get exactly their inline and managed policies
(and the template's own managed policies their document, over the stand-in moto created),
queue policies are set with SetQueueAttributes, tables are created again in the DynamoDB process
(with TTL and point-in-time recovery), state machines are created again where executions run
(`state_machines`). Each says what it did in `FixupContext.applied` (the stack's `fixups`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy import state_machines
from crr_cli.localcloud.deploy.describe import DeployedStateMachine, StackResource
from crr_cli.localcloud.deploy.template_for_moto import DeferredResource, cfn_true


@dataclass
class FixupContext:
    """What the fix-ups of one deploy share: where to apply, and what they report and create."""

    clients: ClientFactory
    region: str
    resources: Mapping[str, StackResource]
    applied: list[str] = field(default_factory=list)
    state_machines: dict[str, DeployedStateMachine] = field(default_factory=dict)


def _fix_queue_policy(context: FixupContext, deferred: DeferredResource) -> None:
    sqs = context.clients.client("sqs", context.region)
    document = dict(deferred.properties["PolicyDocument"])
    # moto resolves `!If [cond, statement, !Ref AWS::NoValue]` to null where CloudFormation drops the item.
    document["Statement"] = [statement for statement in document.get("Statement", []) if statement is not None]
    policy = json.dumps(document)
    queues = deferred.properties.get("Queues", [])
    for queue_url in queues:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    context.applied.append(f"{deferred.logical_id}: queue policy set on {len(queues)} queue(s)")


# CloudFormation properties of AWS::DynamoDB::Table that CreateTable takes unchanged, and those the
# fix-up applies with other calls; any other property is reported as not applied locally.
_TABLE_PROPERTIES_AS_IS = ("AttributeDefinitions", "KeySchema", "BillingMode", "TableClass", "Tags")
_TABLE_PROPERTIES_APPLIED = ("TableName", "TimeToLiveSpecification", "PointInTimeRecoverySpecification")
_TABLE_THROUGHPUTS = ("ProvisionedThroughput", "OnDemandThroughput", "WarmThroughput")
_INDEX_PROPERTIES = ("IndexName", "KeySchema", "Projection", *_TABLE_THROUGHPUTS)


def _throughputs(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The throughput settings of a table or index, with the numbers as ints (JSON may quote them)."""
    return {
        name: {setting: int(value) for setting, value in properties[name].items()}
        for name in _TABLE_THROUGHPUTS
        if properties.get(name)
    }


def _index(properties: Mapping[str, Any]) -> dict[str, Any]:
    index = {name: properties[name] for name in ("IndexName", "KeySchema", "Projection") if name in properties}
    return {**index, **_throughputs(properties)}


def _create_table_request(table: str, properties: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """CreateTable parameters for a table with these CloudFormation properties, and the names of the
    properties that have no local equivalent (ContributorInsights, Kinesis, resource policy, import)."""
    request: dict[str, Any] = {"TableName": table, **_throughputs(properties)}
    request.update({name: properties[name] for name in _TABLE_PROPERTIES_AS_IS if name in properties})
    for name in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if properties.get(name):
            request[name] = [_index(index) for index in properties[name]]
    sse = properties.get("SSESpecification")
    if sse:
        request["SSESpecification"] = {"Enabled": cfn_true(sse.get("SSEEnabled"))}
        request["SSESpecification"].update({k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse})
    stream = properties.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    if "DeletionProtectionEnabled" in properties:
        request["DeletionProtectionEnabled"] = cfn_true(properties["DeletionProtectionEnabled"])
    handled = {*request, *_TABLE_PROPERTIES_APPLIED}
    ignored = sorted(name for name in properties if name not in handled)
    ignored += sorted(
        f"{index['IndexName']}.{name}"
        for index in properties.get("GlobalSecondaryIndexes", [])
        for name in index
        if name not in _INDEX_PROPERTIES
    )
    return request, ignored


def _fix_table(context: FixupContext, deferred: DeferredResource) -> None:
    """Create the table in the process that serves DynamoDB, then its TTL and point-in-time recovery
    (which moto's CloudFormation ignores)."""
    dynamodb = context.clients.client("dynamodb", context.region)
    table = context.resources[deferred.logical_id].physical_id
    request, ignored = _create_table_request(table, deferred.properties)
    where = context.clients.endpoint_for("dynamodb")
    try:
        dynamodb.create_table(**request)
        context.applied.append(f"{deferred.logical_id}: table {table} created at {where}")
    except dynamodb.exceptions.ResourceInUseException:  # same process as CloudFormation, or a leftover
        context.applied.append(f"{deferred.logical_id}: table {table} already exists at {where}; kept")
    if ignored:
        context.applied.append(f"{deferred.logical_id}: not applied locally: {', '.join(ignored)}")
    ttl = deferred.properties.get("TimeToLiveSpecification")
    if ttl and cfn_true(ttl.get("Enabled")):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
        context.applied.append(f"{deferred.logical_id}: time to live on {ttl['AttributeName']}")
    pitr = deferred.properties.get("PointInTimeRecoverySpecification")
    if pitr and cfn_true(pitr.get("PointInTimeRecoveryEnabled")):
        dynamodb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
        context.applied.append(f"{deferred.logical_id}: point-in-time recovery enabled")


def _without_no_value(node: Any) -> Any:
    """`node` without the nulls `AWS::NoValue` leaves in exported properties (CloudFormation drops them)."""
    if isinstance(node, dict):
        return {key: _without_no_value(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [_without_no_value(value) for value in node if value is not None]
    return node


def _fix_role(context: FixupContext, deferred: DeferredResource) -> None:
    """Give the role exactly the template's inline and managed policies (the local cloud enforces them)."""
    iam = context.clients.client("iam", context.region)
    role = context.resources[deferred.logical_id].physical_id
    wanted = {str(policy["PolicyName"]): policy["PolicyDocument"] for policy in deferred.properties.get("Policies", [])}
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        if name not in wanted:
            iam.delete_role_policy(RoleName=role, PolicyName=name)
    for name, document in wanted.items():
        # IAM takes a policy without Version (as 2008-10-17; SAM writes none); moto's validator does not.
        versioned = {"Version": "2012-10-17", **_without_no_value(document)}
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(versioned))
    attached = {policy["PolicyArn"] for policy in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]}
    managed = [str(arn) for arn in deferred.properties.get("ManagedPolicyArns", [])]
    for arn in attached - set(managed):
        iam.detach_role_policy(RoleName=role, PolicyArn=arn)
    for arn in managed:
        if arn not in attached:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    context.applied.append(f"{deferred.logical_id}: {len(wanted)} inline and {len(managed)} managed policies")


def _fix_managed_policy(context: FixupContext, deferred: DeferredResource) -> None:
    """Make the template's document the managed policy's default version (moto created a stand-in)."""
    iam = context.clients.client("iam", context.region)
    arn = context.resources[deferred.logical_id].physical_id
    document = {"Version": "2012-10-17", **_without_no_value(deferred.properties["PolicyDocument"])}
    iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(document), SetAsDefault=True)
    for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
        if not version["IsDefaultVersion"]:  # IAM keeps at most five versions
            iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
    context.applied.append(f"{deferred.logical_id}: managed policy document applied")


def _fix_state_machine(context: FixupContext, deferred: DeferredResource) -> None:
    """Create the state machine where executions run (`state_machines.recreate`)."""
    arn = context.resources[deferred.logical_id].physical_id
    machine, notes = state_machines.recreate(context.clients, context.region, deferred, arn)
    context.applied.extend(notes)
    context.state_machines[deferred.logical_id] = machine


# One fix-up per deferred resource type (template_for_moto says which types are deferred and why).
FIXUPS: Mapping[str, Callable[[FixupContext, DeferredResource], None]] = {
    "AWS::IAM::Role": _fix_role,
    "AWS::IAM::ManagedPolicy": _fix_managed_policy,
    "AWS::SQS::QueuePolicy": _fix_queue_policy,
    "AWS::DynamoDB::Table": _fix_table,
    "AWS::StepFunctions::StateMachine": _fix_state_machine,
}


def apply_fixups(context: FixupContext, deferred: list[DeferredResource]) -> None:
    """Run the fix-up of every deferred resource that has one, in template order; botocore errors
    from moto and DeployError (from the state machines) pass through."""
    for item in deferred:
        fixup = FIXUPS.get(item.resource_type)
        if fixup is not None:
            fixup(context, item)
