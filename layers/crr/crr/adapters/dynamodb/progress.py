"""Per-rule progress: ``RULE#<id>`` / ``PROGRESS``, counters added atomically and the time of the last sync."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.dynamodb.items import from_item, state_error, to_item
from crr.adapters.dynamodb.keys import (
    PROGRESS_SK,
    rule_pk,
)
from crr.models import ProgressDelta

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoProgress:
    """ProgressSink: one UpdateItem with atomic ADDs per rule per batch."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def add(self, rule_id: str, delta: ProgressDelta, applied_at: datetime) -> None:
        expression = (
            "ADD objects_copied :copied, bytes_copied :bytes, deletes_applied :deletes, skipped :skipped "
            "SET last_sync_at = :now"
        )
        values: dict[str, Any] = {
            ":copied": delta.objects_copied,
            ":bytes": delta.bytes_copied,
            ":deletes": delta.deletes_applied,
            ":skipped": delta.skipped,
            ":now": applied_at.astimezone(UTC).isoformat(),
        }
        if delta.latest_event_time is not None:
            expression += ", last_event_time = :event_time"
            values[":event_time"] = delta.latest_event_time.astimezone(UTC).isoformat()
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK}),
                UpdateExpression=expression,
                ExpressionAttributeValues=to_item(values),
            )
        except ClientError as exc:
            raise state_error(exc, "UpdateItem") from exc

    def read(self, rule_id: str) -> dict[str, Any]:
        try:
            found = self._db.get_item(TableName=self._table, Key=to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK}))
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        return from_item(found["Item"]) if "Item" in found else {}
