"""template.yaml, after the SAM transform, keeps the promises the manual makes about it
(docs/deploying.md, docs/operations.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.iam.aws_managed_policies import aws_managed_policies_data

from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template
from crr_cli.localcloud.deploy.transform import transform_offline

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
DATA_SERVICES = ("s3:", "sqs:", "dynamodb:", "kms:", "sns:", "states:", "lambda:")
PARAMETERS = {
    "SourceBuckets": "src-a,src-b",
    "DestinationBuckets": "dst-a",
    "AlarmTopicArn": "",
    "SourceKmsKeyArns": "arn:aws:kms:us-west-1:111122223333:key/src",
    "ReplicaKmsKeyArns": "arn:aws:kms:us-east-1:111122223333:key/dst",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    sam = load_cfn_template(TEMPLATE)
    # Local code and definition paths become S3 locations, as `sam package` would make them.
    for resource in sam["Resources"].values():
        for uri in ("CodeUri", "ContentUri", "DefinitionUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = "s3://artifacts/code.zip"
    return transform_offline(sam, PARAMETERS, "us-west-1")


def managed_policy_document(resources: dict[str, Any], arn: Any) -> dict[str, Any]:
    """The document of a managed policy a role attaches: the template's own (`Ref` to an
    AWS::IAM::ManagedPolicy) or an AWS managed one (moto ships AWS's published copies)."""
    if isinstance(arn, dict):
        policy = resources[arn["Ref"]]
        assert policy["Type"] == "AWS::IAM::ManagedPolicy"
        own: dict[str, Any] = policy["Properties"]["PolicyDocument"]
        return own
    name = str(arn).rsplit("/", 1)[1]
    document: dict[str, Any] = json.loads(aws_managed_policies_data)[name]["Document"]
    return document


def attachments(resources: dict[str, Any]) -> dict[str, set[str]]:
    """Each of the template's managed policies -> the roles that attach it."""
    attached: dict[str, set[str]] = {
        logical_id: set() for logical_id, r in resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"
    }
    for logical_id, resource in resources.items():
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            if isinstance(arn, dict):
                attached[arn["Ref"]].add(logical_id)
    return attached


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM or resource-policy statement, managed policies attached to roles included, with
    the logical id that holds it (a managed policy's statements count for each role attaching it)."""
    resources = template["Resources"]
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            continue
        properties = resource.get("Properties", {})
        documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        if "PolicyDocument" in properties:
            documents.append(properties["PolicyDocument"])
        documents += [managed_policy_document(resources, arn) for arn in properties.get("ManagedPolicyArns", [])]
        for document in documents:
            for statement in document.get("Statement", []):
                # A conditional statement counts in every branch that is a statement.
                branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
                for branch in branches:
                    if isinstance(branch, dict) and "Effect" in branch:
                        yield logical_id, branch


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_no_data_action_is_granted_on_every_resource(template: dict[str, Any]) -> None:
    # Given every statement of the deployed template, Then none grants a data action on "*" (a Deny may)
    offending = [
        (logical_id, action)
        for logical_id, statement in statements(template)
        for action in as_list(statement.get("Action", []))
        if statement["Effect"] == "Allow"
        and str(action).startswith(DATA_SERVICES)
        and "*" in as_list(statement.get("Resource", []))
    ]
    assert offending == []
    assert len(list(statements(template))) >= 8


def test_every_managed_policy_is_attached_to_the_functions_that_share_its_grants(template: dict[str, Any]) -> None:
    # Given the template's own managed policies, Then each is attached, and only to the roles that
    # need every one of its grants
    assert attachments(template["Resources"]) == {
        "SourceReaderPolicy": {"ReplicateFunctionRole", "BackfillFunctionRole"},
        "ReplicaWriterPolicy": {"ReplicateFunctionRole", "BackfillFunctionRole"},
        "ReplicationStatePolicy": {"ReplicateFunctionRole", "BackfillFunctionRole"},
        "S3KmsKeysPolicy": {"ReplicateFunctionRole", "BackfillFunctionRole", "LargeCopyFunctionRole"},
    }


def test_every_output_says_what_it_is(template: dict[str, Any]) -> None:
    # Given the stack's outputs (`crr` and operators read them), Then each has a description
    undescribed = [
        name for name, output in load_cfn_template(TEMPLATE)["Outputs"].items() if not output.get("Description")
    ]
    assert undescribed == []


def test_the_queue_visibility_is_at_least_six_times_the_function_timeout(template: dict[str, Any]) -> None:
    mapping = load_cfn_template(TEMPLATE)["Mappings"]["QueueVisibility"]
    allowed = load_cfn_template(TEMPLATE)["Parameters"]["FunctionTimeoutSeconds"]["AllowedValues"]
    assert {str(value) for value in allowed} == set(mapping)
    assert all(entry["Seconds"] >= 6 * int(timeout) for timeout, entry in mapping.items())


def test_the_replicate_function_knows_the_queues_redrive_limit(template: dict[str, Any]) -> None:
    # The function dead-letters a record at its last delivery itself (with its reason), so it must be
    # told the very limit SQS's redrive applies.
    resources = template["Resources"]
    variables = resources["ReplicateFunction"]["Properties"]["Environment"]["Variables"]
    redrive = resources["ReplicationQueue"]["Properties"]["RedrivePolicy"]
    assert variables["MAX_RECEIVE_COUNT"] == redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}


def test_queues_and_table_are_encrypted_and_the_table_recoverable(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    queues = [r for r in resources.values() if r["Type"] == "AWS::SQS::Queue"]
    [table] = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert len(queues) == 2
    assert all(queue["Properties"]["SqsManagedSseEnabled"] is True for queue in queues)
    assert table["Properties"]["SSESpecification"]["SSEEnabled"] is True
    assert table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"


def test_every_function_has_a_log_group_with_retention(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    functions = {name for name, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    groups = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    names = [group["LogGroupName"]["Fn::Sub"] for group in groups]
    named = {name.split("${")[1].rstrip("}") for name in names if name.startswith("/aws/lambda/")}
    assert functions == named
    assert all("RetentionInDays" in group for group in groups)


def test_every_state_machine_logs_to_a_group_with_retention_and_is_traced(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    machines = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert machines
    for machine in machines:
        [destination] = machine["LoggingConfiguration"]["Destinations"]
        group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        assert "RetentionInDays" in resources[group]["Properties"]
        # Execution data would carry object keys and metadata into the logs
        assert machine["LoggingConfiguration"]["IncludeExecutionData"] is False
        assert machine["TracingConfiguration"] == {"Enabled": True}


def test_the_replication_event_source_reports_partial_batch_failures(template: dict[str, Any]) -> None:
    [mapping] = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumConcurrency" in mapping["ScalingConfig"]


def test_the_dashboard_body_is_json_once_substituted(template: dict[str, Any]) -> None:
    [dashboard] = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    body, names = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    values = {"AWS::Region": "us-west-1", "AWS::StackName": "crr-dev", **{name: f"{name}-q" for name in names}}
    for name, value in values.items():
        body = body.replace("${" + name + "}", value)
    widgets = json.loads(body)["widgets"]
    assert {widget["properties"]["title"] for widget in widgets} >= {
        "Replication latency (ms)",
        "Dead-letter queue depth",
        "Objects replicated per rule",
    }


def test_kms_grants_name_their_keys_and_only_serve_s3(template: dict[str, Any]) -> None:
    kms = [
        statement
        for _, statement in statements(template)
        if statement["Effect"] == "Allow"
        and any(str(action).startswith("kms:") for action in as_list(statement["Action"]))
    ]
    keys = {"DecryptSourceObjectsViaS3": "SourceKmsKeyArns", "EncryptReplicasViaS3": "ReplicaKmsKeyArns"}
    assert {statement["Sid"] for statement in kms} == set(keys)
    # S3 in any region of the stack's partition (amazonaws.com, amazonaws.com.cn, ...)
    via_s3 = {"Fn::Sub": "s3.*.${AWS::URLSuffix}"}
    assert all(statement["Condition"]["StringLike"]["kms:ViaService"] == via_s3 for statement in kms)
    assert all(statement["Resource"] == {"Ref": keys[statement["Sid"]]} for statement in kms)


def test_functions_that_copy_may_decrypt_through_s3_with_no_key_but_the_listed_ones(template: dict[str, Any]) -> None:
    # Given the functions granted KMS keys for their copies
    granted = {
        logical_id for logical_id, statement in statements(template) if statement.get("Sid") == "EncryptReplicasViaS3"
    }
    denials: dict[str, list[dict[str, Any]]] = {}
    for logical_id, statement in statements(template):
        if statement["Effect"] == "Deny" and statement["Action"] == "kms:Decrypt":
            denials.setdefault(logical_id, []).append(statement)
    # Then each also denies kms:Decrypt through S3 on every key not listed (the AWS managed aws/s3 key too),
    # or on every key when none is listed
    assert set(denials) == granted
    assert len(granted) == 3
    for found in denials.values():
        by_sid = {statement["Sid"]: statement for statement in found}
        assert set(by_sid) == {"DecryptNoOtherKeyViaS3", "DecryptNoKeyViaS3"}
        assert by_sid["DecryptNoKeyViaS3"]["Resource"] == "*"
        assert "Resource" not in by_sid["DecryptNoOtherKeyViaS3"]
        listed = json.dumps(by_sid["DecryptNoOtherKeyViaS3"]["NotResource"])
        assert "SourceKmsKeyArns" in listed
        assert "ReplicaKmsKeyArns" in listed
        for statement in found:
            assert statement["Condition"]["StringLike"]["kms:ViaService"] == {"Fn::Sub": "s3.*.${AWS::URLSuffix}"}


def test_the_overwrite_burst_alarm_needs_a_jump_above_the_usual_band_and_a_floor(template: dict[str, Any]) -> None:
    # Given the deployed template's overwrite alarms
    resources = template["Resources"]
    anomaly, volume = resources["OverwriteAnomalyAlarm"]["Properties"], resources["OverwriteVolumeAlarm"]["Properties"]
    burst = resources["OverwriteBurstAlarm"]
    # Then both watch the stack's OverwritesReplicated, one against its anomaly band, one against the floor
    [stat] = [query["MetricStat"] for query in anomaly["Metrics"] if "MetricStat" in query]
    [band] = [query for query in anomaly["Metrics"] if query["Id"] == anomaly["ThresholdMetricId"]]
    assert stat["Metric"]["MetricName"] == volume["MetricName"] == "OverwritesReplicated"
    assert band["Expression"].startswith("ANOMALY_DETECTION_BAND(overwrites")
    assert anomaly["ComparisonOperator"] == "GreaterThanUpperThreshold"
    assert volume["Threshold"] == {"Ref": "OverwriteAlarmMinimum"}
    # And only the composite, which needs both, notifies the alarm topic
    assert burst["Type"] == "AWS::CloudWatch::CompositeAlarm"
    rule = json.dumps(burst["Properties"]["AlarmRule"])
    assert "OverwriteAnomalyAlarm.Arn" in rule
    assert "OverwriteVolumeAlarm.Arn" in rule
    assert " AND " in rule
    assert "AlarmActions" in burst["Properties"]
    assert "AlarmActions" not in anomaly
    assert "AlarmActions" not in volume
