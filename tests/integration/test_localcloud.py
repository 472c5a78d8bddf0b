"""The embedded local cloud: deploy over HTTP, warm workers, SQS event source, S3 event seams."""

from __future__ import annotations

import argparse
import json
import os
import re
import textwrap
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.command import add_local_parser, run_local_deploy, run_local_up
from crr_cli.localcloud.deploy import DeployedStack

pytestmark = pytest.mark.integration

REGION = "us-west-1"
REPO_ROOT = Path(__file__).resolve().parents[2]

PROBE_HANDLER = """
import json
import os
import time

import boto3

_sqs = boto3.client("sqs")  # built once per warm worker
_dynamodb = boto3.client("dynamodb")
_invocations = {"count": 0}


def lambda_handler(event, context):
    entered = time.time()
    _invocations["count"] += 1
    print("probe handler writes to stdout; the protocol must not see it")
    if "raise" in event:
        raise RuntimeError(event["raise"])
    time.sleep(event.get("sleep", 0))  # the work a timeout test needs to overrun (the thing under test)
    if "remember" in event:
        item = {"pk": {"S": event["remember"]}, "sk": {"S": "probe"}, "kind": {"S": "memo"}}
        _dynamodb.put_item(TableName=os.environ["PROBE_TABLE_NAME"], Item=item)
    observation = {
        "pid": os.getpid(),
        "entered": entered,
        "warm_invocations": _invocations["count"],
        "function_name": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        "region": os.environ["AWS_REGION"],
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "dynamodb_endpoint": _dynamodb.meta.endpoint_url,
        "setting": os.environ["PROBE_SETTING"],
        "remaining_ms": context.get_remaining_time_in_millis(),
        "records": [],
    }
    failures = []
    for record in event.get("Records", []):
        body = json.loads(record["body"])
        observation["records"].append(
            {
                "id": body["id"],
                "sent": body.get("sent"),
                "receive_count": int(record["attributes"]["ApproximateReceiveCount"]),
                "event_source": record["eventSource"],
                "attribute": record["messageAttributes"].get("kind", {}).get("stringValue"),
            }
        )
        if body.get("action") == "fail":
            failures.append({"itemIdentifier": record["messageId"]})
    if observation["records"]:
        _sqs.send_message(QueueUrl=os.environ["OBSERVATIONS_QUEUE_URL"], MessageBody=json.dumps(observation))
    return {"batchItemFailures": failures, "observation": observation}
"""

PROBE_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: throwaway stack for the local cloud's own tests
Parameters:
  MaxReceiveCount:
    Type: Number
    Default: 5
Globals:
  Function:
    Runtime: python3.11
    Timeout: 1
    MemorySize: 256
