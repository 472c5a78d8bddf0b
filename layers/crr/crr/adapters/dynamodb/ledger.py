"""The key ledger: ``RULE#<id>`` / ``KEY#<key>``, the last change applied to each key, fenced by revision."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code
from crr.adapters.dynamodb.items import from_item, state_error, to_item
from crr.adapters.dynamodb.keys import (
    ledger_sk,
    rule_pk,
)
from crr.errors import (
    LedgerConflictError,
)
from crr.models import LedgerEntry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


# A ledger entry only saves work (the replicator reconciles state, not events), so it may expire;
# 30 days outlives an SQS message (14 days) plus its time in the DLQ awaiting replay.
LEDGER_TTL = timedelta(days=30)


def _ledger_entry(item: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        revision=int(item["rev"]),
        sequencer=item.get("seq"),
        etag=item.get("etag"),
        deleted=bool(item.get("deleted", False)),
        applied_at=datetime.fromisoformat(str(item["applied_at"])),
        version_id=item.get("ver"),
        source_modified=datetime.fromisoformat(str(item["modified"])) if item.get("modified") else None,
        replica_etag=item.get("replica_etag"),  # absent from items written before it was recorded
    )


# BatchGetItem takes at most 100 keys; what it leaves unprocessed (throttling) is asked for again.
BATCH_GET_LIMIT = 100
BATCH_GET_ATTEMPTS = 4


class DynamoLedger:
    """KeyLedger over DynamoDB: one consistent GetItem to read, one conditional PutItem to record."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def read(self, rule_id: str, key: str) -> LedgerEntry | None:
        try:
            found = self._db.get_item(
                TableName=self._table,
                Key=to_item({"pk": rule_pk(rule_id), "sk": ledger_sk(key)}),
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        if "Item" not in found:
            return None
        return _ledger_entry(from_item(found["Item"]))

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        by_sk = {ledger_sk(key): key for key in keys}
        wanted = [to_item({"pk": rule_pk(rule_id), "sk": sk}) for sk in by_sk]
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            pending: Sequence[Mapping[str, Any]] = wanted[start : start + BATCH_GET_LIMIT]
            for attempt in range(BATCH_GET_ATTEMPTS):
                try:
                    answer = self._db.batch_get_item(
                        RequestItems={self._table: {"Keys": pending, "ConsistentRead": True}}
                    )
                except ClientError as exc:
                    raise state_error(exc, "BatchGetItem") from exc
                for item in answer.get("Responses", {}).get(self._table, []):
                    plain = from_item(item)
                    found[by_sk[str(plain["sk"])]] = _ledger_entry(plain)
                unprocessed = answer.get("UnprocessedKeys", {}).get(self._table)
                pending = unprocessed["Keys"] if unprocessed else []
                if not pending:
                    break
                time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB hands the rest back
            # Keys still unprocessed count as unrecorded: the caller copies them, which is safe.
        return found

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        item = {
            "pk": rule_pk(rule_id),
            "sk": ledger_sk(key),
            "key": key,
            "rev": entry.revision,
            "seq": entry.sequencer,
            "etag": entry.etag,
            "deleted": entry.deleted,
            "applied_at": entry.applied_at.isoformat(),
            "expires_at": int((entry.applied_at + LEDGER_TTL).timestamp()),
            "ver": entry.version_id,
            "modified": entry.source_modified.isoformat() if entry.source_modified else None,
            "replica_etag": entry.replica_etag,
        }
        if expected_revision is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "rev = :expected",
                "ExpressionAttributeValues": to_item({":expected": expected_revision}),
            }
        try:
            self._db.put_item(TableName=self._table, Item=to_item(item), **condition)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LedgerConflictError(f"ledger of {key!r} moved past revision {expected_revision}") from exc
            raise state_error(exc, "PutItem") from exc
