"""Source bucket notification configuration: add or remove crr's entries, keep everyone else's."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code, error_message
from crr.adapters.s3 import storage_error
from crr.errors import RuleError
from crr.rules import ReplicationRule

# Tag and ACL changes re-copy the object so the replica's tags and grants follow the source's.
REPLICATED_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:ObjectTagging:*", "s3:ObjectAcl:Put"]
_CONFIGURATION_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")


def configuration_ids(rule: ReplicationRule) -> list[str]:
    """One configuration per prefix (S3 filters take one prefix each), named after the rule."""
    if not rule.prefixes:
        return [f"crr-{rule.rule_id}"]
    return [f"crr-{rule.rule_id}-{index}" for index in range(len(rule.prefixes))]


class S3BucketNotifications:
    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def subscribe(self, rule: ReplicationRule, queue_arn: str) -> None:
        current = self._read(rule)
        mine = set(configuration_ids(rule))
        queues = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") not in mine]
        for config_id, prefix in zip(configuration_ids(rule), rule.prefixes or (None,), strict=True):
            entry: dict[str, Any] = {"Id": config_id, "QueueArn": queue_arn, "Events": REPLICATED_EVENTS}
            if prefix is not None:
                entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
            queues.append(entry)
        current["QueueConfigurations"] = queues
        self._write(rule, current)

    def unsubscribe(self, rule: ReplicationRule) -> None:
        current = self._read(rule)
        mine = set(configuration_ids(rule))
        kept = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") not in mine]
        if len(kept) == len(current.get("QueueConfigurations", [])):
            return
        current["QueueConfigurations"] = kept
        self._write(rule, current)

    def _read(self, rule: ReplicationRule) -> dict[str, Any]:
        s3 = self._clients.client("s3", rule.source_region)
        try:
            found = s3.get_bucket_notification_configuration(Bucket=rule.source_bucket)
        except ClientError as exc:
            raise storage_error(exc, "GetBucketNotificationConfiguration", rule.source_bucket, None) from exc
        kept = {kind: found[kind] for kind in _CONFIGURATION_KINDS if found.get(kind)}
        if "EventBridgeConfiguration" in found:
            kept["EventBridgeConfiguration"] = found["EventBridgeConfiguration"]
        return kept

    def _write(self, rule: ReplicationRule, configuration: dict[str, Any]) -> None:
        s3 = self._clients.client("s3", rule.source_region)
        try:
            s3.put_bucket_notification_configuration(Bucket=rule.source_bucket, NotificationConfiguration=configuration)
        except ClientError as exc:
            if error_code(exc) == "InvalidArgument" and "overlap" in error_message(exc).lower():
                raise RuleError(
                    f"bucket {rule.source_bucket!r} already sends overlapping events to another destination "
                    "and S3 allows one notification per event type and prefix; narrow the other "
                    "configuration, or route the bucket through EventBridge into the replication queue"
                ) from exc
            raise storage_error(exc, "PutBucketNotificationConfiguration", rule.source_bucket, None) from exc