Resources:
  ProbeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: probe/
      Handler: handler.lambda_handler
      Environment:
        Variables:
          OBSERVATIONS_QUEUE_URL: !Ref ObservationsQueue
          PROBE_TABLE_NAME: !Ref ProbeTable
          PROBE_SETTING: from-template
      # The local cloud enforces IAM: the probe may do what its role allows, as on AWS.
      Policies:
        - SQSSendMessagePolicy:
            QueueName: !GetAtt ObservationsQueue.QueueName
        - DynamoDBCrudPolicy:
            TableName: !Ref ProbeTable
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: 2
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 2
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt WorkDLQ.Arn
        maxReceiveCount: !Ref MaxReceiveCount
  WorkDLQ:
    Type: AWS::SQS::Queue
  ObservationsQueue:
    Type: AWS::SQS::Queue
  ProbeTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PROVISIONED
      ProvisionedThroughput: {ReadCapacityUnits: 5, WriteCapacityUnits: 4}
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
        - {AttributeName: kind, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
      GlobalSecondaryIndexes:
        - IndexName: by-kind
          KeySchema: [{AttributeName: kind, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
          ProvisionedThroughput: {ReadCapacityUnits: 2, WriteCapacityUnits: 1}
      LocalSecondaryIndexes:
        - IndexName: by-pk-kind
          KeySchema: [{AttributeName: pk, KeyType: HASH}, {AttributeName: kind, KeyType: RANGE}]
          Projection: {ProjectionType: ALL}
      StreamSpecification: {StreamViewType: NEW_IMAGE}
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
      Tags: [{Key: purpose, Value: probe}]
Outputs:
  WorkQueueUrl:
    Value: !Ref WorkQueue
  WorkDLQUrl:
    Value: !Ref WorkDLQ
  ObservationsQueueUrl:
    Value: !Ref ObservationsQueue
  ProbeTableName:
    Value: !Ref ProbeTable
"""


@dataclass
class ProbeStack:
    """The deployed probe stack plus the observations its handler reported so far."""

    cloud: LocalCloud
    stack: DeployedStack
    code_dir: Path
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sqs(self) -> Any:
        return self.cloud.client("sqs", REGION)

    def send(self, action: str = "ok") -> str:
        message_id = uuid.uuid4().hex
        self.sqs.send_message(
            QueueUrl=self.stack.outputs["WorkQueueUrl"],
            MessageBody=json.dumps({"id": message_id, "action": action}),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": action}},
        )
        return message_id

    def observations_of(self, message_id: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(invocation, record) pairs the handler reported for `message_id`, collected so far."""
        # A long poll: a short one asks only some of SQS's servers and may miss what is there.
        response = self.sqs.receive_message(
            QueueUrl=self.stack.outputs["ObservationsQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        for message in response.get("Messages", []):
            self.seen.append(json.loads(message["Body"]))
            self.sqs.delete_message(
                QueueUrl=self.stack.outputs["ObservationsQueueUrl"], ReceiptHandle=message["ReceiptHandle"]
            )
        return [(seen, record) for seen in self.seen for record in seen["records"] if record["id"] == message_id]

    def queue_is_empty(self, output: str) -> bool:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.stack.outputs[output],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return bool(attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"})


def write_probe_project(root: Path) -> Path:
    code_dir = root / "probe"
    code_dir.mkdir(parents=True)
    (code_dir / "handler.py").write_text(textwrap.dedent(PROBE_HANDLER), encoding="utf-8")
    template = root / "template.yaml"
    template.write_text(PROBE_TEMPLATE, encoding="utf-8")
    return template


@pytest.fixture(scope="module")
def probe(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> ProbeStack:
    template = write_probe_project(tmp_path_factory.mktemp("probe-project"))
    stack = local_cloud.deploy(template, "probe", REGION, {"MaxReceiveCount": "2"})
    return ProbeStack(local_cloud, stack, template.parent / "probe")


def test_deploy_creates_the_stack_and_its_resources_in_moto(probe: ProbeStack) -> None:
    # Given the probe template deployed into the local cloud
    cloud, stack = probe.cloud, probe.stack

    # When we look at the stack and its resources over HTTP
    described = cloud.client("cloudformation", REGION).describe_stacks(StackName="probe")["Stacks"][0]
    work_queue = probe.sqs.get_queue_attributes(
        QueueUrl=stack.outputs["WorkQueueUrl"], AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
    )["Attributes"]
    function = stack.function("ProbeFunction")
    mappings_in_moto = cloud.client("lambda", REGION).list_event_source_mappings(FunctionName=function.name)

    # Then the stack is complete, with the queues, the function and its SQS event source resolved
    assert described["StackStatus"] == "CREATE_COMPLETE"
    assert json.loads(work_queue["RedrivePolicy"])["maxReceiveCount"] == 2
    assert work_queue["VisibilityTimeout"] == "2"
    assert function.code_dir == probe.code_dir.resolve()
    assert function.handler == "handler.lambda_handler"
    assert function.timeout_s == 1
    assert function.environment["OBSERVATIONS_QUEUE_URL"] == stack.outputs["ObservationsQueueUrl"]
    (mapping,) = stack.event_source_mappings
    assert mapping.function_name == function.name
    assert mapping.queue_arn.endswith(stack.outputs["WorkQueueUrl"].rsplit("/", 1)[1])
    assert (mapping.batch_size, mapping.maximum_concurrency, mapping.report_batch_item_failures) == (10, 2, True)
    # and moto itself has no mapping (it would run it inline inside SendMessage)
    assert mappings_in_moto["EventSourceMappings"] == []


def test_deploy_creates_the_stacks_tables_in_the_dynamodb_process(probe: ProbeStack) -> None:
    # Given the probe stack, whose table has indexes, a stream, provisioned throughput and TTL
    cloud, table = probe.cloud, probe.stack.outputs["ProbeTableName"]
    dynamodb = cloud.client("dynamodb", REGION)

    # When the table is described through the local cloud's DynamoDB endpoint
    described = dynamodb.describe_table(TableName=table)["Table"]
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    tags = dynamodb.list_tags_of_resource(ResourceArn=described["TableArn"])["Tags"]

    # Then it was created there, by our fix-up, as the template describes it
    assert cloud.dynamodb_endpoint_url != cloud.endpoint_url
    assert dynamodb.meta.endpoint_url == cloud.dynamodb_endpoint_url
    assert f"ProbeTable: table {table} created at {cloud.dynamodb_endpoint_url}" in probe.stack.fixups
    assert [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    assert {a["AttributeName"] for a in described["AttributeDefinitions"]} == {"pk", "sk", "kind"}
    assert described["BillingModeSummary"]["BillingMode"] == "PROVISIONED"
    throughput = described["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (5, 4)
    (global_index,) = described["GlobalSecondaryIndexes"]
    assert (global_index["IndexName"], global_index["Projection"]["ProjectionType"]) == ("by-kind", "KEYS_ONLY")
    assert global_index["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
    assert [index["IndexName"] for index in described["LocalSecondaryIndexes"]] == ["by-pk-kind"]
    assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert tags == [{"Key": "purpose", "Value": "probe"}]


def test_messages_reach_the_handler_in_a_warm_worker_and_are_deleted(probe: ProbeStack, eventually: Any) -> None:
    # Given a message that the handler processes successfully
    first = probe.send()

    # When it has been handled, and a second one after it
    ((first_call, first_record),) = eventually(lambda: probe.observations_of(first), what="first delivery")
    second = probe.send()
    ((second_call, _),) = eventually(lambda: probe.observations_of(second), what="second delivery")

    # Then the same warm worker handled both batches, with the function's environment and context
    assert second_call["pid"] == first_call["pid"]
    assert second_call["warm_invocations"] > first_call["warm_invocations"]
    assert first_call["function_name"] == probe.stack.function("ProbeFunction").name
    assert (first_call["region"], first_call["setting"]) == (REGION, "from-template")
    assert first_call["endpoint"] == probe.cloud.endpoint_url
    assert 0 < first_call["remaining_ms"] <= 1000
    assert first_record["event_source"] == "aws:sqs"
    assert first_record["attribute"] == "ok"
    # and both messages were deleted rather than left for redelivery
    eventually(lambda: probe.queue_is_empty("WorkQueueUrl"), what="work queue to drain")
    assert probe.queue_is_empty("WorkDLQUrl")


def served_by(endpoint: str) -> dict[str, int]:
    """The request counts of one moto process of the local cloud."""
    with urllib.request.urlopen(f"{endpoint}/_crr/requests", timeout=10) as answer:
        counts: dict[str, int] = json.loads(answer.read())
    return counts


def test_a_functions_dynamodb_calls_reach_the_dynamodb_process(probe: ProbeStack) -> None:
    # Given the probe function, whose handler writes an item when asked to
    cloud, table = probe.cloud, probe.stack.outputs["ProbeTableName"]
    function = probe.stack.function("ProbeFunction").name
    key = {"pk": {"S": f"memo-{uuid.uuid4().hex}"}, "sk": {"S": "probe"}}
    cloud.request_counts(reset=True)

    # When it is invoked and writes its item
    invocation = cloud.invoke(function, {"remember": key["pk"]["S"]})

    # Then its boto3 client (AWS_ENDPOINT_URL_DYNAMODB) used the DynamoDB process, where the item is
    assert invocation.ok, invocation.error
    assert invocation.payload["observation"]["dynamodb_endpoint"] == cloud.dynamodb_endpoint_url
    assert invocation.payload["observation"]["endpoint"] == cloud.endpoint_url
    assert cloud.client("dynamodb", REGION).get_item(TableName=table, Key=key)["Item"]["kind"] == {"S": "memo"}
    # and the main process saw no DynamoDB request, while the aggregate counts include the write
    assert served_by(cloud.dynamodb_endpoint_url).get("dynamodb:PutItem") == 1
    assert not any(name.startswith("dynamodb:") for name in served_by(cloud.endpoint_url))
    assert cloud.request_counts()["dynamodb:PutItem"] == 1


def test_each_process_refuses_the_services_of_the_other(local_cloud: LocalCloud) -> None:
    # Given the environment the local cloud hands out, and clients pointed at the wrong process
    environment = local_cloud.aws_environment()

    def client(service: str, endpoint: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        )

    # When they are used, Then they fail loudly rather than finding (or filling) state nobody reads,
    # such as the orphan tables moto's CloudFormation creates in the main process
    with pytest.raises(ClientError) as sqs_refused:
        client("sqs", environment["AWS_ENDPOINT_URL_DYNAMODB"]).list_queues()
    with pytest.raises(ClientError) as dynamodb_refused:
        client("dynamodb", environment["AWS_ENDPOINT_URL"]).list_tables()
    with pytest.raises(ClientError) as streams_refused:
        client("dynamodbstreams", environment["AWS_ENDPOINT_URL"]).list_streams()
    for refused in (sqs_refused, dynamodb_refused, streams_refused):
        assert refused.value.response["Error"]["Code"] == "LocalCloudWrongEndpoint"
    assert local_cloud.dynamodb_endpoint_url in dynamodb_refused.value.response["Error"]["Message"]
    # and the environment routes each service to its process
    assert environment["AWS_ENDPOINT_URL"] == local_cloud.endpoint_url
    assert environment["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] == local_cloud.dynamodb_endpoint_url
    assert "AWS_REGION" not in environment


def test_step_functions_dynamodb_tasks_reach_the_dynamodb_process(local_cloud: LocalCloud) -> None:
    # Given a table in the DynamoDB process and a state machine (in the main process) that writes
    # it with an optimised integration and reads it back with an AWS SDK integration
    table = f"sfn-{uuid.uuid4().hex[:8]}"
    local_cloud.client("dynamodb", REGION).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    item = {"pk": {"S.$": "$.key"}}
    definition = {
        "StartAt": "Put",
        "States": {
            "Put": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:putItem",
                "Parameters": {"TableName": table, "Item": item},
                "ResultPath": None,
                "Next": "Get",
            },
            "Get": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:dynamodb:getItem",
                "Parameters": {"TableName": table, "Key": item},
                "End": True,
            },
        },
    }
    sfn = local_cloud.client("stepfunctions", REGION)
    machine = sfn.create_state_machine(
        name=table, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn"
    )["stateMachineArn"]

    # When it runs
    execution = sfn.start_execution(stateMachineArn=machine, name="run", input=json.dumps({"key": "k1"}))
    deadline = time.monotonic() + 15
    while (described := sfn.describe_execution(executionArn=execution["executionArn"]))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.05)

    # Then both tasks used the table in the DynamoDB process
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"])["Item"] == {"pk": {"S": "k1"}}


def test_a_reported_batch_item_failure_reaches_the_dlq_after_max_receives(probe: ProbeStack, eventually: Any) -> None:
    # Given a record the handler lists in batchItemFailures, and one it handles
    failing = probe.send("fail")
    succeeding = probe.send("ok")

    # When the poller keeps receiving until moto's redrive policy moves the failing one
    def failing_in_dlq() -> dict[str, Any] | None:
        response = probe.sqs.receive_message(
            QueueUrl=probe.stack.outputs["WorkDLQUrl"], MessageSystemAttributeNames=["All"], WaitTimeSeconds=0
        )
        for message in response.get("Messages", []):
            if json.loads(message["Body"])["id"] == failing:
                return dict(message)
        return None

    dead = eventually(failing_in_dlq, timeout=20, what="the failing record in the DLQ")

    # Then it was delivered exactly maxReceiveCount (2) times, the other record once and deleted
    counts = sorted(record["receive_count"] for _, record in probe.observations_of(failing))
    assert counts == [1, 2]
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= 2
    assert len(probe.observations_of(succeeding)) == 1
    eventually(lambda: probe.queue_is_empty("WorkQueueUrl"), what="work queue to drain")


def test_handler_exception_is_an_invocation_error_and_keeps_the_worker(probe: ProbeStack) -> None:
    # Given the probe function, invoked directly
    function = probe.stack.function("ProbeFunction").name

    # When the handler raises, and is then invoked again
    failed = probe.cloud.invoke(function, {"raise": "boom"})
    after = probe.cloud.invoke(function, {})

    # Then the first is a Lambda-style function error, and the worker survived it
    assert failed.error is not None
    assert (failed.error["errorType"], failed.error["errorMessage"]) == ("RuntimeError", "boom")
    assert after.ok
    assert after.worker_pid == failed.worker_pid


def test_a_handler_over_its_timeout_is_killed_and_its_worker_replaced(probe: ProbeStack, eventually: Any) -> None:
    # Given the probe function with a 1 s timeout
    function = probe.stack.function("ProbeFunction").name
    warm = probe.cloud.invoke(function, {})

    # When an invocation sleeps past the timeout
    timed_out = probe.cloud.invoke(function, {"sleep": 5})
    after = probe.cloud.invoke(function, {})

    # Then it fails as a timeout after about 1 s, its worker is gone, and a new worker answers
    assert timed_out.timed_out
    assert timed_out.error is not None
    assert timed_out.error["errorMessage"] == "Task timed out after 1.00 seconds"
    assert 900 <= timed_out.duration_ms < 2500
    assert timed_out.worker_pid == warm.worker_pid
    assert timed_out.worker_pid not in probe.cloud.executor.pool(function).worker_pids()
    assert timed_out.worker_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(timed_out.worker_pid, 0)
    assert after.ok
    assert after.worker_pid != timed_out.worker_pid
    log = probe.cloud.log_dir / "probe-ProbeFunction.log"
    assert "Task timed out after 1.00 seconds" in log.read_text(encoding="utf-8")


# ------------------------------------------------------------------ S3 event seams


def s3_records(cloud: LocalCloud, queue_url: str, count: int, eventually: Any) -> list[dict[str, Any]]:
    sqs = cloud.client("sqs", REGION)
    records: list[dict[str, Any]] = []

    def collect() -> bool:
        response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(records) >= count

    eventually(collect, what=f"{count} S3 event records")
    return records


def notified_bucket(cloud: LocalCloud, name: str, versioned: bool) -> str:
    s3, sqs = cloud.client("s3", REGION), cloud.client("sqs", REGION)
    queue_url: str = sqs.create_queue(QueueName=f"{name}-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
        },
    )
    return queue_url


SEQUENCER = re.compile(r"^[0-9A-F]{16}$")


def test_s3_records_carry_sequencer_version_and_delete_markers(local_cloud: LocalCloud, eventually: Any) -> None:
    # Given a versioned bucket notifying a queue
    bucket = f"seams-versioned-{uuid.uuid4().hex[:8]}"
    queue_url = notified_bucket(local_cloud, bucket, versioned=True)
    s3 = local_cloud.client("s3", REGION)

    # When a key is written twice, copied, uploaded in parts, deleted, and one version removed
    first = s3.put_object(Bucket=bucket, Key="a key", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="a key", Body=b"two!")["VersionId"]
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "a key"})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="parts", UploadId=upload, PartNumber=1, Body=b"p" * 10)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="parts",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    marker = s3.delete_object(Bucket=bucket, Key="a key")["VersionId"]
    s3.delete_object(Bucket=bucket, Key="a key", VersionId=first)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy"}]})
    records = s3_records(local_cloud, queue_url, 7, eventually)

    # Then each change produced one record, with increasing sequencers and the versions involved
    summary = [(r["eventName"], r["s3"]["object"]["key"], r["s3"]["object"].get("versionId")) for r in records]
    by_sequencer = sorted(records, key=lambda r: r["s3"]["object"]["sequencer"])
    assert [r["eventName"] for r in by_sequencer] == [
        "ObjectCreated:Put",
        "ObjectCreated:Put",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
        "ObjectRemoved:DeleteMarkerCreated",
        "ObjectRemoved:Delete",
        "ObjectRemoved:DeleteMarkerCreated",
    ], summary
    assert all(SEQUENCER.match(r["s3"]["object"]["sequencer"]) for r in records)
    assert len({r["s3"]["object"]["sequencer"] for r in records}) == 7
    key_versions = [r["s3"]["object"]["versionId"] for r in by_sequencer if r["s3"]["object"]["key"] == "a+key"]
    assert key_versions == [first, second, marker, first]
    assert all(r["s3"]["object"].get("versionId") for r in records)
    put = by_sequencer[0]
    assert (put["awsRegion"], put["s3"]["object"]["size"], put["s3"]["bucket"]["name"]) == (REGION, 3, bucket)
    assert put["s3"]["object"]["eTag"]
    assert "eTag" not in by_sequencer[4]["s3"]["object"]


def test_s3_records_on_an_unversioned_bucket_have_sequencers_and_no_version(
    local_cloud: LocalCloud, eventually: Any
) -> None:
    # Given an unversioned bucket notifying a queue
    bucket = f"seams-plain-{uuid.uuid4().hex[:8]}"
    queue_url = notified_bucket(local_cloud, bucket, versioned=False)
    s3 = local_cloud.client("s3", REGION)

    # When a key is created, overwritten and deleted
    s3.put_object(Bucket=bucket, Key="k", Body=b"1", Metadata={"origin": "test"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"22")
    s3.delete_object(Bucket=bucket, Key="k")
    records = s3_records(local_cloud, queue_url, 3, eventually)

    # Then the records' sequencers follow the writes, and none carries a version id
    ordered = sorted(records, key=lambda r: r["s3"]["object"]["sequencer"])
    assert [r["eventName"] for r in ordered] == ["ObjectCreated:Put", "ObjectCreated:Put", "ObjectRemoved:Delete"]
    assert [r["s3"]["object"].get("size") for r in ordered[:2]] == [1, 2]
    assert not any("versionId" in r["s3"]["object"] for r in records)


# ------------------------------------------------------------------ the real template and `crr local up`


def test_the_project_template_deploys_with_its_fixups(local_cloud: LocalCloud) -> None:
    # Given the project's own template with the local-test parameters
    parameters = {
        "SourceBuckets": "src-a",
        "DestinationBuckets": "dst-b",
        "FunctionTimeoutSeconds": "2",
        "MaxReceiveCount": "2",
    }

    # When it is deployed without starting pollers (the handler is not needed for this)
    stack = local_cloud.deploy(REPO_ROOT / "template.yaml", "crr-template", REGION, parameters, event_sources=False)

    # Then moto created it, and the settings moto's CloudFormation ignores were applied by us
    types = {resource.resource_type for resource in stack.resources.values()}
    assert {"AWS::Lambda::Function", "AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::IAM::Role"} <= types
    table = stack.outputs["RulesTableName"]
    dynamodb = local_cloud.client("dynamodb", REGION)
    assert f"RulesTable: table {table} created at {local_cloud.dynamodb_endpoint_url}" in stack.fixups
    described = dynamodb.describe_table(TableName=table)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]] == [("pk", "HASH"), ("sk", "RANGE")]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["SSEDescription"]["Status"] == "ENABLED"
    assert dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    backups = dynamodb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    policy = local_cloud.client("sqs", REGION).get_queue_attributes(
        QueueUrl=stack.outputs["ReplicationQueueUrl"], AttributeNames=["Policy"]
    )["Attributes"]["Policy"]
    assert json.loads(policy)["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    function = stack.function("ReplicateFunction")
    assert function.timeout_s == 2
    assert function.environment["RULES_TABLE_NAME"] == table
    (mapping,) = stack.event_source_mappings
    assert mapping.function_logical_id == "ReplicateFunction"
    assert mapping.report_batch_item_failures
    # And the template's own managed policy holds the template's document (moto created a stand-in),
    # attached to the roles that share it
    iam = local_cloud.client("iam", REGION)
    shared = stack.resources["ReplicaWriterPolicy"].physical_id
    assert {"WriteReplicas", "InspectDestinationBuckets"} <= _policy_sids(iam, shared)
    assert "RemoveOwnReplicaVersions" not in _policy_sids(iam, shared)  # one-way
    for role in ("ReplicateFunctionRole", "BackfillFunctionRole"):
        attached = iam.list_attached_role_policies(RoleName=stack.resources[role].physical_id)["AttachedPolicies"]
        assert shared in {policy["PolicyArn"] for policy in attached}, role

    # When the stack is redeployed as one of a two-way pair, Then the managed policy follows (moto updates none)
    peers = {
        "PeerRulesTableArns": "arn:aws:dynamodb:us-east-1:123456789012:table/peer",
        "PeerQueueArns": "arn:aws:sqs:us-east-1:123456789012:peer",
    }
    local_cloud.deploy(
        REPO_ROOT / "template.yaml", "crr-template", REGION, {**parameters, **peers}, event_sources=False
    )
    assert "RemoveOwnReplicaVersions" in _policy_sids(iam, shared)


def _policy_sids(iam: Any, policy_arn: str) -> set[str]:
    """The statement ids of a managed policy's default version."""
    version = iam.get_policy(PolicyArn=policy_arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=policy_arn, VersionId=version)["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    return {str(statement["Sid"]) for statement in document["Statement"]}


def child_processes() -> set[int]:
    """Pids of this process's children (Linux /proc)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            children.add(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_local_up_prints_the_endpoint_and_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], eventually: Any
) -> None:
    # Given `crr local up` running a throwaway template on a free port
    template = write_probe_project(tmp_path)
    children_before = child_processes()
    ready, stop = threading.Event(), threading.Event()
    result: list[int] = []

    def run() -> None:
        state_dir = tmp_path / "state"
        result.append(run_local_up(0, "up-probe", REGION, {}, template, state_dir=state_dir, ready=ready, stop=stop))

    runner = threading.Thread(target=run)
    runner.start()
    try:
        eventually(lambda: ready.is_set() or not runner.is_alive(), timeout=60, what="local up to be ready")
    finally:
        # When it is asked to stop
        stop.set()
        runner.join(timeout=30)

    # Then it printed how to use it, returned 0 and left no process behind
    printed = capsys.readouterr().out
    assert result == [0]
    assert child_processes() <= children_before
    assert re.search(r"export AWS_ENDPOINT_URL=http://127\.0\.0\.1:\d+ AWS_ACCESS_KEY_ID=testing ", printed)
    assert re.search(
        r"^export AWS_ENDPOINT_URL_DYNAMODB=http://127\.0\.0\.1:\d+ AWS_ENDPOINT_URL_DYNAMODB_STREAMS=", printed, re.M
    )
    assert f"AWS_REGION={REGION}" in printed
    assert "stack up-probe" in printed


def test_local_deploy_adds_a_stack_per_region_and_redeploys_one_with_its_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], eventually: Any
) -> None:
    # Given `crr local up` running the project's template as a west stack
    template, state_dir = REPO_ROOT / "template.yaml", tmp_path / "state"
    west = {"SourceBuckets": "hand-west-site", "DestinationBuckets": "hand-east-site"}
    east = {"SourceBuckets": "hand-east-site", "DestinationBuckets": "hand-west-site"}
    ready, stop = threading.Event(), threading.Event()
    runner = threading.Thread(
        target=run_local_up,
        args=(0, "hand-west", "us-west-1", west, template),
        kwargs={"dynamodb_port": 0, "state_dir": state_dir, "ready": ready, "stop": stop},
    )
    runner.start()
    try:
        eventually(lambda: ready.is_set() or not runner.is_alive(), timeout=60, what="local up to be ready")
        endpoint = re.findall(r"export AWS_ENDPOINT_URL=(\S+)", capsys.readouterr().out)[0]

        # When a user deploys the east stack by hand, then redeploys the west one with east's ARNs
        assert run_local_deploy("hand-east", "us-east-1", east, template, state_dir=state_dir) == 0
        outputs = dict(re.findall(r"^  (\w+) = (\S+)$", capsys.readouterr().out, re.M))
        peers = {"PeerRulesTableArns": outputs["RulesTableArn"], "PeerQueueArns": outputs["ReplicationQueueArn"]}
        assert run_local_deploy("hand-west", "us-west-1", {**west, **peers}, template, state_dir=state_dir) == 0
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        [role] = [
            r["RoleName"]
            for r in iam.list_roles()["Roles"]
            if r["RoleName"].startswith("hand-west-ReplicateFunctionRole")
        ]
        # The peer grants live in a managed policy the role shares with the BackfillFunction's
        documents = [
            iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        ]
        for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
            version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
            documents.append(
                iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
            )
        document = json.dumps(documents)
    finally:
        stop.set()
        runner.join(timeout=30)

    # Then the west function may now nudge the east queue, as the redeploy granted
    assert outputs["StackRegion"] == "us-east-1"
    assert peers["PeerQueueArns"] in document
    # And without a running local cloud, a deploy says so
    assert run_local_deploy("hand-east", "us-east-1", east, template, state_dir=state_dir) == 1
    assert "no running `crr local up`" in capsys.readouterr().err


def test_local_parser_registers_up_with_its_options() -> None:
    # Given a CLI parser with the local commands
    parser = argparse.ArgumentParser(prog="crr")
    add_local_parser(parser.add_subparsers(dest="command", required=True))

    # When `local up` is parsed with options
    options = ["--port", "0", "--dynamodb-port", "0", "--stack", "s", "--region", "eu-west-1", "--parameter", "A=b=c"]
    arguments = parser.parse_args(["local", "up", *options])
    defaults = parser.parse_args(["local", "up"])

    # Then every option lands, and `func` runs the command
    assert (arguments.port, arguments.dynamodb_port, arguments.stack, arguments.region) == (0, 0, "s", "eu-west-1")
    assert (defaults.port, defaults.dynamodb_port) == (4566, 4569)
    assert arguments.parameter == [("A", "b=c")]
    assert callable(arguments.func)
