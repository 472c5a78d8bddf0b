"""Two-way sync's tombstones: ``RULE#<id>`` / ``TOMB#<key>``, the delete marker a rule made and its stamp."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.dynamodb.items import from_item, state_error, to_item
from crr.adapters.dynamodb.keys import (
    rule_pk,
    tombstone_sk,
)
from crr.adapters.dynamodb.ledger import LEDGER_TTL
from crr.models import TombstoneRecord
from crr.rules import ReplicationRule
from crr.stamps import Stamp

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoTombstones:
    """TombstoneRegistry over DynamoDB. The peer's records are read from the peer's table, in the
    destination region (one consistent GetItem, made only when a source key is a delete marker)."""

    def __init__(self, client_for: Callable[[str], DynamoDBClient], region: str, table_name: str) -> None:
        self._client_for = client_for
        self._region = region
        self._table = table_name

    def read(self, rule_id: str, key: str) -> TombstoneRecord | None:
        return self._read(self._region, self._table, rule_id, key)

    def read_peer(self, rule: ReplicationRule, key: str) -> TombstoneRecord | None:
        if rule.peer is None:
            return None
        return self._read(rule.destination_region, rule.peer.rules_table, rule.peer.rule_id, key)

    def _read(self, region: str, table: str, rule_id: str, key: str) -> TombstoneRecord | None:
        try:
            found = self._client_for(region).get_item(
                TableName=table, Key=to_item(self._key(rule_id, key)), ConsistentRead=True
            )
        except ClientError as exc:
            raise state_error(exc, f"GetItem on {table} in {region}") from exc
        if "Item" not in found:
            return None
        item = from_item(found["Item"])
        since = item.get("pending_since")
        return TombstoneRecord(
            marker_version=item.get("marker"),
            stamp=Stamp.decode(item["stamp"]) if item.get("stamp") else None,
            pending_stamp=Stamp.decode(item["pending_stamp"]) if item.get("pending_stamp") else None,
            pending_since=datetime.fromisoformat(str(since)) if since else None,
            pending_target=str(item["pending_target"]) if item.get("pending_target") else None,
        )

    def intend(self, rule_id: str, key: str, stamp: Stamp, at: datetime, target: str | None) -> None:
        values = {":stamp": stamp.encode(), ":since": at.isoformat(), ":expires": int((at + LEDGER_TTL).timestamp())}
        expression = "SET pending_stamp = :stamp, pending_since = :since, expires_at = :expires"
        if target is None:
            expression += " REMOVE pending_target"
        else:
            expression += ", pending_target = :target"
            values[":target"] = target
        self._update(rule_id, key, expression, values)

    def settle(self, rule_id: str, key: str, marker_version: str | None, stamp: Stamp) -> None:
        item = {
            **self._key(rule_id, key),
            "marker": marker_version,
            "stamp": stamp.encode(),
            "expires_at": int((datetime.now(UTC) + LEDGER_TTL).timestamp()),
        }
        try:
            self._client_for(self._region).put_item(TableName=self._table, Item=to_item(item))
        except ClientError as exc:
            raise state_error(exc, "PutItem") from exc

    def withdraw(self, rule_id: str, key: str) -> None:
        self._update(rule_id, key, "REMOVE pending_stamp, pending_since, pending_target", None)

    def _update(self, rule_id: str, key: str, expression: str, values: dict[str, Any] | None) -> None:
        extra: dict[str, Any] = {"ExpressionAttributeValues": to_item(values)} if values else {}
        try:
            self._client_for(self._region).update_item(
                TableName=self._table, Key=to_item(self._key(rule_id, key)), UpdateExpression=expression, **extra
            )
        except ClientError as exc:
            raise state_error(exc, "UpdateItem") from exc

    @staticmethod
    def _key(rule_id: str, key: str) -> dict[str, str]:
        return {"pk": rule_pk(rule_id), "sk": tombstone_sk(key)}
