"""Source bucket notification configuration: add or remove crr's entries, keep everyone else's, and
say what is missing when someone else's tooling rewrote it."""

from __future__ import annotations

import string
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code, error_message
from crr.adapters.s3_errors import storage_error
from crr.errors import RuleError, StatusProbeError
from crr.rules import ReplicationRule

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import NotificationConfigurationTypeDef

# Tag and ACL changes re-copy the object so the replica's tags and grants follow the source's.
REPLICATED_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*", "s3:ObjectTagging:*", "s3:ObjectAcl:Put"]
_CONFIGURATION_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")
# Without these two a rule silently stops following creates or deletes.
_ESSENTIAL_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


class ChangeRoute(StrEnum):
    """How a stack's source buckets reach its queue (the template's ChangeRoute parameter)."""

    S3_NOTIFICATIONS = "S3Notifications"  # a queue configuration per rule in the bucket's notifications
    EVENTBRIDGE = "EventBridge"  # the bucket sends to EventBridge; the stack's rule forwards to the queue


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
    def __init__(
        self,
        clients: ClientFactory,
        route: ChangeRoute = ChangeRoute.S3_NOTIFICATIONS,
        changes_rule_arn: str | None = None,
    ) -> None:
        """``changes_rule_arn``: the stack's SourceChangesRule (EventBridge route), checked by ``wiring_problem``."""
        self._clients = clients
        self._route = route
        self._changes_rule_arn = changes_rule_arn

    def subscribe(self, rule: ReplicationRule, queue_arn: str) -> None:
        """Wire the rule's source bucket into the queue by the stack's route.

        EventBridge route: turn on the bucket's EventBridge delivery (the stack's rule selects the
        bucket and forwards to the queue) and drop queue configurations crr made for this rule
        earlier, which would deliver every change twice.
        """
        current = self._read(rule)
        mine = _ids_ever_written(rule)
        queues = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") not in mine]
        if self._route is ChangeRoute.EVENTBRIDGE:
            current["QueueConfigurations"] = queues
            current["EventBridgeConfiguration"] = {}
            self._write(rule, current)
            return
        filters: list[str | None] = [*filter_prefixes(rule)] or [None]
        for config_id, prefix in zip(configuration_ids(rule), filters, strict=True):
            entry: dict[str, Any] = {"Id": config_id, "QueueArn": queue_arn, "Events": REPLICATED_EVENTS}
            if prefix is not None:
                entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
            queues.append(entry)
        current["QueueConfigurations"] = queues
        self._write(rule, current)

    def unsubscribe(self, rule: ReplicationRule) -> None:
        """Take away this rule's queue configurations. A bucket's EventBridge delivery stays on: other
        consumers may rely on it, and the stack's rule only forwards the stack's SourceBuckets."""
        current = self._read(rule)
        mine = _ids_ever_written(rule)
        kept = [entry for entry in current.get("QueueConfigurations", []) if entry.get("Id") not in mine]
        if len(kept) == len(current.get("QueueConfigurations", [])):
            return
        current["QueueConfigurations"] = kept
        self._write(rule, current)

    def wiring_problem(self, rule: ReplicationRule, queue_arn: str) -> str | None:
        """What is missing for the rule's source bucket to reach the queue by the stack's route, or None.

        Raises StorageError when the notification configuration cannot be read, StatusProbeError when
        the stack's EventBridge rule cannot be.
        """
        current = self._read(rule)
        bucket = rule.source_bucket
        if self._route is ChangeRoute.EVENTBRIDGE:
            problems = (
                []
                if "EventBridgeConfiguration" in current
                else [f"bucket {bucket!r} does not send its events to EventBridge (EventBridgeConfiguration is off)"]
            )
            problems += self._changes_rule_problems(rule.source_region)
            return "; ".join(problems) or None
        by_id = {entry.get("Id"): entry for entry in current.get("QueueConfigurations", [])}
        problems = []
        for config_id in configuration_ids(rule):
            entry = by_id.get(config_id)
            if entry is None:
                problems.append(f"notification configuration {config_id!r} to the replication queue is missing")
            elif entry.get("QueueArn") != queue_arn:
                problems.append(f"notification configuration {config_id!r} sends to {entry.get('QueueArn')}")
            else:
                lacking = [name for name in _ESSENTIAL_EVENTS if name not in entry.get("Events", [])]
                if lacking:
                    problems.append(f"notification configuration {config_id!r} lacks {', '.join(lacking)}")
        return f"bucket {bucket!r}: {'; '.join(problems)}" if problems else None

    def _changes_rule_problems(self, region: str) -> list[str]:
        """The stack's SourceChangesRule must exist and be enabled, or no bucket's event reaches the queue."""
        if self._changes_rule_arn is None:
            return []
        name = self._changes_rule_arn.rsplit("/", 1)[1]
        events = self._clients.client("events", region)
        try:
            state = events.describe_rule(Name=name, EventBusName="default").get("State")
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return [f"the stack's EventBridge rule {name!r} does not exist"]
            raise StatusProbeError(
                f"DescribeRule {name} failed: {error_code(exc)}: {error_message(exc)}", error_code(exc)
            ) from exc
        return [] if state == "ENABLED" else [f"the stack's EventBridge rule {name!r} is {state}"]

    def _read(self, rule: ReplicationRule) -> dict[str, Any]:
        s3 = self._clients.client("s3", rule.source_region)
        try:
            found: Mapping[str, Any] = s3.get_bucket_notification_configuration(Bucket=rule.source_bucket)
        except ClientError as exc:
            raise storage_error(exc, "GetBucketNotificationConfiguration", rule.source_bucket, None) from exc
        kept = {kind: found[kind] for kind in _CONFIGURATION_KINDS if found.get(kind)}
        if "EventBridgeConfiguration" in found:
            kept["EventBridgeConfiguration"] = found["EventBridgeConfiguration"]
        return kept

    def _write(self, rule: ReplicationRule, configuration: dict[str, Any]) -> None:
        s3 = self._clients.client("s3", rule.source_region)
        try:
            # Built from what _read kept plus crr's own entries: S3's shape, not checkable as a literal.
            written = cast("NotificationConfigurationTypeDef", configuration)
            s3.put_bucket_notification_configuration(Bucket=rule.source_bucket, NotificationConfiguration=written)
        except ClientError as exc:
            if error_code(exc) == "InvalidArgument" and "overlap" in error_message(exc).lower():
                raise RuleError(
                    f"bucket {rule.source_bucket!r} already sends overlapping events to another destination "
                    "and S3 allows one notification per event type and prefix; narrow the other "
                    "configuration, or route the bucket through EventBridge into the replication queue"
                ) from exc
            raise storage_error(exc, "PutBucketNotificationConfiguration", rule.source_bucket, None) from exc


class WiringCheck:
    """``crr status``'s probe of one stack: what is missing from each rule's wiring into its queue."""

    def __init__(self, notifications: S3BucketNotifications, queue_arn: str) -> None:
        self._notifications = notifications
        self._queue_arn = queue_arn

    def problem(self, rule: ReplicationRule) -> str | None:
        """Raises StorageError when the bucket's notification configuration cannot be read."""
        return self._notifications.wiring_problem(rule, self._queue_arn)
