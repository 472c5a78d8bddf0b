"""Deploy a SAM template into the local cloud's moto CloudFormation, offline.

The steps mirror `sam package` + `sam deploy`, minus everything that needs AWS:
1. zip every local `CodeUri` / `ContentUri`, and upload every local state machine definition
   (`DefinitionUri` / `DefinitionS3Location`), into an artifacts bucket in moto and point the
   template at it (remembering which directory each function's code came from);
2. transform SAM to CloudFormation with aws-sam-translator, with a managed-policy map that never
   calls IAM;
3. fix the template where moto's CloudFormation would get it wrong, and take out the resources
   it must not create (see `_DEFERRED_TYPES`): their properties go through stack outputs wrapped in
   `Fn::ToJsonString`, so moto resolves every intrinsic in them and we apply them afterwards;
4. create the stack, wait for CREATE_COMPLETE, apply the deferred settings (`_FIXUPS`), and
   describe what was deployed: outputs, functions (code dir, handler, timeout, environment) and the
   SQS event-source mappings the local poller has to run.

The local cloud serves DynamoDB from a moto process of its own, which moto's CloudFormation (in
the main process) cannot reach: tables are created by the stack as usual (so `Ref`/`GetAtt` and
the physical names work) and then created again, with all their properties, through the clients'
DynamoDB endpoint (`_RECREATED_TYPES`).

State machines are recreated too: moto's CloudFormation puts them in a Step Functions backend that
the API does not serve once the local cloud has turned on moto's ASL interpreter, and it ignores
`DefinitionS3Location` and `DefinitionSubstitutions`. The fix-up reads the definition, applies the
substitutions (resolved by moto like every exported property) and creates the state machine through
the Step Functions API under the name and ARN the stack already gave it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from samtranslator.metrics.metrics import DummyMetricsPublisher, Metrics
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from crr_cli.localcloud import cfn_checks
from crr_cli.localcloud.cfn_yaml import load_cfn_template
from crr_cli.localcloud.clients import ClientFactory

ARTIFACTS_BUCKET_PREFIX = "crr-localcloud-artifacts"
DEFERRED_OUTPUT_PREFIX = "LocalCloudDeferred"
STACK_WAIT_TIMEOUT_S = 120.0

# The AWS managed policies SAM attaches to function roles; resolved here so no IAM call is needed.
MANAGED_POLICIES: Mapping[str, str] = {
    name: f"arn:aws:iam::aws:policy/{path}"
    for name, path in {
        "AWSLambdaBasicExecutionRole": "service-role/AWSLambdaBasicExecutionRole",
        "AWSLambdaSQSQueueExecutionRole": "service-role/AWSLambdaSQSQueueExecutionRole",
        "AWSLambdaDynamoDBExecutionRole": "service-role/AWSLambdaDynamoDBExecutionRole",
        "AWSLambdaKinesisExecutionRole": "service-role/AWSLambdaKinesisExecutionRole",
        "AWSLambdaVPCAccessExecutionRole": "service-role/AWSLambdaVPCAccessExecutionRole",
        "AWSLambdaRole": "service-role/AWSLambdaRole",
        "AWSXrayWriteOnlyAccess": "AWSXrayWriteOnlyAccess",
        "AWSXRayDaemonWriteAccess": "AWSXRayDaemonWriteAccess",
        "CloudWatchLambdaInsightsExecutionRolePolicy": "CloudWatchLambdaInsightsExecutionRolePolicy",
    }.items()
}

# Resource types taken out of the template before moto sees it, with the reason.
_DEFERRED_TYPES: Mapping[str, str] = {
    # moto would run the mapping inline inside SendMessage, and needs Docker to run Lambda code.
    "AWS::Lambda::EventSourceMapping": "run by the local SQS poller",
    # moto's CloudFormation has no QueuePolicy; applied with SetQueueAttributes instead.
    "AWS::SQS::QueuePolicy": "applied with SetQueueAttributes",
}
# Resource types moto's CloudFormation creates (they keep their physical ids, Refs and GetAtts) but
# which are really served elsewhere: all their properties are exported and `_FIXUPS` creates them
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
# fix-up in `_FIXUPS`.)
_SHADOWED_PROPERTIES: Mapping[str, tuple[str, ...]] = {
    # moto's CloudFormation ignores ManagedPolicyArns, and an update keeps the old inline policies.
    "AWS::IAM::Role": ("Policies", "ManagedPolicyArns"),
}
_PSEUDO_PARAMETERS = ("AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::StackName", "AWS::URLSuffix")
# Step Functions runs at most 40 iterations of an inline Map at once; the local pools stop there too.
MAP_CONCURRENCY_LIMIT = 40
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
_SKIPPED_IN_ZIPS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".aws-sam"}


class DeployError(RuntimeError):
    """The template cannot be deployed locally, or moto's CloudFormation failed to create the stack."""


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


