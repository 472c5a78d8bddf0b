"""Adding and removing rules: validation against real bucket state, and notification wiring that
leaves other configurations alone (moto)."""

from __future__ import annotations

from typing import Any

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoRules
from crr.adapters.notifications import S3BucketNotifications
from crr.adapters.s3_buckets import S3Buckets
from crr.errors import (
    BucketNotAllowedError,
    BucketRegionMismatchError,
    InvalidRuleError,
    ReplicaKeyError,
    UnknownBucketError,
)
from crr_cli.adapters.kms import KmsKeys
from crr_cli.operations.catalog import RuleCatalog, RuleRequest, StackScope
from tests.support.aws import client, create_bucket, create_rules_table

SRC, DST, TABLE = "src-bucket", "dst-bucket", "rules"


@pytest.fixture
def world(aws: None) -> dict[str, Any]:
    s3, s3_east, sqs = client("s3", "us-west-1"), client("s3", "us-east-1"), client("sqs", "us-west-1")
    create_bucket(s3, SRC, "us-west-1")
    create_bucket(s3, "other-west", "us-west-1")
    create_bucket(s3_east, DST, "us-east-1")
    dynamodb = client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, TABLE)
    queue = sqs.create_queue(QueueName="replication")["QueueUrl"]
    theirs = sqs.create_queue(QueueName="theirs")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    their_arn = sqs.get_queue_attributes(QueueUrl=theirs, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients = ClientFactory()
    scope = StackScope(
        region="us-west-1", queue_arn=arn, source_buckets=(SRC, "other-west"), destination_buckets=(DST,)
    )
    catalog = RuleCatalog(
        DynamoRules(dynamodb, TABLE), S3Buckets(clients, "us-west-1"), S3BucketNotifications(clients), scope
    )
    return {"catalog": catalog, "s3": s3, "queue_arn": arn, "their_arn": their_arn}


def queue_configs(s3: Any) -> list[dict[str, Any]]:
    return list(s3.get_bucket_notification_configuration(Bucket=SRC).get("QueueConfigurations", []))


def test_adding_a_rule_keeps_existing_notifications_and_removing_takes_only_its_own(world: dict[str, Any]) -> None:
    # Given a source bucket already notifying someone else's queue about uploads under uploads/
    s3 = world["s3"]
    theirs = {
        "Id": "their-uploads",
        "QueueArn": world["their_arn"],
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}},
    }
    s3.put_bucket_notification_configuration(Bucket=SRC, NotificationConfiguration={"QueueConfigurations": [theirs]})
    # When a rule is added
    rule = world["catalog"].add(RuleRequest(source_bucket=SRC, destination_bucket=DST, prefixes=("data/",)))
    # Then both configurations are there, ours pointing at the replication queue
    by_id = {config["Id"]: config for config in queue_configs(s3)}
    assert set(by_id) == {"their-uploads", "crr-src-bucket-0"}
    assert by_id["crr-src-bucket-0"]["QueueArn"] == world["queue_arn"]
    assert rule.source_region == "us-west-1"
    assert rule.destination_region == "us-east-1"
    # When the rule is removed, Then only its configuration goes
    world["catalog"].remove(rule.rule_id)
    assert [config["Id"] for config in queue_configs(s3)] == ["their-uploads"]
    assert world["catalog"].list() == []


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (RuleRequest(source_bucket="ghost-bucket", destination_bucket=DST), UnknownBucketError, "ghost-bucket"),
        (
            RuleRequest(source_bucket=SRC, destination_bucket=DST, destination_region="eu-west-1"),
            BucketRegionMismatchError,
            "is in us-east-1, not eu-west-1",
        ),
        (RuleRequest(source_bucket=SRC, destination_bucket="other-west"), InvalidRuleError, "both in us-west-1"),
        (RuleRequest(source_bucket=DST, destination_bucket=SRC), InvalidRuleError, "deploy crr in us-east-1"),
    ],
)
def test_rules_that_cannot_work_are_refused_before_anything_is_written(
    world: dict[str, Any], request_: RuleRequest, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        world["catalog"].add(request_)
    assert world["catalog"].list() == []
    assert queue_configs(world["s3"]) == []


def test_buckets_outside_the_stacks_iam_scope_are_refused_with_the_fix(world: dict[str, Any]) -> None:
    create_bucket(client("s3", "us-east-1"), "unlisted-dst", "us-east-1")
    with pytest.raises(BucketNotAllowedError, match="redeploy the stack with DestinationBuckets"):
        world["catalog"].add(RuleRequest(source_bucket=SRC, destination_bucket="unlisted-dst"))


def test_adding_a_rule_advises_a_lifecycle_rule_for_incomplete_uploads_until_there_is_one(
    world: dict[str, Any],
) -> None:
    # Given a destination without any lifecycle configuration
    rule = world["catalog"].add(RuleRequest(source_bucket=SRC, destination_bucket=DST))
    # Then the advice names the missing AbortIncompleteMultipartUpload rule
    [advice] = [text for text in world["catalog"].advice(rule) if "multipart" in text]
    assert "AbortIncompleteMultipartUpload" in advice
    # When the bucket gets one, Then there is nothing to advise
    client("s3", "us-east-1").put_bucket_lifecycle_configuration(
        Bucket=DST,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                }
            ]
        },
    )
    assert [text for text in world["catalog"].advice(rule) if "multipart" in text] == []


