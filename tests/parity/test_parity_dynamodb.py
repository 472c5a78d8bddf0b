"""Parity: the local cloud's DynamoDB keeps its writes atomic and its transactions isolated, as AWS
documents, when several clients write at once (crr's workers and copy threads do)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crr_cli.localcloud.cloud import LocalCloud

pytestmark = pytest.mark.integration

REGION = "us-west-1"
# Enough items that a transaction's bookkeeping over the table takes a while.
SEEDED = 1500
WRITTEN_MEANWHILE = 200
FAILED_TRANSACTIONS = 40


@pytest.fixture
def table(local_cloud: LocalCloud) -> Iterator[str]:
    dynamodb = local_cloud.client("dynamodb", REGION)
    name = f"parity-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    dynamodb.delete_table(TableName=name)


def _put_many(dynamodb: Any, table: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 25):
        requests = [{"PutRequest": {"Item": {"pk": {"S": key}}}} for key in keys[start : start + 25]]
        dynamodb.batch_write_item(RequestItems={table: requests})


def test_a_cancelled_transaction_undoes_only_its_own_items_not_other_clients_writes(
    local_cloud: LocalCloud, table: str
) -> None:
    # A cancelled TransactWriteItems changes nothing, and writes of other requests made while it ran are
    # kept: transactions are isolated from every other write, and a failed one is rolled back alone.
    # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation
    # Given a table of some size and an item whose condition every transaction below fails
    dynamodb = local_cloud.client("dynamodb", REGION)
    _put_many(dynamodb, table, [f"seed-{i:05d}" for i in range(SEEDED)] + ["fence"])
    cancelled: list[str] = []

    def cancel_transactions() -> None:
        writer = local_cloud.client("dynamodb", REGION)
        for attempt in range(FAILED_TRANSACTIONS):
            try:
                writer.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": table, "Item": {"pk": {"S": f"never-{attempt}"}}}},
                        {
                            "Update": {
                                "TableName": table,
                                "Key": {"pk": {"S": "fence"}},
                                "UpdateExpression": "SET touched = :yes",
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ExpressionAttributeValues": {":yes": {"BOOL": True}},
                            }
                        },
                    ]
                )
            except ClientError as exc:
                cancelled.append(exc.response["Error"]["Code"])

    # When other clients write items one by one while transactions keep being cancelled
    canceller = threading.Thread(target=cancel_transactions)
    canceller.start()
    written = [f"meanwhile-{i:04d}" for i in range(WRITTEN_MEANWHILE)]
    writers = [threading.Thread(target=_put_one_by_one, args=(local_cloud, table, written[i::2])) for i in (0, 1)]
    for writer in writers:
        writer.start()
    for thread in (canceller, *writers):
        thread.join(timeout=120)
    # Then every transaction was cancelled, and none of its items exists
    assert cancelled == ["TransactionCanceledException"] * FAILED_TRANSACTIONS
    keys = _all_keys(dynamodb, table)
    assert not {key for key in keys if key.startswith("never-")}
    # And every item the other clients wrote meanwhile is still there
    assert set(written) <= keys, f"lost {len(set(written) - keys)} of {len(written)} writes"


def _put_one_by_one(local_cloud: LocalCloud, table: str, keys: list[str]) -> None:
    dynamodb = local_cloud.client("dynamodb", REGION)
    for key in keys:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": key}})


def _all_keys(dynamodb: Any, table: str) -> set[str]:
    keys: set[str] = set()
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        keys.update(item["pk"]["S"] for item in page["Items"])
    return keys
