"""Two-way pairs in the catalog: both halves or neither, versioned buckets only, and no silent removal
of one half (moto: two regions, a rules table and a queue in each)."""

from __future__ import annotations

from typing import Any

import pytest

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoRules
from crr.adapters.notifications import S3BucketNotifications
from crr.adapters.s3_buckets import S3Buckets
from crr.errors import PairedRuleError, RuleNotFoundError, VersioningRequiredError
from crr_cli.operations.catalog import PairRemoval, RuleCatalog, RuleRequest, StackScope
from tests.support.aws import client, create_bucket, create_rules_table

WEST, EAST = "west-site", "east-site"


def _catalog(region: str, source: str, destination: str) -> RuleCatalog:
    sqs, dynamodb = client("sqs", region), client("dynamodb", region)
    create_rules_table(dynamodb, f"rules-{region}")
    url = sqs.create_queue(QueueName="replication")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    scope = StackScope(
        region=region,
        queue_arn=arn,
        rules_table=f"rules-{region}",
        queue_url=url,
        source_buckets=(source,),
        destination_buckets=(destination,),
    )
    clients = ClientFactory()
    rules = DynamoRules(dynamodb, f"rules-{region}", cache_seconds=0)
    return RuleCatalog(rules, S3Buckets(clients, region), S3BucketNotifications(clients), scope)


@pytest.fixture
def stacks(aws: None) -> dict[str, Any]:
    create_bucket(client("s3", "us-west-1"), WEST, "us-west-1", versioned=True)
    create_bucket(client("s3", "us-east-1"), EAST, "us-east-1", versioned=True)
    return {"west": _catalog("us-west-1", WEST, EAST), "east": _catalog("us-east-1", EAST, WEST)}


def test_a_pair_is_added_in_both_stacks_each_naming_the_other(stacks: dict[str, Any]) -> None:
    # When the pair is added from the west stack
    forward, reverse = stacks["west"].add_two_way(RuleRequest(WEST, EAST), stacks["east"])
    # Then each stack holds its direction, pointing at the other's rule, table and queue
    assert stacks["east"].show(EAST) == reverse
    assert forward.peer is not None
    assert forward.peer.rule_id == EAST
    assert forward.peer.rules_table == "rules-us-east-1"
    assert reverse.peer is not None
    assert reverse.peer.rule_id == WEST
    assert reverse.peer.rules_table == "rules-us-west-1"


def test_an_unversioned_bucket_refuses_the_pair_and_nothing_is_written(stacks: dict[str, Any]) -> None:
    # Given the east bucket with versioning suspended
    client("s3", "us-east-1").put_bucket_versioning(Bucket=EAST, VersioningConfiguration={"Status": "Suspended"})
    # When the pair is added, Then it is refused with the fix, and neither stack holds a rule
    with pytest.raises(VersioningRequiredError, match="put-bucket-versioning --bucket east-site"):
        stacks["west"].add_two_way(RuleRequest(WEST, EAST), stacks["east"])
    assert stacks["west"].list() == []
    assert stacks["east"].list() == []


def test_one_half_of_a_pair_is_removed_only_when_asked_what_becomes_of_the_other(stacks: dict[str, Any]) -> None:
    stacks["west"].add_two_way(RuleRequest(WEST, EAST), stacks["east"])
    # When removing the west half without saying what becomes of the east half, Then it is refused
    with pytest.raises(PairedRuleError, match="--pair"):
        stacks["west"].remove(WEST)
    # When removing only this direction, Then the east rule stays, as a one-way rule
    stacks["west"].remove(WEST, PairRemoval.ONE_DIRECTION, stacks["east"])
    with pytest.raises(RuleNotFoundError):
        stacks["west"].show(WEST)
    assert stacks["east"].show(EAST).peer is None


def test_removing_the_pair_removes_both_directions(stacks: dict[str, Any]) -> None:
    stacks["west"].add_two_way(RuleRequest(WEST, EAST), stacks["east"])
    stacks["east"].remove(EAST, PairRemoval.BOTH, stacks["west"])
    assert stacks["west"].list() == []
    assert stacks["east"].list() == []
