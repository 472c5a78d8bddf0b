"""The RulesTable: rules with their bucket claims, the per-key ledger, and per-rule progress.

Item layout (pk / sk):
- ``RULE#<id>`` / ``RULE``        the rule
- ``SRC#<bucket>`` / ``CLAIM``    the rule a source bucket replicates through
- ``DST#<bucket>`` / ``CLAIM``    the rule a destination bucket receives from
- ``RULE#<id>`` / ``KEY#<key>``   the ledger: last applied sequencer, revision, ETag (TTL: expires_at)
- ``RULE#<id>`` / ``PROGRESS``    counters (atomic ADD) and the time of the last sync
- ``RULE#<id>`` / ``TOMB#<key>``  two-way: the delete marker the rule made for the key, and its stamp
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import (
    DestinationAlreadyClaimedError,
    LedgerConflictError,
    RuleAlreadyExistsError,
    RuleNotFoundError,
    SourceAlreadyReplicatingError,
    SourceIsDestinationError,
    StateStoreError,
)
from crr.failures import FailureKind, FailureReason, FailureRecord
from crr.models import BreakerRecord, LedgerEntry, ProgressDelta, QueueMessage, TombstoneRecord, Verdict
from crr.rules import PeerRule, ReplicationRule, RuleStatus
from crr.stamps import Stamp

RULE_SK = "RULE"
CLAIM_SK = "CLAIM"
PROGRESS_SK = "PROGRESS"
# A ledger entry only saves work (the replicator reconciles state, not events), so it may expire;
# 30 days outlives an SQS message (14 days) plus its time in the DLQ awaiting replay.
LEDGER_TTL = timedelta(days=30)
# DynamoDB sort keys stop at 1024 bytes; S3 keys may use all 1024, so long ones are hashed.
_MAX_PLAIN_SK_BYTES = 1000

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items() if value is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def rule_pk(rule_id: str) -> str:
    return f"RULE#{rule_id}"


def ledger_sk(key: str, kind: str = "KEY") -> str:
    if len(key.encode("utf-8")) <= _MAX_PLAIN_SK_BYTES:
        return f"{kind}#{key}"
    return f"{kind}H#{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def _state_error(exc: ClientError, operation: str) -> StateStoreError:
    return StateStoreError(f"DynamoDB {operation} failed: {error_code(exc)}: {error_message(exc)}", error_code(exc))


class DynamoRules:
    """Rules and claims. ``rule_for_source`` (the hot path) caches answers for ``cache_seconds``."""

    def __init__(self, client: Any, table_name: str, cache_seconds: float = 5.0) -> None:
        self._db = client
        self._table = table_name
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[ReplicationRule | None, float]] = {}
        self._lock = threading.Lock()

    # ---- hot path --------------------------------------------------------------------------------

    def rule_for_source(self, bucket: str) -> ReplicationRule | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(bucket)
        if cached is not None and cached[1] > now:
            return cached[0]
        claim = self._get(f"SRC#{bucket}", CLAIM_SK)
        rule = self.find(str(claim["rule_id"])) if claim else None
        with self._lock:
            self._cache[bucket] = (rule, now + self._cache_seconds)
        return rule

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
        items = [
            {"Put": {"TableName": self._table, "Item": _rule_item(rule), "ConditionExpression": absent}},
            {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Item": _to_item({"pk": f"SRC#{rule.source_bucket}", "sk": CLAIM_SK, "rule_id": rule.rule_id}),
                }
            },
            {
                "Put": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Item": _to_item({"pk": f"DST#{rule.destination_bucket}", "sk": CLAIM_SK, "rule_id": rule.rule_id}),
                }
            },
            # No chaining: the source must not receive replicas, the destination must not send them.
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Key": _to_item({"pk": f"DST#{rule.source_bucket}", "sk": CLAIM_SK}),
                }
            },
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "ConditionExpression": absent,
                    "Key": _to_item({"pk": f"SRC#{rule.destination_bucket}", "sk": CLAIM_SK}),
                }
            },
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise _state_error(exc, "TransactWriteItems") from exc
            raise self._claim_conflict(rule, exc) from exc
        self._forget(rule.source_bucket)

    def _claim_conflict(self, rule: ReplicationRule, exc: ClientError) -> Exception:
        reasons = [reason.get("Code") for reason in exc.response.get("CancellationReasons", [])]
        failed = {index for index, code in enumerate(reasons) if code == "ConditionalCheckFailed"}
        checks: list[tuple[int, str, Any]] = [
            (0, rule_pk(rule.rule_id), lambda _owner: RuleAlreadyExistsError(rule.rule_id)),
            (1, f"SRC#{rule.source_bucket}", lambda owner: SourceAlreadyReplicatingError(rule.source_bucket, owner)),
            (
                2,
                f"DST#{rule.destination_bucket}",
                lambda owner: DestinationAlreadyClaimedError(rule.destination_bucket, owner, "destination"),
            ),
            (3, f"DST#{rule.source_bucket}", lambda owner: SourceIsDestinationError(rule.source_bucket, owner)),
            (
                4,
                f"SRC#{rule.destination_bucket}",
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
                Key=_to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                UpdateExpression="SET #status = :status",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_to_item({":status": status.value}),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise _state_error(exc, "UpdateItem") from exc
        self._forget(rule.source_bucket)
        return rule

    def set_peer(self, rule_id: str, peer: PeerRule | None) -> ReplicationRule:
        rule = self.get(rule_id).model_copy(update={"peer": peer})
        update: dict[str, Any] = {"UpdateExpression": "REMOVE peer"}
        if peer is not None:
            update = {
                "UpdateExpression": "SET peer = :peer",
                "ExpressionAttributeValues": _to_item({":peer": peer.model_dump()}),
            }
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                ConditionExpression="attribute_exists(pk)",
                **update,
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise _state_error(exc, "UpdateItem") from exc
        self._forget(rule.source_bucket)
        return rule

    def remove(self, rule_id: str) -> ReplicationRule:
        """Delete the rule and release its claims (the ledger stays and ages out through its TTL)."""
        rule = self.get(rule_id)
        owned = "rule_id = :rule_id"
        values = _to_item({":rule_id": rule_id})
        items = [
            {"Delete": {"TableName": self._table, "Key": _to_item({"pk": rule_pk(rule_id), "sk": RULE_SK})}},
            {
                "Delete": {
                    "TableName": self._table,
                    "ConditionExpression": owned,
                    "ExpressionAttributeValues": values,
                    "Key": _to_item({"pk": f"SRC#{rule.source_bucket}", "sk": CLAIM_SK}),
                }
            },
            {
                "Delete": {
                    "TableName": self._table,
                    "ConditionExpression": owned,
                    "ExpressionAttributeValues": values,
                    "Key": _to_item({"pk": f"DST#{rule.destination_bucket}", "sk": CLAIM_SK}),
                }
            },
            {"Delete": {"TableName": self._table, "Key": _to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK})}},
        ]
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            raise _state_error(exc, "TransactWriteItems") from exc
        self._forget(rule.source_bucket)
        return rule

    def _forget(self, bucket: str) -> None:
        with self._lock:
            self._cache.pop(bucket, None)

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            found = self._db.get_item(TableName=self._table, Key=_to_item({"pk": pk, "sk": sk}), ConsistentRead=True)
        except ClientError as exc:
            raise _state_error(exc, "GetItem") from exc
        item = found.get("Item")
        return _from_item(item) if item else None

    def _scan_rules(self) -> Iterator[dict[str, Any]]:
        paginator = self._db.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="sk = :rule",
            ExpressionAttributeValues=_to_item({":rule": RULE_SK}),
            ConsistentRead=True,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    yield _from_item(item)
        except ClientError as exc:
            raise _state_error(exc, "Scan") from exc


def _rule_item(rule: ReplicationRule) -> dict[str, Any]:
    values = rule.model_dump(mode="json")
    values["prefixes"] = list(rule.prefixes)
    return _to_item({"pk": rule_pk(rule.rule_id), "sk": RULE_SK, **values})


def _rule_from(item: dict[str, Any]) -> ReplicationRule:
    fields = {name: value for name, value in item.items() if name not in {"pk", "sk"}}
    fields["prefixes"] = tuple(fields.get("prefixes", ()))
    return ReplicationRule.model_validate(fields)


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

    def __init__(self, client: Any, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def read(self, rule_id: str, key: str) -> LedgerEntry | None:
        try:
            found = self._db.get_item(
                TableName=self._table,
                Key=_to_item({"pk": rule_pk(rule_id), "sk": ledger_sk(key)}),
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise _state_error(exc, "GetItem") from exc
        if "Item" not in found:
            return None
        return _ledger_entry(_from_item(found["Item"]))

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        by_sk = {ledger_sk(key): key for key in keys}
        wanted = [_to_item({"pk": rule_pk(rule_id), "sk": sk}) for sk in by_sk]
        found: dict[str, LedgerEntry] = {}
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            pending: list[dict[str, Any]] = wanted[start : start + BATCH_GET_LIMIT]
            for attempt in range(BATCH_GET_ATTEMPTS):
                try:
                    answer = self._db.batch_get_item(
                        RequestItems={self._table: {"Keys": pending, "ConsistentRead": True}}
                    )
                except ClientError as exc:
                    raise _state_error(exc, "BatchGetItem") from exc
                for item in answer.get("Responses", {}).get(self._table, []):
                    plain = _from_item(item)
                    found[by_sk[str(plain["sk"])]] = _ledger_entry(plain)
                pending = answer.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
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
                "ExpressionAttributeValues": _to_item({":expected": expected_revision}),
            }
        try:
            self._db.put_item(TableName=self._table, Item=_to_item(item), **condition)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise LedgerConflictError(f"ledger of {key!r} moved past revision {expected_revision}") from exc
            raise _state_error(exc, "PutItem") from exc


class DynamoTombstones:
    """TombstoneRegistry over DynamoDB. The peer's records are read from the peer's table, in the
    destination region (one consistent GetItem, made only when a source key is a delete marker)."""

    def __init__(self, client_for: Callable[[str], Any], region: str, table_name: str) -> None:
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
                TableName=table, Key=_to_item(self._key(rule_id, key)), ConsistentRead=True
            )
        except ClientError as exc:
            raise _state_error(exc, f"GetItem on {table} in {region}") from exc
        if "Item" not in found:
            return None
        item = _from_item(found["Item"])
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
            self._client_for(self._region).put_item(TableName=self._table, Item=_to_item(item))
        except ClientError as exc:
            raise _state_error(exc, "PutItem") from exc

    def withdraw(self, rule_id: str, key: str) -> None:
        self._update(rule_id, key, "REMOVE pending_stamp, pending_since, pending_target", None)

    def _update(self, rule_id: str, key: str, expression: str, values: dict[str, Any] | None) -> None:
        extra = {"ExpressionAttributeValues": _to_item(values)} if values else {}
        try:
            self._client_for(self._region).update_item(
                TableName=self._table, Key=_to_item(self._key(rule_id, key)), UpdateExpression=expression, **extra
            )
        except ClientError as exc:
            raise _state_error(exc, "UpdateItem") from exc

    @staticmethod
    def _key(rule_id: str, key: str) -> dict[str, str]:
        return {"pk": rule_pk(rule_id), "sk": ledger_sk(key, "TOMB")}


class DynamoProgress:
    """ProgressSink: one UpdateItem with atomic ADDs per rule per batch."""

    def __init__(self, client: Any, table_name: str) -> None:
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
                Key=_to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK}),
                UpdateExpression=expression,
                ExpressionAttributeValues=_to_item(values),
            )
        except ClientError as exc:
            raise _state_error(exc, "UpdateItem") from exc

    def read(self, rule_id: str) -> dict[str, Any]:
        try:
            found = self._db.get_item(TableName=self._table, Key=_to_item({"pk": rule_pk(rule_id), "sk": PROGRESS_SK}))
        except ClientError as exc:
            raise _state_error(exc, "GetItem") from exc
        return _from_item(found["Item"]) if "Item" in found else {}


# Failure records outlive the DLQ's 14-day retention by a day, so every dead letter has its reason.
FAILURE_TTL = timedelta(days=15)


class DynamoFailureLog:
    """FailureLog: ``FAILURE#<message id>`` / ``FAILURE``, one UpdateItem per failed attempt."""

    def __init__(self, client: Any, table_name: str, clock: Any = None) -> None:
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
                Key=_to_item({"pk": f"FAILURE#{message.message_id}", "sk": "FAILURE"}),
                UpdateExpression="ADD #attempts :one SET " + ", ".join(sets),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_to_item(values),
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            raise _state_error(exc, "UpdateItem") from exc
        return _failure_from(message.message_id, _from_item(updated["Attributes"]))

    def find(self, message_id: str) -> FailureRecord | None:
        try:
            found = self._db.get_item(
                TableName=self._table, Key=_to_item({"pk": f"FAILURE#{message_id}", "sk": "FAILURE"})
            )
        except ClientError as exc:
            raise _state_error(exc, "GetItem") from exc
        return _failure_from(message_id, _from_item(found["Item"])) if "Item" in found else None


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


