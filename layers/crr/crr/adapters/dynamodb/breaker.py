"""The delete breaker's state: ``RULE#<id>`` / ``BREAKER`` and the deletes it holds, ``RULE#<id>`` / ``HELD#<key>``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code
from crr.adapters.dynamodb.items import from_item, state_error, to_item, to_value
from crr.adapters.dynamodb.keys import (
    BREAKER_SK,
    HELD_SK_PREFIX,
    RULE_SK,
    held_sk,
    rule_pk,
)
from crr.errors import (
    RuleNotFoundError,
)
from crr.models import BreakerRecord, Verdict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


_SLOT_KINDS = {"d": "deletes", "c": "changes", "o": "overwrites"}


class DynamoBreakerStore:
    """BreakerStore and the operator's side of held deletes.

    ``RULE#<id>`` / ``BREAKER``: one item per rule holding the sliding count's slots (``d<slot>``,
    ``c<slot>``, ``o<slot>``: deletes, changes, overwrites, counted with atomic ADD) and the burst's state,
    so one UpdateItem counts a delete and returns everything its decision needs;
    ``RULE#<id>`` / ``HELD#<key>``: a delete held while the breaker is open. The rule item mirrors
    ``deletes_held`` for ``crr rules show``; decisions read only the breaker item.
    """

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def _key(self, rule_id: str) -> dict[str, Any]:
        return to_item({"pk": rule_pk(rule_id), "sk": BREAKER_SK})

    def _update(self, rule_id: str, **request: Any) -> dict[str, Any] | None:
        """UpdateItem on the breaker item; None when its condition failed."""
        try:
            updated = self._db.update_item(TableName=self._table, Key=self._key(rule_id), **request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise state_error(exc, "UpdateItem") from exc
        return from_item(updated.get("Attributes", {}))

    def count_delete(self, rule_id: str, slot: int, stale: Iterable[int], deletes: int = 1) -> BreakerRecord:
        names = {"#d": f"d{slot}", "#c": f"c{slot}"}
        removed = [f"{kind}{old}" for old in stale for kind in _SLOT_KINDS]
        names.update({f"#r{index}": name for index, name in enumerate(removed)})
        expression = "ADD #d :one, #c :one"
        if removed:
            expression += " REMOVE " + ", ".join(f"#r{index}" for index in range(len(removed)))
        updated = self._update(
            rule_id,
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=to_item({":one": deletes}),
            ReturnValues="ALL_NEW",
        )
        return _breaker_record(updated or {})

    def count_copies(self, rule_id: str, slot: int, copies: int, overwrites: int, at: datetime) -> None:
        self._update(
            rule_id,
            UpdateExpression="ADD #c :copies, #o :overwrites, overwrites_total :overwrites "
            "SET overwrites_since = if_not_exists(overwrites_since, :at)",
            ExpressionAttributeNames={"#c": f"c{slot}", "#o": f"o{slot}"},
            ExpressionAttributeValues=to_item({":copies": copies, ":overwrites": overwrites, ":at": at.isoformat()}),
        )

    def read(self, rule_id: str) -> BreakerRecord:
        try:
            found = self._db.get_item(TableName=self._table, Key=self._key(rule_id), ConsistentRead=True)
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        return _breaker_record(from_item(found.get("Item", {})))

    def _set_rule(self, rule_id: str, values: dict[str, Any]) -> None:
        names = {f"#{name}": name for name in values}
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in values),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{name}": to_value(value) for name, value in values.items()},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise state_error(exc, "UpdateItem") from exc

    def trip(self, rule_id: str, at: datetime) -> bool:
        tripped = self._update(
            rule_id,
            UpdateExpression="SET held_since = :at",
            ConditionExpression="attribute_not_exists(held_since)",
            ExpressionAttributeValues=to_item({":at": at.isoformat()}),
        )
        if tripped is None:
            return False
        self._set_rule(rule_id, {"deletes_held": True, "deletes_held_since": at.isoformat()})
        return True

    def hold(self, rule_id: str, key: str, held_since: datetime, at: datetime) -> BreakerRecord:
        # A put then a consistent read, not a transaction: a transaction's condition check on the breaker
        # item would make every concurrent count of a delete fail with TransactionConflictException.
        sk = held_sk(key)
        try:
            self._db.put_item(
                TableName=self._table,
                Item=to_item(
                    {
                        "pk": rule_pk(rule_id),
                        "sk": sk,
                        "key": key,
                        "held_at": at.isoformat(),
                        "held_since": held_since.isoformat(),
                    }
                ),
            )
        except ClientError as exc:
            raise state_error(exc, "PutItem") from exc
        after = self.read(rule_id)
        if after.held_since != held_since:
            self.forget_held(rule_id, sk)  # answered meanwhile: the answer's scan may have missed this key
        return after

    def end_discarding(self, rule_id: str, answered_until: datetime | None) -> None:
        self._update(
            rule_id,
            UpdateExpression="REMOVE discarding",
            ConditionExpression="verdict_to = :to",
            ExpressionAttributeValues=to_item({":to": answered_until.isoformat() if answered_until else ""}),
        )

    def answer(
        self,
        rule_id: str,
        held_since: datetime,
        verdict: Verdict,
        span: tuple[datetime, datetime],
        reset: Iterable[int],
    ) -> bool:
        removed = [f"{kind}{slot}" for slot in reset for kind in _SLOT_KINDS]
        expression = "SET verdict = :verdict, verdict_from = :from, verdict_to = :to, discarding = :discarding"
        expression += " REMOVE held_since" + "".join(f", #r{index}" for index in range(len(removed)))
        answered = self._update(
            rule_id,
            UpdateExpression=expression,
            ConditionExpression="held_since = :since",
            ExpressionAttributeValues=to_item(
                {
                    ":verdict": verdict.value,
                    ":from": span[0].isoformat(),
                    ":to": span[1].isoformat(),
                    ":discarding": verdict is Verdict.DISCARDED,
                    ":since": held_since.isoformat(),
                }
            ),
            **({"ExpressionAttributeNames": {f"#r{i}": name for i, name in enumerate(removed)}} if removed else {}),
            ReturnValues="UPDATED_NEW",
        )
        if answered is None:
            return False
        self._set_rule(rule_id, {"deletes_held": False, "deletes_held_since": None})
        return True

    def held_keys(self, rule_id: str) -> Iterator[tuple[str, str]]:
        """(sort key, object key) of every held delete of the rule, page by page."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :held)",
            ExpressionAttributeValues=to_item({":pk": rule_pk(rule_id), ":held": HELD_SK_PREFIX}),
            ConsistentRead=True,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    values = from_item(item)
                    yield str(values["sk"]), str(values["key"])
        except ClientError as exc:
            raise state_error(exc, "Query") from exc

    def held_count(self, rule_id: str) -> int:
        """How many deletes are held (one Query per 1 MB of held keys, counting only)."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :held)",
            ExpressionAttributeValues=to_item({":pk": rule_pk(rule_id), ":held": HELD_SK_PREFIX}),
            Select="COUNT",
        )
        try:
            return sum(int(page.get("Count", 0)) for page in pages)
        except ClientError as exc:
            raise state_error(exc, "Query") from exc

    def forget_held(self, rule_id: str, sort_key: str) -> None:
        try:
            self._db.delete_item(TableName=self._table, Key=to_item({"pk": rule_pk(rule_id), "sk": sort_key}))
        except ClientError as exc:
            raise state_error(exc, "DeleteItem") from exc


def _breaker_record(item: dict[str, Any]) -> BreakerRecord:
    slots: dict[str, dict[int, int]] = {kind: {} for kind in _SLOT_KINDS}
    for name, value in item.items():
        if name[:1] in _SLOT_KINDS and name[1:].lstrip("-").isdigit():
            slots[name[0]][int(name[1:])] = int(value)

    def moment(name: str) -> datetime | None:
        value = item.get(name)
        return datetime.fromisoformat(str(value)) if value else None

    verdict = item.get("verdict")
    return BreakerRecord(
        deletes=slots["d"],
        changes=slots["c"],
        overwrites=slots["o"],
        held_since=moment("held_since"),
        verdict=Verdict(str(verdict)) if verdict else None,
        verdict_from=moment("verdict_from"),
        verdict_to=moment("verdict_to"),
        discarding=bool(item.get("discarding", False)),
        overwrites_total=int(item.get("overwrites_total", 0)),
        overwrites_since=moment("overwrites_since"),
    )