def _catalog_with_keys(world: dict[str, Any], granted: tuple[str, ...]) -> RuleCatalog:
    clients = ClientFactory()
    scope = StackScope(
        region="us-west-1",
        queue_arn=world["queue_arn"],
        source_buckets=(SRC,),
        destination_buckets=(DST,),
        replica_kms_key_arns=granted,
    )
    rules = DynamoRules(client("dynamodb", "us-west-1"), TABLE)
    return RuleCatalog(rules, S3Buckets(clients, "us-west-1"), S3BucketNotifications(clients), scope, KmsKeys(clients))


def test_a_replica_key_alias_is_stored_as_the_key_arn_it_names(world: dict[str, Any]) -> None:
    # Given a destination-region key with an alias, listed by ARN in the stack's ReplicaKmsKeyArns
    kms = client("kms", "us-east-1")
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/replicas", TargetKeyId=key_arn)
    alias_arn = key_arn.split(":key/")[0] + ":alias/replicas"
    catalog = _catalog_with_keys(world, (key_arn,))
    # When a rule names the alias ARN
    rule = catalog.add(RuleRequest(source_bucket=SRC, destination_bucket=DST, replica_kms_key_arn=alias_arn))
    # Then the rule holds the key ARN, which is what the stack's IAM policy grants
    assert rule.replica_kms_key_arn == key_arn
    assert catalog.show(rule.rule_id).replica_kms_key_arn == key_arn


def test_a_replica_key_the_stack_may_not_use_or_that_does_not_exist_is_refused(world: dict[str, Any]) -> None:
    # Given two destination-region keys, only one listed in the stack's ReplicaKmsKeyArns
    kms = client("kms", "us-east-1")
    granted, other = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    kms.create_alias(AliasName="alias/other", TargetKeyId=other)
    catalog = _catalog_with_keys(world, (granted,))
    # When rules name the other key through its alias, or an alias that does not exist
    # Then both are refused before anything is written, naming the reason and the fix
    with pytest.raises(ReplicaKeyError, match=f"{other} \\(alias .*alias/other\\) is not in the stack's ReplicaKm"):
        catalog.add(
            RuleRequest(
                source_bucket=SRC, destination_bucket=DST, replica_kms_key_arn=other.split(":key/")[0] + ":alias/other"
            )
        )
    with pytest.raises(ReplicaKeyError, match="NotFoundException"):
        catalog.add(
            RuleRequest(
                source_bucket=SRC, destination_bucket=DST, replica_kms_key_arn=granted.split(":key/")[0] + ":alias/none"
            )
        )
    assert catalog.list() == []
    assert queue_configs(world["s3"]) == []


def test_adding_a_rule_warns_until_the_destination_is_versioned(world: dict[str, Any]) -> None:
    # Given a rule into an unversioned destination
    rule = world["catalog"].add(RuleRequest(source_bucket=SRC, destination_bucket=DST))
    # Then the advice says what the replica cannot restore, and how to fix it
    [warning] = [text for text in world["catalog"].advice(rule) if "not versioned" in text]
    assert "overwritten at the source" in warning
    assert "Enable versioning" in warning
    # When the destination is versioned, Then that warning is gone
    client("s3", "us-east-1").put_bucket_versioning(Bucket=DST, VersioningConfiguration={"Status": "Enabled"})
    assert [text for text in world["catalog"].advice(rule) if "not versioned" in text] == []