@dataclass(frozen=True)
class _Deferred:
    """A resource (or some properties of one) whose settings we apply after the stack exists."""

    logical_id: str
    resource_type: str
    properties: Mapping[str, Any]


@dataclass
class _FixupContext:
    clients: ClientFactory
    region: str
    resources: Mapping[str, StackResource]
    applied: list[str] = field(default_factory=list)
    state_machines: dict[str, DeployedStateMachine] = field(default_factory=dict)


# ------------------------------------------------------------------ packaging


def _zip_directory(directory: Path) -> bytes:
    """A deterministic zip of `directory` (sorted entries, fixed timestamps, no caches)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            relative = path.relative_to(directory)
            if not path.is_file() or _SKIPPED_IN_ZIPS.intersection(relative.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(relative.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def _local_dir(uri: Any, base_dir: Path, what: str) -> Path | None:
    """The directory a local `CodeUri`/`ContentUri` names, or None when it is not a local path."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        return None
    directory = (base_dir / uri).resolve()
    if not directory.is_dir():
        raise DeployError(f"{what} points at {directory}, which is not a directory")
    return directory


def _local_file(uri: Any, base_dir: Path, what: str) -> Path | None:
    """The file a local `DefinitionUri`/`DefinitionS3Location` names, or None when it is not a local path."""
    if not isinstance(uri, str) or uri.startswith("s3://"):
        return None
    path = (base_dir / uri).resolve()
    if not path.is_file():
        raise DeployError(f"{what} points at {path}, which is not a file")
    return path


@dataclass(frozen=True)
class _Artifacts:
    """Where packaging stores a stack's local artifacts: the region's artifacts bucket in moto."""

    s3: Any
    bucket: str
    stack_name: str
    base_dir: Path

    def upload(self, logical_id: str, body: bytes) -> str:
        """Store `body` under a content-addressed key of `logical_id`; returns the key."""
        key = f"{self.stack_name}/{logical_id}/{hashlib.sha256(body).hexdigest()}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key


def _package_code(artifacts: _Artifacts, logical_id: str, resource: dict[str, Any], code_uri: Any) -> Path | None:
    """Zip and upload a function's or layer's local code directory (`code_uri` is the Globals
    default of functions); returns the directory, None when the code is not local."""
    kind = resource.get("Type")
    properties = resource["Properties"]
    uri_key = "CodeUri" if kind == "AWS::Serverless::Function" else "ContentUri"
    uri = properties.get(uri_key, code_uri if kind == "AWS::Serverless::Function" else None)
    directory = _local_dir(uri, artifacts.base_dir, f"{logical_id}.{uri_key}")
    if directory is None:
        return None
    key = artifacts.upload(logical_id, _zip_directory(directory))
    properties[uri_key] = f"s3://{artifacts.bucket}/{key}"
    return directory


def _package_definition(artifacts: _Artifacts, logical_id: str, resource: dict[str, Any]) -> None:
    """Upload a state machine's local definition file, as `sam package` does (SAM's `DefinitionUri`
    becomes an s3:// URI, CloudFormation's `DefinitionS3Location` a Bucket/Key pair)."""
    properties = resource["Properties"]
    serverless = resource.get("Type") == "AWS::Serverless::StateMachine"
    uri_key = "DefinitionUri" if serverless else "DefinitionS3Location"
    path = _local_file(properties.get(uri_key), artifacts.base_dir, f"{logical_id}.{uri_key}")
    if path is None:
        return
    key = artifacts.upload(logical_id, path.read_bytes())
    properties[uri_key] = f"s3://{artifacts.bucket}/{key}" if serverless else {"Bucket": artifacts.bucket, "Key": key}


_CODE_TYPES = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
_STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


def _package(
    sam: dict[str, Any], base_dir: Path, clients: ClientFactory, region: str, stack_name: str
) -> dict[str, Path]:
    """Upload local code directories and state machine definitions, rewrite the URIs in `sam`;
    returns function logical id -> code dir."""
    s3 = clients.client("s3", region)
    artifacts = _Artifacts(s3, f"{ARTIFACTS_BUCKET_PREFIX}-{region}", stack_name, base_dir)
    _ensure_bucket(s3, artifacts.bucket, region)
    global_code_uri = sam.get("Globals", {}).get("Function", {}).get("CodeUri")
    code_dirs: dict[str, Path] = {}
    for logical_id, resource in sam.get("Resources", {}).items():
        kind = resource.get("Type")
        resource.setdefault("Properties", {})
        if kind in _CODE_TYPES:
            directory = _package_code(artifacts, logical_id, resource, global_code_uri)
            if directory is not None and kind == "AWS::Serverless::Function":
                code_dirs[logical_id] = directory
        elif kind in _STATE_MACHINE_TYPES:
            _package_definition(artifacts, logical_id, resource)
    return code_dirs


