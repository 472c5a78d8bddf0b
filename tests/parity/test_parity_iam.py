"""Parity: the local cloud enforces IAM on S3 and SQS as AWS does.

Each test makes a role the way the template's functions get one (trusting lambda.amazonaws.com),
takes its session as Lambda would (`LocalCloud.role_credentials`), and checks one answer.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crr_cli.localcloud.cloud import LocalCloud, LocalCloudError
from crr_cli.localcloud.scenario import create_bucket

REGION = "us-west-1"
LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def _role(cloud: LocalCloud, statements: list[dict[str, Any]], trust: dict[str, Any] = LAMBDA_TRUST) -> str:
    iam = cloud.client("iam", REGION)
    name = f"parity-{uuid.uuid4().hex[:12]}"
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    if statements:
        document = {"Version": "2012-10-17", "Statement": statements}
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(document))
    return arn


def _as_role(cloud: LocalCloud, service: str, role_arn: str) -> Any:
    return cloud.clients.role_client(service, REGION, cloud.role_credentials(role_arn))


def _error_code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


@pytest.fixture
def buckets(local_cloud: LocalCloud) -> tuple[str, str]:
    """Two buckets, the first holding `present.txt`."""
    s3 = local_cloud.client("s3", REGION)
    first, second = (f"parity-iam-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for bucket in (first, second):
        create_bucket(s3, bucket, REGION)
    s3.put_object(Bucket=first, Key="present.txt", Body=b"bytes")
    s3.put_object(Bucket=second, Key="present.txt", Body=b"bytes")
    return first, second


def test_a_role_without_get_object_is_denied_and_with_it_is_allowed(
    local_cloud: LocalCloud, buckets: tuple[str, str]
) -> None:
    """IAM denies what no policy allows (implicit deny) and S3 answers AccessDenied.

    AWS: "Policy evaluation logic", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
    and "GetObject" (Permissions: s3:GetObject), https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html
    """
    bucket, _ = buckets
    # Given a role allowed only to list the bucket, and one allowed to read its objects
    lister = _role(local_cloud, [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}])
    reader = _role(local_cloud, [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}])

    # When each reads the object
    with pytest.raises(ClientError) as denied:
        _as_role(local_cloud, "s3", lister).get_object(Bucket=bucket, Key="present.txt")
    body = _as_role(local_cloud, "s3", reader).get_object(Bucket=bucket, Key="present.txt")["Body"].read()

    # Then the first is denied and the second reads the bytes
    assert _error_code(denied.value) == "AccessDenied"
    assert body == b"bytes"


def test_a_statement_scoped_to_one_bucket_does_not_reach_another(
    local_cloud: LocalCloud, buckets: tuple[str, str]
) -> None:
    """A policy's Resource limits the statement to the named ARNs.

    AWS: "IAM JSON policy elements: Resource", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html
    """
    allowed, other = buckets
    # Given a role that may write objects into the first bucket only
    role = _role(local_cloud, [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{allowed}/*"}])
    s3 = _as_role(local_cloud, "s3", role)

    # When it writes into both
    s3.put_object(Bucket=allowed, Key="written.txt", Body=b"x")
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=other, Key="written.txt", Body=b"x")

    # Then only the first write happened
    assert _error_code(denied.value) == "AccessDenied"
    assert local_cloud.client("s3", REGION).head_object(Bucket=allowed, Key="written.txt")["ContentLength"] == 1


def test_copy_object_needs_read_access_to_the_source(local_cloud: LocalCloud, buckets: tuple[str, str]) -> None:
    """CopyObject needs s3:GetObject on the source as well as s3:PutObject on the destination.

    AWS: "CopyObject", Permissions ("You must have read access to the source object and write access
    to the destination bucket"), https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html
    """
    source, destination = buckets
    write = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{destination}/*"}
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{source}/*"}
    # Given a role that may only write the destination, and one that may also read the source
    writer, copier = _role(local_cloud, [write]), _role(local_cloud, [write, read])
    copy = {"Bucket": destination, "Key": "copied.txt", "CopySource": {"Bucket": source, "Key": "present.txt"}}

    # When each copies the object
    with pytest.raises(ClientError) as denied:
        _as_role(local_cloud, "s3", writer).copy_object(**copy)
    _as_role(local_cloud, "s3", copier).copy_object(**copy)

    # Then the writer alone is denied
    assert _error_code(denied.value) == "AccessDenied"


def test_a_write_with_if_match_needs_get_object(local_cloud: LocalCloud, buckets: tuple[str, str]) -> None:
    """A conditional write with If-Match needs s3:GetObject besides s3:PutObject.

    AWS: "How to prevent object overwrites with conditional writes" ("To perform a conditional write
    with the HTTP If-Match header, you must have the s3:PutObject and s3:GetObject permissions"),
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
    """
    bucket, _ = buckets
    etag = local_cloud.client("s3", REGION).head_object(Bucket=bucket, Key="present.txt")["ETag"]
    write = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    writer, reader_writer = _role(local_cloud, [write]), _role(local_cloud, [write, read])

    # When each overwrites the object only if it is still the version read
    with pytest.raises(ClientError) as denied:
        _as_role(local_cloud, "s3", writer).put_object(Bucket=bucket, Key="present.txt", Body=b"new", IfMatch=etag)
    _as_role(local_cloud, "s3", reader_writer).put_object(Bucket=bucket, Key="present.txt", Body=b"new", IfMatch=etag)

    # Then only the role that may read succeeds
    assert _error_code(denied.value) == "AccessDenied"


def test_a_versions_tags_and_acl_are_authorised_by_the_version_actions(local_cloud: LocalCloud) -> None:
    """Reading or writing the tags or ACL of a named version needs the `...Version...` action; without
    a versionId, the object's own (moto authorised a version's tags as s3:GetObjectVersion).

    AWS: "GetObjectTagging" ("For a versioned bucket ... you must have permission to perform the
    s3:GetObjectVersionTagging action"), https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectTagging.html;
    "PutObjectTagging" (s3:PutObjectVersionTagging), https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObjectTagging.html;
    "GetObjectAcl" (s3:GetObjectVersionAcl), https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectAcl.html;
    "Actions, resources, and condition keys for Amazon S3",
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
    """
    # Given a versioned bucket holding a tagged object
    s3 = local_cloud.client("s3", REGION)
    bucket = f"parity-iam-{uuid.uuid4().hex[:10]}"
    create_bucket(s3, bucket, REGION, versioned=True)
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="a=1")["VersionId"]
    objects = f"arn:aws:s3:::{bucket}/*"
    # And a role with the object actions only, and one with the version actions only
    object_actions = ["s3:GetObject", "s3:GetObjectTagging", "s3:PutObjectTagging", "s3:GetObjectAcl"]
    version_actions = ["s3:GetObjectVersionTagging", "s3:PutObjectVersionTagging", "s3:GetObjectVersionAcl"]
    of_object = _as_role(
        local_cloud, "s3", _role(local_cloud, [{"Effect": "Allow", "Action": object_actions, "Resource": objects}])
    )
    of_version = _as_role(
        local_cloud, "s3", _role(local_cloud, [{"Effect": "Allow", "Action": version_actions, "Resource": objects}])
    )
    named = {"Bucket": bucket, "Key": "k", "VersionId": version}

    # When each reads the version's tags and ACL and writes its tags
    def attempts(client: Any) -> list[str]:
        tags = {"TagSet": [{"Key": "b", "Value": "2"}]}
        requests = [("get_object_tagging", {}), ("get_object_acl", {}), ("put_object_tagging", {"Tagging": tags})]
        codes = []
        for operation, extra in requests:
            try:
                getattr(client, operation)(**named, **extra)
                codes.append("ok")
            except ClientError as error:
                codes.append(_error_code(error))
        return codes

    # Then only the version actions allow them, and the object actions still allow the current version's tags
    assert attempts(of_object) == ["AccessDenied"] * 3
    assert attempts(of_version) == ["ok"] * 3
    assert of_object.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == [{"Key": "b", "Value": "2"}]


def test_a_missing_key_is_403_without_list_bucket_and_404_with_it(
    local_cloud: LocalCloud, buckets: tuple[str, str]
) -> None:
    """HEAD of a missing key: 404 with s3:ListBucket on the bucket, 403 without.

    AWS: "HeadObject", Permissions ("If the object you request doesn't exist, the error that Amazon S3
    returns depends on whether you also have the s3:ListBucket permission"),
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
    """
    bucket, _ = buckets
    read = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    listing = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
    reader, reader_lister = _role(local_cloud, [read]), _role(local_cloud, [read, listing])

    # When each asks for a key that does not exist
    statuses = []
    for role in (reader, reader_lister):
        with pytest.raises(ClientError) as missing:
            _as_role(local_cloud, "s3", role).head_object(Bucket=bucket, Key="absent.txt")
        statuses.append(missing.value.response["ResponseMetadata"]["HTTPStatusCode"])

    # Then the role that may not list learns nothing about the key
    assert statuses == [403, 404]


def test_sqs_batch_actions_are_authorised_by_their_single_action(local_cloud: LocalCloud) -> None:
    """DeleteMessageBatch needs sqs:DeleteMessage (batch actions have no permission of their own),
    and a queue ARN in Resource confines the statement to that queue.

    AWS: "Amazon SQS batch actions" (Permissions), https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-batch-api.html
    """
    sqs = local_cloud.client("sqs", REGION)
    urls = [sqs.create_queue(QueueName=f"parity-iam-{uuid.uuid4().hex[:10]}")["QueueUrl"] for _ in range(2)]
    arns = [
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"] for url in urls
    ]
    for url in urls:
        sqs.send_message(QueueUrl=url, MessageBody="m")
    # Given a role that may receive and delete from the first queue only
    role = _role(
        local_cloud, [{"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"], "Resource": arns[0]}]
    )
    consumer = _as_role(local_cloud, "sqs", role)

    # When it receives and batch-deletes from the first, and receives from the second
    handle = consumer.receive_message(QueueUrl=urls[0], WaitTimeSeconds=1)["Messages"][0]["ReceiptHandle"]
    deleted = consumer.delete_message_batch(QueueUrl=urls[0], Entries=[{"Id": "1", "ReceiptHandle": handle}])
    with pytest.raises(ClientError) as denied:
        consumer.receive_message(QueueUrl=urls[1])

    # Then the batch delete succeeded and the other queue is out of reach
    assert [entry["Id"] for entry in deleted["Successful"]] == ["1"]
    assert _error_code(denied.value) == "AccessDenied"


def test_the_managed_sqs_execution_role_reaches_every_queue(local_cloud: LocalCloud) -> None:
    """AWSLambdaSQSQueueExecutionRole grants receive/delete on Resource "*": a function whose role has
    it (SAM attaches it for an SQS event) can drain any queue of the account; crr's template therefore
    declares its event source mapping itself and grants its own queue only.

    AWS: "AWSLambdaSQSQueueExecutionRole" (AWS managed policy reference),
    https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaSQSQueueExecutionRole.html
    """
    sqs = local_cloud.client("sqs", REGION)
    unrelated = sqs.create_queue(QueueName=f"parity-iam-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    sqs.send_message(QueueUrl=unrelated, MessageBody="someone else's")
    # Given a role with nothing but the managed policy
    role = _role(local_cloud, [])
    local_cloud.client("iam", REGION).attach_role_policy(
        RoleName=role.rsplit("/", 1)[1], PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole"
    )

    # When it receives from a queue nobody meant it to read
    received = _as_role(local_cloud, "sqs", role).receive_message(QueueUrl=unrelated, WaitTimeSeconds=1)

    # Then it gets the message
    assert [message["Body"] for message in received["Messages"]] == ["someone else's"]


def test_lambda_assumes_only_a_role_that_trusts_it(local_cloud: LocalCloud) -> None:
    """Lambda can use an execution role only if the role's trust policy names lambda.amazonaws.com.

    AWS: "Defining Lambda function permissions with an execution role",
    https://docs.aws.amazon.com/lambda/latest/dg/lambda-intro-execution-role.html
    """
    ec2_trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    # Given a role that trusts EC2, not Lambda
    role = _role(local_cloud, [], trust=ec2_trust)

    # When Lambda assumes it, Then it is refused
    with pytest.raises(LocalCloudError, match=r"does not let lambda\.amazonaws\.com assume it"):
        local_cloud.role_credentials(role)


def test_step_functions_start_execution_is_scoped_to_the_named_state_machine(local_cloud: LocalCloud) -> None:
    """states:StartExecution is authorised on the stateMachine ARN; a denial is AccessDeniedException.

    AWS: "Actions, resources, and condition keys for AWS Step Functions" (StartExecution: resource
    type stateMachine), https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html
    and "Common Errors" (AccessDeniedException), https://docs.aws.amazon.com/step-functions/latest/apireference/CommonErrors.html
    """
    sfn = local_cloud.client("stepfunctions", REGION)
    definition = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    machine_role = _role(local_cloud, [])  # moto never assumes it; AWS would need states.amazonaws.com
    allowed, other = (
        sfn.create_state_machine(name=f"parity-{uuid.uuid4().hex[:10]}", definition=definition, roleArn=machine_role)[
            "stateMachineArn"
        ]
        for _ in range(2)
    )
    # Given a role that may start the first machine only
    role = _role(local_cloud, [{"Effect": "Allow", "Action": "states:StartExecution", "Resource": allowed}])
    starter = _as_role(local_cloud, "stepfunctions", role)

    # When it starts both
    started = starter.start_execution(stateMachineArn=allowed, name="parity-allowed")
    with pytest.raises(ClientError) as denied:
        starter.start_execution(stateMachineArn=other, name="parity-denied")

    # Then the second is refused in the Step Functions API's own terms
    assert started["executionArn"].startswith(allowed.replace(":stateMachine:", ":execution:"))
    assert _error_code(denied.value) == "AccessDeniedException"


def test_eventbridge_describe_rule_is_scoped_to_the_named_rule(local_cloud: LocalCloud) -> None:
    """events:DescribeRule is authorised on the rule's ARN; a denial is AccessDeniedException.

    AWS: "Actions, resources, and condition keys for Amazon EventBridge" (DescribeRule: resource type
    rule, `arn:${Partition}:events:${Region}:${Account}:rule/[${EventBusName}/]${RuleName}`),
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html
    and "Common Errors" (AccessDeniedException), https://docs.aws.amazon.com/eventbridge/latest/APIReference/CommonErrors.html
    """
    events = local_cloud.client("events", REGION)
    pattern = json.dumps({"source": ["aws.s3"]})
    allowed, other = (f"parity-{uuid.uuid4().hex[:10]}" for _ in range(2))
    allowed_arn = events.put_rule(Name=allowed, EventPattern=pattern)["RuleArn"]
    events.put_rule(Name=other, EventPattern=pattern)
    # Given a role that may describe the first rule only
    role = _role(local_cloud, [{"Effect": "Allow", "Action": "events:DescribeRule", "Resource": allowed_arn}])
    reader = _as_role(local_cloud, "events", role)

    # When it describes both
    described = reader.describe_rule(Name=allowed)
    with pytest.raises(ClientError) as denied:
        reader.describe_rule(Name=other)

    # Then the second is refused in EventBridge's own terms
    assert described["Arn"] == allowed_arn
    assert _error_code(denied.value) == "AccessDeniedException"
