"""S3 → EventBridge → SQS as AWS does it, inside the main moto server process.

moto sends a bucket's events to EventBridge when the bucket has an `EventBridgeConfiguration`, but
kinder than AWS and shaped differently:
* every event carries the same sequencer (`617f08299329d189`), `eTag` instead of `etag`, a
  `version-id` even on unversioned buckets, `reason` `ObjectCreated` instead of `PutObject`, and
  deletes carry neither `deletion-type` nor the delete marker's version;
* it offers the event to every rule of every bus in the region, disabled rules and rules without
  an event pattern (scheduled ones) included, and one failing target stops the rest;
* GetBucketNotificationConfiguration leaves `EventBridgeConfiguration` out although it is stored,
  so a read-modify-write of the configuration (as `crr rules add` does) switches EventBridge off;
* an SQS target receives the event whatever the queue's policy says. On AWS EventBridge needs the
  queue policy to allow `events.amazonaws.com` (usually scoped by `aws:SourceArn` to the rule);
  without it the delivery fails, is not retried, and the event goes to the target's dead-letter
  queue (when it has one and may send there) or is dropped.

`install()` replaces moto's `_send_event_bridge_message` with a delivery that builds the event as
the S3 user guide's "EventBridge event message structure" shows it (with the local cloud's per-key
sequencer), offers it only to the enabled pattern rules of the default bus, and delivers to SQS
targets only when the queue policy allows it, dead-lettering it with EventBridge's error attributes
otherwise. Other target types are not delivered locally (logged).
"""

from __future__ import annotations

import fnmatch
import json
import sys
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from moto.s3 import notifications
from moto.s3.responses import S3Response
from moto.sqs.models import sqs_backends

EVENTS_PRINCIPAL = "events.amazonaws.com"
_installed = False
_REASONS = {
    "ObjectCreated:Put": "PutObject",
    "ObjectCreated:Post": "PostObject",
    "ObjectCreated:Copy": "CopyObject",
    "ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "ObjectRemoved:Delete": "DeleteObject",
    "ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
}
# The pending event of `s3_events` (sequencer, versioned) for the record being delivered, or None.
CurrentDelivery = Callable[[], Any]


def _log(message: str) -> None:
    print(f"local EventBridge: {message}", file=sys.stderr, flush=True)


def s3_event(
    account_id: str, event_name: str, bucket: Any, key: Any, *, sequencer: str, versioned: bool
) -> dict[str, Any]:
    """The EventBridge event S3 sends for `event_name` (`s3:ObjectCreated:Put`, ...) on `key`."""
    name = event_name.removeprefix("s3:")
    detail_type = notifications._detail_type(event_name)
    s3_object: dict[str, Any] = {"key": key.name}
    if name.startswith("ObjectCreated:"):
        s3_object.update(size=key.size, etag=key.etag.strip('"'))
    if versioned and getattr(key, "version_id", None) not in (None, "null"):
        s3_object["version-id"] = str(key.version_id)
    s3_object["sequencer"] = sequencer
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket.name},
        "object": s3_object,
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": account_id,
        "source-ip-address": "127.0.0.1",
    }
    if name in _REASONS:
        detail["reason"] = _REASONS[name]
    if name == "ObjectRemoved:DeleteMarkerCreated":
        detail["deletion-type"] = "Delete Marker Created"
    elif name == "ObjectRemoved:Delete":
        detail["deletion-type"] = "Permanently Deleted"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": bucket.region_name,
        "resources": [bucket.arn],
        "detail": detail,
    }


# ------------------------------------------------------------------ queue policies


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return EVENTS_PRINCIPAL in _as_list(principal.get("Service", [])) or "*" in _as_list(principal.get("AWS", []))
    return False


def _action_matches(actions: Any) -> bool:
    return any(fnmatch.fnmatchcase("sqs:SendMessage".lower(), str(a).lower()) for a in _as_list(actions))


def _resource_matches(resources: Any, queue_arn: str) -> bool:
    return any(fnmatch.fnmatchcase(queue_arn, str(resource)) for resource in _as_list(resources))


_CONDITION_TESTS: dict[str, Callable[[str, str], bool]] = {
    "ArnEquals": lambda actual, wanted: actual == wanted,
    "StringEquals": lambda actual, wanted: actual == wanted,
    "ArnLike": fnmatch.fnmatchcase,
    "StringLike": fnmatch.fnmatchcase,
}


def _conditions_hold(conditions: dict[str, Any], context: dict[str, str]) -> bool:
    """Every condition holds for the request `context`; an operator or key we do not evaluate fails
    closed, so a policy the local cloud cannot read never lets more through than AWS would."""
    for operator, tests in conditions.items():
        test = _CONDITION_TESTS.get(operator)
        if test is None:
            return False
        for key, wanted in tests.items():
            actual = context.get(key)
            if actual is None or not any(test(actual, str(value)) for value in _as_list(wanted)):
                return False
    return True


def _statement_applies(statement: dict[str, Any], queue_arn: str, context: dict[str, str]) -> bool:
    return (
        _principal_matches(statement.get("Principal"))
        and _action_matches(statement.get("Action", []))
        and _resource_matches(statement.get("Resource", queue_arn), queue_arn)
        and _conditions_hold(statement.get("Condition", {}), context)
    )