# ------------------------------------------------------------------ template preparation


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


def transform_offline(sam: dict[str, Any], parameters: Mapping[str, str], region: str) -> dict[str, Any]:
    """SAM -> CloudFormation, offline (the managed-policy map is `MANAGED_POLICIES`)."""
    # Our own offline metrics object, published (to nowhere) so it does not warn when collected.
    metrics = Metrics("ServerlessTransform", DummyMetricsPublisher())
    session = boto3.session.Session(region_name=region)
    translator = Translator(None, Parser(), boto_session=session, metrics=metrics)
    try:
        template: dict[str, Any] = translator.translate(
            copy.deepcopy(sam),
            parameter_values=dict(parameters),
            get_managed_policy_map=lambda: dict(MANAGED_POLICIES),
        )
    except Exception as error:  # samtranslator raises its own hierarchy; all mean "invalid template"
        raise DeployError(f"SAM transform failed: {error}") from error
    finally:
        metrics.publish()
    return template


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resolve_find_in_map(template: dict[str, Any], values: Mapping[str, str]) -> int:
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


def _defer(template: dict[str, Any]) -> list[str]:
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


# ------------------------------------------------------------------ stack creation


def _check_as_cloudformation_does(sam: Mapping[str, Any], values: Mapping[str, str], region: str, stack: str) -> None:
    """What CloudFormation refuses before it creates anything, and moto's does not check."""
    try:
        cfn_checks.check_parameters(sam, values)
        cfn_checks.check_rules(sam, values, {"AWS::Region": region, "AWS::StackName": stack})
    except cfn_checks.TemplateCheckError as error:
        raise DeployError(str(error)) from error


def _create_or_update(cloudformation: Any, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
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


def _stack_resources(cloudformation: Any, stack_name: str) -> dict[str, StackResource]:
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


# ------------------------------------------------------------------ fix-ups after creation


def _fix_queue_policy(context: _FixupContext, deferred: _Deferred) -> None:
    sqs = context.clients.client("sqs", context.region)
    document = dict(deferred.properties["PolicyDocument"])
    # moto resolves `!If [cond, statement, !Ref AWS::NoValue]` to null where CloudFormation drops the item.
    document["Statement"] = [statement for statement in document.get("Statement", []) if statement is not None]
    policy = json.dumps(document)
    queues = deferred.properties.get("Queues", [])
    for queue_url in queues:
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    context.applied.append(f"{deferred.logical_id}: queue policy set on {len(queues)} queue(s)")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


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
        request["SSESpecification"] = {"Enabled": _truthy(sse.get("SSEEnabled"))}
        request["SSESpecification"].update({k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse})
    stream = properties.get("StreamSpecification")
    if stream and stream.get("StreamViewType"):
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    if "DeletionProtectionEnabled" in properties:
        request["DeletionProtectionEnabled"] = _truthy(properties["DeletionProtectionEnabled"])
    handled = {*request, *_TABLE_PROPERTIES_APPLIED}
    ignored = sorted(name for name in properties if name not in handled)
    ignored += sorted(
        f"{index['IndexName']}.{name}"
        for index in properties.get("GlobalSecondaryIndexes", [])
        for name in index
        if name not in _INDEX_PROPERTIES
    )
    return request, ignored


def _fix_table(context: _FixupContext, deferred: _Deferred) -> None:
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
    if ttl and _truthy(ttl.get("Enabled")):
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
        )
        context.applied.append(f"{deferred.logical_id}: time to live on {ttl['AttributeName']}")
    pitr = deferred.properties.get("PointInTimeRecoverySpecification")
    if pitr and _truthy(pitr.get("PointInTimeRecoveryEnabled")):
        dynamodb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
        context.applied.append(f"{deferred.logical_id}: point-in-time recovery enabled")


# ------------------------------------------------------------------ state machines


def _definition_of(context: _FixupContext, deferred: _Deferred) -> str:
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
    body: bytes = context.clients.client("s3", context.region).get_object(**request)["Body"].read()
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
        configuration["includeExecutionData"] = _truthy(logging["IncludeExecutionData"])
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
        settings["tracingConfiguration"] = {"enabled": _truthy(properties["TracingConfiguration"].get("Enabled"))}
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


