"""Source bucket notification configuration: add or remove crr's entries, keep everyone else's."""

from __future__ import annotations

import string
from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code, error_message
from crr.adapters.s3 import storage_error
from crr.errors import RuleError
from crr.rules import ReplicationRule

# Tag and ACL changes re-copy the object so the replica's tags and grants follow the source's.
REPLICATED_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:ObjectTagging:*", "s3:ObjectAcl:Put"]
_CONFIGURATION_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")


# Characters that S3's form-URL-encoding of event keys leaves as they are, whichever encoder variant:
# a filter value made of them matches the encoded key exactly as it matches the raw one.
_VERBATIM = frozenset(string.ascii_letters + string.digits + "/-_.")


def filter_prefixes(rule: ReplicationRule) -> list[str]:
    """The notification filter prefixes of the rule; [] means one configuration without a filter.

    S3 matches filter rules against the key as event records carry it, form-URL-encoded (a space as
    `+`, other special and non-ASCII characters as `%XX`), so a prefix such as "my dir/" written raw
    never fires. Each filter is the prefix's leading part that the encoding keeps verbatim, and the
    function selects the rest (``ReplicationRule.selects``): a few more records, none missed, and no
    dependence on S3's exact table for the other characters. Filters one of them covers are dropped
    (S3 refuses overlapping prefixes for the same events).
    """
    leading = set()
    for prefix in rule.prefixes:
        cut = next((index for index, char in enumerate(prefix) if char not in _VERBATIM), len(prefix))
        leading.add(prefix[:cut])
    if not leading or "" in leading:
        return []
    kept: list[str] = []
    for prefix in sorted(leading):
        if not (kept and prefix.startswith(kept[-1])):
            kept.append(prefix)
    return kept


def configuration_ids(rule: ReplicationRule) -> list[str]:
    """The ids of the configurations ``subscribe`` writes: one per filter prefix (S3 filters take one
    prefix each), named after the rule."""
    filters = filter_prefixes(rule)
    if not filters:
        return [f"crr-{rule.rule_id}"]
    return [f"crr-{rule.rule_id}-{index}" for index in range(len(filters))]


def _ids_ever_written(rule: ReplicationRule) -> set[str]:
    """Today's ids and those of earlier versions (one per raw prefix), so an upgrade unwires cleanly."""
    legacy = [f"crr-{rule.rule_id}-{index}" for index in range(len(rule.prefixes))]
    return {*configuration_ids(rule), f"crr-{rule.rule_id}", *legacy}


class S3BucketNotifications:
    def __init__(self, clients: ClientFactory) -> None:
        self._clients = clients

    def subscribe(self, rule: ReplicationRule, queue_arn: str) -> None:
        current = self._read(rule)
        mine = _ids_ever_written(rule)
        queues = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") not in mine]
        filters: list[str | None] = [*filter_prefixes(rule)] or [None]
        for config_id, prefix in zip(configuration_ids(rule), filters, strict=True):
            entry: dict[str, Any] = {"Id": config_id, "QueueArn": queue_arn, "Events": REPLICATED_EVENTS}
            if prefix is not None:
                entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
            queues.append(entry)
        current["QueueConfigurations"] = queues
        self._write(rule, current)

    def unsubscribe(self, rule: ReplicationRule) -> None:
        current = self._read(rule)
        mine = _ids_ever_written(rule)
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
