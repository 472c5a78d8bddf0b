"""template.yaml against what AWS would refuse or over-grant on a first deploy (issue 12).

The local cloud enforces IAM for S3, SQS and Step Functions only (see crr_cli.localcloud.seams.iam); these tests read
the template itself: the grants as deployed for given parameters (conditions evaluated), the
template rules CloudFormation checks, and the limits of names and metric math.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.deploy import cfn_checks
from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template
from crr_cli.localcloud.deploy.transform import transform_offline
from tests.unit.test_template import as_list, managed_policy_document

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
BUCKETS = {"SourceBuckets": "src-a,src-b", "DestinationBuckets": "dst-a"}
PEERS = {
    "PeerRulesTableArns": "arn:aws:dynamodb:us-east-1:111122223333:table/peer-RulesTable-X",
    "PeerQueueArns": "arn:aws:sqs:us-east-1:111122223333:peer-ReplicationQueue-X",
}
STACK_ID = "arn:aws:cloudformation:us-west-1:111122223333:stack/{name}/0f6a4b1e-8f3a-11ef-9a51-0a1b2c3d4e5f"
MAX_STACK_NAME = "s" * 128  # CloudFormation's longest stack name


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_cfn_template(TEMPLATE)


def deployed(sam: dict[str, Any], **parameters: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The transformed template's resources with conditions evaluated for `parameters`, and the scope."""
    template = dict(sam)
    template["Resources"] = {
        logical_id: {
            **resource,
            "Properties": {
                name: "s3://artifacts/code.zip" if name in ("CodeUri", "ContentUri", "DefinitionUri") else value
                for name, value in resource.get("Properties", {}).items()
            },
        }
        for logical_id, resource in sam["Resources"].items()
    }
    values = {**BUCKETS, **parameters}
    transformed = transform_offline(template, values, "us-west-1")
    scope = {
        **cfn_checks.parameter_values(sam, values),
        "AWS::StackName": MAX_STACK_NAME,
        "AWS::StackId": STACK_ID.format(name=MAX_STACK_NAME),
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    conditions = cfn_checks.conditions(transformed, scope)
    resources = cfn_checks.evaluate(transformed["Resources"], scope, conditions)
    return resources, scope


def role_statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    properties = resources[role]["Properties"]
    documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
    documents += [managed_policy_document(resources, arn) for arn in properties.get("ManagedPolicyArns", [])]
    return [statement for document in documents for statement in document["Statement"] if statement is not None]


def granted(statements: list[dict[str, Any]], action: str) -> list[Any]:
    return [
        resource
        for statement in statements
        if action in as_list(statement["Action"]) or "*" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]


def test_no_arn_names_the_commercial_partition() -> None:
    # Given the template's text, Then no ARN assumes the aws partition (GovCloud and China differ)
    assert "arn:aws:" not in TEMPLATE.read_text(encoding="utf-8")


def test_kms_is_used_through_s3_of_the_stack_s_own_partition(sam: dict[str, Any]) -> None:
    resources, _ = deployed(sam, SourceKmsKeyArns="arn:aws-cn:kms:cn-north-1:111122223333:key/k")
    services = {
        str(statement["Condition"]["StringLike"]["kms:ViaService"])
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::IAM::Role"
        for statement in role_statements(resources, logical_id)
        if "Condition" in statement
    }
    assert services == {"{'Fn::Sub': 's3.*.${AWS::URLSuffix}'}"}


def test_a_bucket_list_entry_cannot_become_a_wildcard(sam: dict[str, Any]) -> None:
    # Given bucket names with and without wildcards
    good = {**BUCKETS, "DestinationBuckets": "crr-demo-replica,logs.example.com"}
    cfn_checks.check_parameters(sam, good)
    for parameter, value in [("DestinationBuckets", "dst-*"), ("SourceBuckets", "src-a,*"), ("SourceBuckets", "a?c")]:
        # When one names a wildcard, Then CloudFormation's AllowedPattern refuses it
        with pytest.raises(cfn_checks.TemplateCheckError, match="S3 bucket name"):
            cfn_checks.check_parameters(sam, {**BUCKETS, parameter: value})


def test_a_batch_above_ten_needs_a_batching_window(sam: dict[str, Any]) -> None:
    # Given BatchSize 20: without a window the stack is refused, with one it is accepted
    with pytest.raises(cfn_checks.TemplateCheckError, match="BatchingWindowSeconds"):
        cfn_checks.check_rules(sam, {**BUCKETS, "BatchSize": "20"}, {})
    cfn_checks.check_rules(sam, {**BUCKETS, "BatchSize": "20", "BatchingWindowSeconds": "1"}, {})
    cfn_checks.check_rules(sam, {**BUCKETS, "BatchSize": "10"}, {})


def test_a_prod_stack_needs_an_alarm_topic_and_a_dev_stack_does_not(sam: dict[str, Any]) -> None:
    topic = "arn:aws:sns:us-west-1:111122223333:crr-alarms"
    # Given Stage=prod without an alarm topic, Then the stack is refused before anything is created
    with pytest.raises(cfn_checks.TemplateCheckError, match="AlarmTopicArn"):
        cfn_checks.check_rules(sam, {**BUCKETS, "Stage": "prod"}, {})
    # And with one it is accepted, as is a dev stack without
    cfn_checks.check_rules(sam, {**BUCKETS, "Stage": "prod", "AlarmTopicArn": topic}, {})
    cfn_checks.check_rules(sam, {**BUCKETS, "Stage": "dev"}, {})
    cfn_checks.check_rules(sam, BUCKETS, {})


def test_peer_grants_need_both_peer_lists(sam: dict[str, Any]) -> None:
    # Given only the peer table: the template refuses it, and grants nothing on an empty ARN
    with pytest.raises(cfn_checks.TemplateCheckError, match="PeerQueueArns"):
        cfn_checks.check_rules(sam, {**BUCKETS, "PeerRulesTableArns": PEERS["PeerRulesTableArns"]}, {})
    resources, _ = deployed(sam, PeerRulesTableArns=PEERS["PeerRulesTableArns"])
    resources_granted = [
        resource
        for logical_id, item in resources.items()
        if item["Type"] == "AWS::IAM::Role"
        for statement in role_statements(resources, logical_id)
        for resource in as_list(statement.get("Resource", []))
    ]
    assert "" not in resources_granted
    # And with both, the replicate role reads the peer's table and nudges its queue
    resources, _ = deployed(sam, **PEERS)
    statements = role_statements(resources, "ReplicateFunctionRole")
    assert PEERS["PeerQueueArns"] in granted(statements, "sqs:SendMessage")
    assert PEERS["PeerRulesTableArns"] in granted(statements, "dynamodb:GetItem")


def test_one_way_stacks_cannot_delete_replica_versions_and_two_way_stacks_can(sam: dict[str, Any]) -> None:
    roles = ("ReplicateFunctionRole", "LargeCopyFunctionRole", "BackfillFunctionRole")
    one_way, _ = deployed(sam)
    two_way, _ = deployed(sam, **PEERS)
    assert all(granted(role_statements(one_way, role), "s3:DeleteObjectVersion") == [] for role in roles)
    assert all(granted(role_statements(two_way, role), "s3:DeleteObjectVersion") for role in roles)


def test_the_replicate_role_reads_its_own_queue_only(sam: dict[str, Any]) -> None:
    # Given the deployed roles, managed policies included
    resources, _ = deployed(sam)
    statements = role_statements(resources, "ReplicateFunctionRole")
    # Then receive and delete name the replication queue, never every queue
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert granted(statements, action) == [{"Fn::GetAtt": ["ReplicationQueue", "Arn"]}], action
    [mapping] = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert mapping["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["ReplicationQueue", "Arn"]}


def test_the_shared_policy_gives_each_role_only_what_it_had_on_its_own(sam: dict[str, Any]) -> None:
    # Given a two-way stack, whose ReplicateFunction and BackfillFunction share ReplicaWriterPolicy
    resources, _ = deployed(sam, **PEERS)
    replicate = role_statements(resources, "ReplicateFunctionRole")
    backfill = role_statements(resources, "BackfillFunctionRole")
    queue, dead_letters = {"Fn::GetAtt": ["ReplicationQueue", "Arn"]}, {"Fn::GetAtt": ["ReplicationDLQ", "Arn"]}
    # Then both still copy, hand keys to the live path, start large copies and reach the peer
    for statements in (replicate, backfill):
        assert granted(statements, "sqs:SendMessage").count(queue) == 1
        assert PEERS["PeerQueueArns"] in granted(statements, "sqs:SendMessage")
        assert granted(statements, "states:StartExecution") == [{"Ref": "LargeCopyStateMachine"}]
        assert granted(statements, "s3:PutObject")
    # And the backfill gets none of the queue consumer's grants nor the in-place tag and ACL sync
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "s3:PutObjectVersionAcl"):
        assert granted(backfill, action) == [], action
        assert granted(replicate, action), action
    assert dead_letters not in granted(backfill, "sqs:SendMessage")
    assert dead_letters in granted(replicate, "sqs:SendMessage")
    # And the replicate function does not read the ledger in batches, which only the backfill does
    assert granted(replicate, "dynamodb:BatchGetItem") == []
    assert granted(backfill, "dynamodb:BatchGetItem") == [{"Fn::GetAtt": ["RulesTable", "Arn"]}]


def test_no_reserved_concurrency_unless_asked_for(sam: dict[str, Any]) -> None:
    # Given the default parameters, Then no function reserves concurrency (accounts with a quota of 10
    # or 50 refuse any reservation)
    defaults, _ = deployed(sam)
    functions = [r["Properties"] for r in defaults.values() if r["Type"] == "AWS::Lambda::Function"]
    assert [f.get("ReservedConcurrentExecutions") for f in functions] == [None] * len(functions)
    # And asked for, the ReplayFunction alone reserves one
    opted, _ = deployed(sam, ReplayReservedConcurrency="true")
    reserved = {
        logical_id: r["Properties"]["ReservedConcurrentExecutions"]
        for logical_id, r in opted.items()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("ReservedConcurrentExecutions") is not None
    }
    assert reserved == {"ReplayFunction": 1}


def _substituted(node: Any, scope: dict[str, Any]) -> str:
    """An `Fn::Sub` name with the stack's pseudo parameters and literal-derived variables filled in."""
    text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
    values = {**scope, **{name: cfn_checks.evaluate(value, scope, {}) for name, value in variables.items()}}
    return re.sub(r"\$\{([^}]+)\}", lambda match: str(values[match.group(1)]), text)


def test_state_machine_names_fit_80_characters_for_the_longest_stack_name(sam: dict[str, Any]) -> None:
    resources, scope = deployed(sam)
    machines = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    names = [_substituted(machine["StateMachineName"], scope) for machine in machines]
    assert len(names) == 2
    assert all(len(name) <= 80 for name in names), names


def test_the_error_rate_alarm_uses_documented_metric_math(sam: dict[str, Any]) -> None:
    resources, _ = deployed(sam)
    expressions = [
        metric["Expression"]
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        for metric in r["Properties"].get("Metrics", [])
        if "Expression" in metric
    ]
    # MAX over an array holding a constant is not among CloudWatch's documented forms; IF(...) is
    assert expressions
    assert not any("MAX([" in expression for expression in expressions)
    assert any(expression.startswith("IF(") for expression in expressions)


def test_the_dead_letter_queue_outlives_the_source_queue_s_retention(sam: dict[str, Any]) -> None:
    resources, _ = deployed(sam)
    source = resources["ReplicationQueue"]["Properties"]["MessageRetentionPeriod"]
    dead = resources["ReplicationDLQ"]["Properties"]["MessageRetentionPeriod"]
    assert int(dead) > int(source)


def test_step_functions_handlers_do_not_trace_their_large_results(sam: dict[str, Any]) -> None:
    resources, _ = deployed(sam)
    for function in ("LargeCopyFunction", "BackfillFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false", function


def test_the_backfill_role_may_write_a_job_s_ranges_in_one_transaction(sam: dict[str, Any]) -> None:
    # Given the BackfillFunction's role (the local cloud does not check DynamoDB calls against IAM)
    resources, _ = deployed(sam)
    backfill = role_statements(resources, "BackfillFunctionRole")
    replicate = role_statements(resources, "ReplicateFunctionRole")
    table = {"Fn::GetAtt": ["RulesTable", "Arn"]}
    # Then it may read a job's ranges together and record a page with a TransactWriteItems, whose
    # actions IAM authorises as the per-item actions (Update, Put, and Delete of a range's item with its
    # final page; the backfill's transaction holds no ConditionCheck, so dynamodb:ConditionCheckItem is
    # not granted): https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
    for action in ("dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"):
        assert granted(backfill, action) == [table], action
    assert granted(backfill, "dynamodb:ConditionCheckItem") == []
    # And the live path may not Query, which it does not need
    assert granted(replicate, "dynamodb:Query") == []


def test_the_backfill_role_reads_inventory_reports_only_from_the_named_bucket(sam: dict[str, Any]) -> None:
    # Given a stack deployed without and with an InventoryBucket
    without, _ = deployed(sam)
    named, _ = deployed(sam, InventoryBucket="inv-reports")
    # Then only the named bucket's objects may be read, and only with GetObject
    assert "ReadInventoryReports" not in {s.get("Sid") for s in role_statements(without, "BackfillFunctionRole")}
    statements = [s for s in role_statements(named, "BackfillFunctionRole") if s.get("Sid") == "ReadInventoryReports"]
    assert len(statements) == 1
    assert statements[0]["Action"] == "s3:GetObject"
    assert statements[0]["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InventoryBucket}/*"}


def test_the_backfill_function_knows_how_many_ranges_a_job_may_copy_at_once(sam: dict[str, Any]) -> None:
    # Given the default parameters, Then the BackfillFunction is told the stack's cap on a job's fan-out
    defaults, _ = deployed(sam)
    variables = defaults["BackfillFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["BACKFILL_MAX_RANGES"] == "16"
    # And the cap cannot exceed the 40 iterations an inline Map runs at once
    # (https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html)
    parameter = sam["Parameters"]["BackfillMaxRanges"]
    assert (parameter["MinValue"], parameter["MaxValue"]) == (1, 40)
    with pytest.raises(cfn_checks.TemplateCheckError):
        cfn_checks.check_parameters(sam, {**BUCKETS, "BackfillMaxRanges": "41"})