def _put_state_machine(context: _FixupContext, deferred: _Deferred, definition: str) -> str:
    """Create the state machine through the API under the ARN moto's CloudFormation gave it, or update
    it when it exists already; returns which. Raises DeployError when moto refuses the definition."""
    properties = deferred.properties
    arn = context.resources[deferred.logical_id].physical_id
    sfn = context.clients.client("stepfunctions", context.region)
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


def _fix_state_machine(context: _FixupContext, deferred: _Deferred) -> None:
    """Create the state machine where executions run, its definition read and substituted."""
    properties = deferred.properties
    substitutions = properties.get("DefinitionSubstitutions") or {}
    definition, left = substitute_definition(_definition_of(context, deferred), substitutions)
    try:
        parsed = json.loads(definition)
    except json.JSONDecodeError as error:
        raise DeployError(f"{deferred.logical_id}: the substituted definition is not JSON: {error}") from error
    verb = _put_state_machine(context, deferred, definition)
    arn = context.resources[deferred.logical_id].physical_id
    name = arn.rsplit(":", 1)[1]
    notes = [f"{deferred.logical_id}: state machine {name} {verb}, {len(substitutions)} substitution(s)"]
    ignored = sorted(key for key in properties if key not in _STATE_MACHINE_PROPERTIES)
    if ignored:
        notes.append(f"{deferred.logical_id}: not applied locally: {', '.join(ignored)}")
    if left:
        notes.append(f"{deferred.logical_id}: placeholders without a substitution: {', '.join(sorted(set(left)))}")
    context.applied.extend(notes)
    context.state_machines[deferred.logical_id] = DeployedStateMachine(
        logical_id=deferred.logical_id,
        name=name,
        arn=arn,
        definition=definition,
        role_arn=str(properties["RoleArn"]),
        type=str(properties.get("StateMachineType", "STANDARD")),
        task_concurrency=task_concurrency(parsed.get("States", {})),
    )


def _with_invoked_functions(
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


def _without_no_value(node: Any) -> Any:
    """`node` without the nulls `AWS::NoValue` leaves in exported properties (CloudFormation drops them)."""
    if isinstance(node, dict):
        return {key: _without_no_value(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [_without_no_value(value) for value in node if value is not None]
    return node


def _fix_role(context: _FixupContext, deferred: _Deferred) -> None:
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


_FIXUPS: Mapping[str, Callable[[_FixupContext, _Deferred], None]] = {
    "AWS::IAM::Role": _fix_role,
    "AWS::SQS::QueuePolicy": _fix_queue_policy,
    "AWS::DynamoDB::Table": _fix_table,
    "AWS::StepFunctions::StateMachine": _fix_state_machine,
}


def _queue_url(clients: ClientFactory, queue_arn: str) -> str:
    _, _, _, region, account, name = queue_arn.split(":", 5)
    sqs = clients.client("sqs", region)
    url: str = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    return url


def _event_source_mapping(
    clients: ClientFactory, deferred: _Deferred, functions: Mapping[str, DeployedFunction]
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
        enabled=_truthy(properties.get("Enabled", True)),
    )


def _describe_functions(
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
    code_dirs = _package(sam, template_path.parent.resolve(), clients, region, stack_name)
    template = transform_offline(sam, parameters, region)
    pseudo = {"AWS::Region": region, "AWS::StackName": stack_name}
    resolved_lookups = _resolve_find_in_map(template, {**values, **pseudo})
    _defer(template)

    cloudformation = clients.client("cloudformation", region)
    request = {
        "StackName": stack_name,
        "TemplateBody": json.dumps(template),
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    }
    stack = _create_or_update(cloudformation, request, timeout_s)
    resources = _stack_resources(cloudformation, stack_name)

    outputs: dict[str, str] = {}
    deferred: list[_Deferred] = []
    for output in stack.get("Outputs", []):
        key, value = output["OutputKey"], output["OutputValue"]
        if key.startswith(DEFERRED_OUTPUT_PREFIX):
            exported = json.loads(value)
            logical_id = key.removeprefix(DEFERRED_OUTPUT_PREFIX)
            deferred.append(_Deferred(logical_id, exported["Type"], exported["Properties"]))
        else:
            outputs[key] = value

    context = _FixupContext(clients, region, resources)
    if resolved_lookups:
        context.applied.append(f"template: {resolved_lookups} Fn::FindInMap lookup(s) resolved before creation")
    for item in deferred:
        fixup = _FIXUPS.get(item.resource_type)
        if fixup is not None:
            fixup(context, item)

    functions, notes = _describe_functions(clients, stack_name, region, resources, code_dirs)
    mappings: list[EventSourceMapping] = []
    for item in deferred:
        if item.resource_type == "AWS::Lambda::EventSourceMapping":
            mapping = _event_source_mapping(clients, item, functions)
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
        state_machines=_with_invoked_functions(context.state_machines, functions),
    )