def policy_allows_events(policy: str | None, queue_arn: str, rule_arn: str, account_id: str) -> bool:
    """Whether a queue policy lets the EventBridge rule `rule_arn` send to `queue_arn` (an explicit
    Deny wins, as in IAM's evaluation; no policy allows nothing)."""
    if not policy:
        return False
    statements = [s for s in _as_list(json.loads(policy).get("Statement", [])) if isinstance(s, dict)]
    context = {"aws:SourceArn": rule_arn, "aws:SourceAccount": account_id}
    applying = [s for s in statements if _statement_applies(s, queue_arn, context)]
    return any(s.get("Effect") == "Allow" for s in applying) and not any(s.get("Effect") == "Deny" for s in applying)


# ------------------------------------------------------------------ delivery


def _queue_of(arn: str) -> tuple[Any, Any, str] | None:
    """(backend, queue, name) of an SQS queue ARN, or None when it does not exist."""
    _, _, _, region, account, name = arn.split(":", 5)
    backend = sqs_backends[account][region]
    queue = backend.queues.get(name)
    return None if queue is None else (backend, queue, name)


def _send(arn: str, body: str, rule_arn: str, account_id: str, attributes: dict[str, Any] | None = None) -> str | None:
    """Send `body` to the queue `arn` as EventBridge would; returns why it could not, or None."""
    found = _queue_of(arn)
    if found is None:
        return "ResourceNotFoundException: the target queue does not exist"
    backend, queue, name = found
    if not policy_allows_events(queue.policy, arn, rule_arn, account_id):
        return f"AccessDenied: the policy of queue {name} does not allow {EVENTS_PRINCIPAL} to send for {rule_arn}"
    backend.send_message(queue_name=name, message_body=body, message_attributes=attributes)
    return None


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _deliver_to_sqs(rule: Any, target: dict[str, Any], event: dict[str, Any]) -> None:
    body = json.dumps(event)
    failure = _send(target["Arn"], body, rule.arn, rule.account_id)
    if failure is None:
        return
    dead_letters = (target.get("DeadLetterConfig") or {}).get("Arn")
    _log(f"rule {rule.arn} could not deliver event {event['id']} to {target['Arn']}: {failure}")
    if not dead_letters:
        return
    # Permission errors are not retried: the event goes straight to the target's DLQ.
    attributes = {
        "ERROR_CODE": _string(failure.split(":", 1)[0]),
        "ERROR_MESSAGE": _string(failure),
        "RULE_ARN": _string(rule.arn),
        "TARGET_ARN": _string(target["Arn"]),
    }
    lost = _send(dead_letters, body, rule.arn, rule.account_id, attributes)
    if lost is not None:
        _log(f"event {event['id']} lost: its dead-letter queue {dead_letters} refused it too: {lost}")


def _default_bus_rules(account_id: str, region: str) -> Iterable[Any]:
    from moto.events.models import events_backends  # noqa: PLC0415 - moto's events load only when used

    bus = events_backends[account_id][region].event_buses.get("default")
    return [] if bus is None else list(bus.rules.values())


def deliver(account_id: str, region: str, event: dict[str, Any]) -> None:
    """Offer `event` to the enabled event-pattern rules of the default bus and deliver it to their targets."""
    for rule in _default_bus_rules(account_id, region):
        if rule.state != "ENABLED" or not rule.event_pattern.get_pattern():
            continue
        if not rule.event_pattern.matches_event(event):
            continue
        for target in rule.targets:
            if target["Arn"].split(":")[2] == "sqs":
                _deliver_to_sqs(rule, target, event)
            else:
                _log(f"rule {rule.arn}: target {target['Arn']} is not delivered locally (SQS targets only)")


_EVENTBRIDGE_ELEMENT = "<EventBridgeConfiguration/>"


def _with_eventbridge_configuration(original: Callable[..., Any]) -> Callable[..., Any]:
    """GetBucketNotificationConfiguration shows `EventBridgeConfiguration` when the bucket has it."""

    def get_bucket_notification(self: Any) -> Any:
        status, headers, body = original(self)
        configuration = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if getattr(configuration, "event_bridge", None) is None or _EVENTBRIDGE_ELEMENT in body:
            return status, headers, body
        if body.rstrip().endswith("/>"):  # an otherwise empty <NotificationConfiguration .../>
            opening = body.rstrip()[:-2]
            return status, headers, f"{opening}>{_EVENTBRIDGE_ELEMENT}</NotificationConfiguration>"
        return (
            status,
            headers,
            body.replace("</NotificationConfiguration>", f"{_EVENTBRIDGE_ELEMENT}</NotificationConfiguration>"),
        )

    return get_bucket_notification


def install(current: CurrentDelivery) -> None:
    """Replace moto's S3 → EventBridge delivery (idempotent); `current()` is `s3_events`' pending event."""
    global _installed  # noqa: PLW0603 - process-wide patch state
    if _installed:
        return
    setattr(S3Response, "get_bucket_notification", _with_eventbridge_configuration(S3Response.get_bucket_notification))  # noqa: B010

    def send_event_bridge_message(account_id: str, bucket: Any, event_name: Any, key: Any) -> None:
        pending = current()
        name = str(getattr(event_name, "value", event_name))
        sequencer = pending.sequencer if pending is not None else ""
        versioned = bool(pending.versioned) if pending is not None else False
        try:
            event = s3_event(account_id, name, bucket, key, sequencer=sequencer, versioned=versioned)
            deliver(account_id, bucket.region_name, event)
        except Exception as error:  # noqa: BLE001 - asynchronous on AWS: the S3 request must not fail
            _log(f"delivery of {name} for {bucket.name}/{key.name} failed: {error!r}")

    notifications._send_event_bridge_message = send_event_bridge_message
    _installed = True
