"""The failure log: ``FAILURE#<message id>`` / ``FAILURE``, why a queue message failed and how often."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.dynamodb.items import from_item, state_error, to_item
from crr.adapters.dynamodb.keys import (
    FAILURE_SK,
    failure_pk,
)
from crr.failures import FailureKind, FailureReason, FailureRecord
from crr.models import QueueMessage

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


# Failure records outlive the DLQ's 14-day retention by a day, so every dead letter has its reason.
FAILURE_TTL = timedelta(days=15)


class DynamoFailureLog:
    """FailureLog: ``FAILURE#<message id>`` / ``FAILURE``, one UpdateItem per failed attempt."""

    def __init__(self, client: DynamoDBClient, table_name: str, clock: Any = None) -> None:
        self._db = client
        self._table = table_name
        self._clock = clock or (lambda: datetime.now(UTC))

    def record(
        self, message: QueueMessage, reason: FailureReason, *, rule_id: str | None, bucket: str | None, key: str | None
    ) -> FailureRecord:
        now = self._clock()
        fields: dict[str, Any] = {
            "last_failure": now.isoformat(),
            "code": reason.code,
            "kind": reason.kind.value,
            "error_message": reason.message or "-",
            "expires_at": int((now + FAILURE_TTL).timestamp()),
            "rule_id": rule_id,
            "bucket": bucket,
            "object_key": key,
        }
        present = {name: value for name, value in fields.items() if value is not None}
        # Placeholders for every name: several (bucket, code, ...) are DynamoDB reserved words.
        sets = ["#first_failure = if_not_exists(#first_failure, :last_failure)"]
        sets += [f"#{name} = :{name}" for name in present]
        names = {f"#{name}": name for name in [*present, "first_failure", "attempts"]}
        values = {f":{name}": value for name, value in present.items()} | {":one": 1}
        try:
            updated = self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": failure_pk(message.message_id), "sk": FAILURE_SK}),
                UpdateExpression="ADD #attempts :one SET " + ", ".join(sets),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            raise state_error(exc, "UpdateItem") from exc
        return _failure_from(message.message_id, from_item(updated["Attributes"]))

    def find(self, message_id: str) -> FailureRecord | None:
        try:
            found = self._db.get_item(
                TableName=self._table, Key=to_item({"pk": failure_pk(message_id), "sk": FAILURE_SK})
            )
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        return _failure_from(message_id, from_item(found["Item"])) if "Item" in found else None


def _failure_from(message_id: str, item: dict[str, Any]) -> FailureRecord:
    return FailureRecord(
        message_id=message_id,
        reason=FailureReason(FailureKind(item["kind"]), str(item["code"]), str(item["error_message"])),
        attempts=int(item["attempts"]),
        first_failure=datetime.fromisoformat(str(item["first_failure"])),
        last_failure=datetime.fromisoformat(str(item["last_failure"])),
        rule_id=item.get("rule_id"),
        bucket=item.get("bucket"),
        key=item.get("object_key"),
    )
