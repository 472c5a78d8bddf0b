"""Rules and their bucket claims: ``RULE#<id>`` / ``RULE`` with ``SRC#<bucket>`` and ``DST#<bucket>`` /
``CLAIM`` written in one transaction, so "one destination per source" and "no third bucket" hold atomically."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code
from crr.adapters.dynamodb.items import from_item, state_error, to_item
from crr.adapters.dynamodb.keys import (
    CLAIM_SK,
    PROGRESS_SK,
    RULE_SK,
    destination_claim_pk,
    rule_pk,
    source_claim_pk,
)
from crr.errors import (
    DestinationAlreadyClaimedError,
    RuleAlreadyExistsError,
    RuleNotFoundError,
    SourceAlreadyReplicatingError,
    SourceIsDestinationError,
    StateStoreError,
)
from crr.rules import PeerRule, ReplicationRule, RuleStatus

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


class DynamoRules:
    """Rules and claims. ``rule_for_source`` (the hot path) caches answers for ``cache_seconds``."""

    def __init__(self, client: DynamoDBClient, table_name: str, cache_seconds: float = 5.0) -> None:
        self._db = client
        self._table = table_name
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[ReplicationRule | None, float]] = {}
        self._lock = threading.Lock()
        self._lookups: dict[str, threading.Lock] = {}

    # ---- hot path --------------------------------------------------------------------------------

    def rule_for_source(self, bucket: str) -> ReplicationRule | None:
        cached = self._cached(bucket)
        if cached is not None:
            return cached[0]
        with self._lock:
            lookup = self._lookups.setdefault(bucket, threading.Lock())
        # One lookup per bucket at a time: when the cache expires, the records of a batch applied
        # concurrently wait for one answer instead of each reading the table.
        with lookup:
            cached = self._cached(bucket)
            if cached is not None:
                return cached[0]
            now = time.monotonic()
            claim = self._get(source_claim_pk(bucket), CLAIM_SK)
            rule = self.find(str(claim["rule_id"])) if claim else None
            with self._lock:
                self._cache[bucket] = (rule, now + self._cache_seconds)
            return rule

    def _cached(self, bucket: str) -> tuple[ReplicationRule | None] | None:
        """The cached answer (in a tuple: None may be the answer), if still fresh."""
        with self._lock:
            cached = self._cache.get(bucket)
        if cached is not None and cached[1] > time.monotonic():
            return (cached[0],)
        return None

    # ---- management --------------------------------------------------------------------------------

    def find(self, rule_id: str) -> ReplicationRule | None:
        item = self._get(rule_pk(rule_id), RULE_SK)
        return _rule_from(item) if item else None

    def get(self, rule_id: str) -> ReplicationRule:
        rule = self.find(rule_id)
        if rule is None:
            raise RuleNotFoundError(rule_id)
        return rule

    def list(self) -> list[ReplicationRule]:
        rules: list[ReplicationRule] = []
        for item in self._scan_rules():
            rules.append(_rule_from(item))
        return sorted(rules, key=lambda rule: rule.rule_id)

    def create(self, rule: ReplicationRule) -> None:
        """Store the rule and its two claims atomically.

        Raises RuleAlreadyExistsError, SourceAlreadyReplicatingError, DestinationAlreadyClaimedError or
        SourceIsDestinationError naming the rule already holding the conflicting claim.
        """
        absent = "attribute_not_exists(pk)"
        items: list[TransactWriteItemTypeDef] = [
            {"Put": {"TableName": self._table, "Item": _rule_item(rule), "ConditionExpression": absent}},
            {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Item": to_item(
                        {"pk": source_claim_pk(rule.source_bucket), "sk": CLAIM_SK, "rule_id": rule.rule_id}
                    ),
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Item": to_item(
                        {"pk": destination_claim_pk(rule.destination_bucket), "sk": CLAIM_SK, "rule_id": rule.rule_id}
                    ),
                }
            },
            # No chaining: the source must not receive replicas, the destination must not send them.
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Key": to_item({"pk": destination_claim_pk(rule.source_bucket), "sk": CLAIM_SK}),
                }
            },
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Key": to_item({"pk": source_claim_pk(rule.destination_bucket), "sk": CLAIM_SK}),
                }
            },
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise state_error(exc, "TransactWriteItems") from exc
            raise self._claim_conflict(rule, exc) from exc
        self._forget(rule.source_bucket)

    def _claim_conflict(self, rule: ReplicationRule, exc: ClientError) -> Exception:
        reasons = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
        failed = {index for index, code in enumerate(reasons) if code == "ConditionalCheckFailed"}
        checks: list[tuple[int, str, Any]] = [
            (0, rule_pk(rule.rule_id), lambda _owner: RuleAlreadyExistsError(rule.rule_id)),
            (
                1,
                source_claim_pk(rule.source_bucket),
                lambda owner: SourceAlreadyReplicatingError(rule.source_bucket, owner),
            ),
            (
                2,
                destination_claim_pk(rule.destination_bucket),
                lambda owner: DestinationAlreadyClaimedError(rule.destination_bucket, owner, "destination"),
            ),
            (
                3,
                destination_claim_pk(rule.source_bucket),
                lambda owner: SourceIsDestinationError(rule.source_bucket, owner),
            ),
            (
                4,
                source_claim_pk(rule.destination_bucket),
                lambda owner: DestinationAlreadyClaimedError(rule.destination_bucket, owner, "source"),
            ),
        ]
        for index, pk, make_error in checks:
            # When the service gives no reasons, find the conflicting item by looking.
            sk = RULE_SK if index == 0 else CLAIM_SK
            if (failed and index not in failed) or (not failed and self._get(pk, sk) is None):
                continue
            claim = self._get(pk, sk) or {}
            error: Exception = make_error(str(claim.get("rule_id", "?")))
            return error
        return StateStoreError(f"rule {rule.rule_id} was not stored: transaction cancelled ({reasons})")

    def set_status(self, rule_id: str, status: RuleStatus) -> ReplicationRule:
        rule = self.get(rule_id).with_status(status)
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                UpdateExpression="SET #status = :status",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=to_item({":status": status.value}),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise state_error(exc, "UpdateItem") from exc
        self._forget(rule.source_bucket)
        return rule

    def set_peer(self, rule_id: str, peer: PeerRule | None) -> ReplicationRule:
        rule = self.get(rule_id).model_copy(update={"peer": peer})
        update: dict[str, Any] = {"UpdateExpression": "REMOVE peer"}
        if peer is not None:
            update = {
                "UpdateExpression": "SET peer = :peer",
                "ExpressionAttributeValues": to_item({":peer": peer.model_dump()}),
            }
        try:
            self._db.update_item(
                TableName=self._table,
                Key=to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                ConditionExpression="attribute_exists(pk)",
                **update,
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise state_error(exc, "UpdateItem") from exc
        self._forget(rule.source_bucket)
        return rule

    def remove(self, rule_id: str) -> ReplicationRule:
        """Delete the rule and release its claims (the ledger stays and ages out through its TTL)."""
        rule = self.get(rule_id)
        owned = "rule_id = :rule_id"
        values = to_item({":rule_id": rule_id})
        items: list[TransactWriteItemTypeDef] = [
            {"Delete": {"TableName": self._table, "Key": to_item({"pk": rule_pk(rule_id), "sk": RULE_SK})}},
            {
                "Delete": {
                    "TableName": self._table,
                    "ConditionExpression": owned,
                    "ExpressionAttributeValues": values,
                    "Key": to_item({"pk": source_claim_pk(rule.source_bucket), "sk": CLAIM_SK}),
                }
            },
            {
                "Delete": {
                    "TableName": self._table,
                    "ConditionExpression": owned,
                    "ExpressionAttributeValues": values,
                    "Key": to_item({"pk": destination_claim_pk(rule.destination_bucket), "sk": CLAIM_SK}),
                }
            },
            {"Delete": {"TableName": self._table, "Key": to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK})}},
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            raise state_error(exc, "TransactWriteItems") from exc
        self._forget(rule.source_bucket)
        return rule

    def _forget(self, bucket: str) -> None:
        with self._lock:
            self._cache.pop(bucket, None)

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            found = self._db.get_item(TableName=self._table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
        except ClientError as exc:
            raise state_error(exc, "GetItem") from exc
        item = found.get("Item")
        return from_item(item) if item else None

    def _scan_rules(self) -> Iterator[dict[str, Any]]:
        paginator = self._db.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="sk = :rule",
            ExpressionAttributeValues=to_item({":rule": RULE_SK}),
            ConsistentRead=True,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    yield from_item(item)
        except ClientError as exc:
            raise state_error(exc, "Scan") from exc


def _rule_item(rule: ReplicationRule) -> dict[str, Any]:
    values = rule.model_dump(mode="json")
    values["prefixes"] = list(rule.prefixes)
    return to_item({"pk": rule_pk(rule.rule_id), "sk": RULE_SK, **values})


def _rule_from(item: dict[str, Any]) -> ReplicationRule:
    fields = {name: value for name, value in item.items() if name not in {"pk", "sk"}}
    fields["prefixes"] = tuple(fields.get("prefixes", ()))
    return ReplicationRule.model_validate(fields)