BREAKER_SK = "BREAKER"
_SLOT_KINDS = {"d": "deletes", "c": "changes", "o": "overwrites"}


class DynamoBreakerStore:
    """BreakerStore and the operator's side of held deletes.

    ``RULE#<id>`` / ``BREAKER``: one item per rule holding the sliding count's slots (``d<slot>``,
    ``c<slot>``, ``o<slot>``: deletes, changes, overwrites, counted with atomic ADD) and the burst's state,
    so one UpdateItem counts a delete and returns everything its decision needs;
    ``RULE#<id>`` / ``HELD#<key>``: a delete held while the breaker is open. The rule item mirrors
    ``deletes_held`` for ``crr rules show``; decisions read only the breaker item.
    """

    def __init__(self, client: Any, table_name: str) -> None:
        self._db = client
        self._table = table_name

    def _key(self, rule_id: str) -> dict[str, Any]:
        return _to_item({"pk": rule_pk(rule_id), "sk": BREAKER_SK})

    def _update(self, rule_id: str, **request: Any) -> dict[str, Any] | None:
        """UpdateItem on the breaker item; None when its condition failed."""
        try:
            updated = self._db.update_item(TableName=self._table, Key=self._key(rule_id), **request)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise _state_error(exc, "UpdateItem") from exc
        return _from_item(updated.get("Attributes", {}))

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
            ExpressionAttributeValues=_to_item({":one": deletes}),
            ReturnValues="ALL_NEW",
        )
        return _breaker_record(updated or {})

    def count_copies(self, rule_id: str, slot: int, copies: int, overwrites: int, at: datetime) -> None:
        self._update(
            rule_id,
            UpdateExpression="ADD #c :copies, #o :overwrites, overwrites_total :overwrites "
            "SET overwrites_since = if_not_exists(overwrites_since, :at)",
            ExpressionAttributeNames={"#c": f"c{slot}", "#o": f"o{slot}"},
            ExpressionAttributeValues=_to_item({":copies": copies, ":overwrites": overwrites, ":at": at.isoformat()}),
        )

    def read(self, rule_id: str) -> BreakerRecord:
        try:
            found = self._db.get_item(TableName=self._table, Key=self._key(rule_id), ConsistentRead=True)
        except ClientError as exc:
            raise _state_error(exc, "GetItem") from exc
        return _breaker_record(_from_item(found.get("Item", {})))

    def _set_rule(self, rule_id: str, values: dict[str, Any]) -> None:
        names = {f"#{name}": name for name in values}
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_to_item({"pk": rule_pk(rule_id), "sk": RULE_SK}),
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in values),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":{name}": _serializer.serialize(value) for name, value in values.items()},
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise RuleNotFoundError(rule_id) from exc
            raise _state_error(exc, "UpdateItem") from exc

    def trip(self, rule_id: str, at: datetime) -> bool:
        tripped = self._update(
            rule_id,
            UpdateExpression="SET held_since = :at",
            ConditionExpression="attribute_not_exists(held_since)",
            ExpressionAttributeValues=_to_item({":at": at.isoformat()}),
        )
        if tripped is None:
            return False
        self._set_rule(rule_id, {"deletes_held": True, "deletes_held_since": at.isoformat()})
        return True

    def hold(self, rule_id: str, key: str, held_since: datetime, at: datetime) -> BreakerRecord:
        # A put then a consistent read, not a transaction: a transaction's condition check on the breaker
        # item would make every concurrent count of a delete fail with TransactionConflictException.
        sk = ledger_sk(key).replace("KEY", "HELD", 1)
        try:
            self._db.put_item(
                TableName=self._table,
                Item=_to_item(
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
            raise _state_error(exc, "PutItem") from exc
        after = self.read(rule_id)
        if after.held_since != held_since:
            self.forget_held(rule_id, sk)  # answered meanwhile: the answer's scan may have missed this key
        return after

    def end_discarding(self, rule_id: str, answered_until: datetime | None) -> None:
        self._update(
            rule_id,
            UpdateExpression="REMOVE discarding",
            ConditionExpression="verdict_to = :to",
            ExpressionAttributeValues=_to_item({":to": answered_until.isoformat() if answered_until else ""}),
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
            ExpressionAttributeValues=_to_item(
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
            ExpressionAttributeValues=_to_item({":pk": rule_pk(rule_id), ":held": "HELD"}),
            ConsistentRead=True,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    values = _from_item(item)
                    yield str(values["sk"]), str(values["key"])
        except ClientError as exc:
            raise _state_error(exc, "Query") from exc

    def held_count(self, rule_id: str) -> int:
        """How many deletes are held (one Query per 1 MB of held keys, counting only)."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :held)",
            ExpressionAttributeValues=_to_item({":pk": rule_pk(rule_id), ":held": "HELD"}),
            Select="COUNT",
        )
        try:
            return sum(int(page.get("Count", 0)) for page in pages)
        except ClientError as exc:
            raise _state_error(exc, "Query") from exc

    def forget_held(self, rule_id: str, sort_key: str) -> None:
        try:
            self._db.delete_item(TableName=self._table, Key=_to_item({"pk": rule_pk(rule_id), "sk": sort_key}))
        except ClientError as exc:
            raise _state_error(exc, "DeleteItem") from exc


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
