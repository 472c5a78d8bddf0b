"""S3 change notifications as they arrive in queue messages, reduced to what replication needs.

The replicator trusts a notification only as a hint that a key changed (DESIGN.md §3), so the
models here are deliberately lenient about fields replication never reads (Powertools' strict S3
models would dead-letter a real change over a missing ``requestParameters``), and strict about the
ones it does read: bucket, key, sequencer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote_plus, unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crr.errors import InvalidRuleError, MalformedEventError
from crr.rules import MAX_KEY_BYTES, check_bucket_name
from crr.sequencer import is_valid_sequencer


class ChangeKind(StrEnum):
    CREATED = "created"
    REMOVED = "removed"
    METADATA = "metadata"  # tags or ACL changed; the object's bytes did not


class ChangeEvent(BaseModel):
    """A hint that ``key`` in ``bucket`` changed; replication reconciles the key's current state."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    kind: ChangeKind
    event_name: str
    event_time: datetime
    sequencer: str | None = None
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    region: str | None = None
    # One of two readings of an ambiguous EventBridge key (see _from_eventbridge): a create or metadata
    # change under a reading that names no source object is not about that key, and deletes nothing.
    speculative: bool = False


class IgnoredNotification(BaseModel):
    """A message that is well formed but asks for nothing (s3:TestEvent, lifecycle actions, ...)."""

    model_config = ConfigDict(frozen=True)

    reason: str
    bucket: str | None = None


# ---- wire shapes (only the fields we read) ------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# SQS messages stop at 1 MiB; anything larger did not come from a queue and is not parsed at all.
MAX_BODY_BYTES = 1024 * 1024
# S3's sequencers are 16-18 hex digits; a far longer one is forged and would fence real changes out.
MAX_SEQUENCER_DIGITS = 32


class _S3Bucket(_Lenient):
    name: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return check_bucket_name(value)
        except InvalidRuleError as exc:
            raise ValueError(str(exc)) from None


class _S3Object(_Lenient):
    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    etag: str | None = Field(default=None, alias="eTag")
    version_id: str | None = Field(default=None, alias="versionId")
    sequencer: str | None = None


class _S3Entity(_Lenient):
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(_Lenient):
    event_source: Literal["aws:s3"] = Field(alias="eventSource")
    event_name: str = Field(alias="eventName")
    event_time: datetime = Field(alias="eventTime")
    aws_region: str | None = Field(default=None, alias="awsRegion")
    s3: _S3Entity


class _S3Notification(_Lenient):
    records: list[_S3Record] = Field(alias="Records")


class _EventBridgeObject(_Lenient):
    key: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None
    version_id: str | None = Field(default=None, alias="version-id")
    sequencer: str | None = None


class _EventBridgeDetail(_Lenient):
    bucket: _S3Bucket
    object: _EventBridgeObject
    deletion_type: str | None = Field(default=None, alias="deletion-type")


class _EventBridgeEvent(_Lenient):
    detail_type: str = Field(alias="detail-type")
    source: Literal["aws.s3"]
    time: datetime
    region: str | None = None
    detail: _EventBridgeDetail


_EVENTBRIDGE_KINDS = {
    "Object Created": ChangeKind.CREATED,
    "Object Deleted": ChangeKind.REMOVED,
    "Object Tags Added": ChangeKind.METADATA,
    "Object Tags Deleted": ChangeKind.METADATA,
    "Object ACL Updated": ChangeKind.METADATA,
}


def _kind_of(event_name: str) -> ChangeKind | None:
    """Map an S3 event name (``ObjectCreated:Put``, ``s3:ObjectRemoved:Delete``...) to a kind, or None."""
    name = event_name.removeprefix("s3:")
    if name.startswith("ObjectCreated:"):
        return ChangeKind.CREATED
    if name.startswith("ObjectRemoved:"):
        return ChangeKind.REMOVED
    if name.startswith(("ObjectTagging:", "ObjectAcl:")):
        return ChangeKind.METADATA
    return None


def decode_key(raw: str) -> str:
    """Decode a notification key (form-URL-encoded: ``+`` is a space) into the real S3 key.

    Raises MalformedEventError for percent-escapes that are not UTF-8 or a key S3 could not hold.
    """
    try:
        key = unquote_plus(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedEventError(f"object key {raw[:80]!r} has percent-escapes that are not UTF-8") from exc
    return _checked_key(key)


def _checked_key(key: str) -> str:
    if not key:
        raise MalformedEventError("object key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise MalformedEventError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _form_decoded_reading(key: str) -> str | None:
    """The key an EventBridge ``key`` would name if S3 had form-URL-encoded it, when that differs and
    is a key S3 could hold; else None."""
    try:
        decoded = unquote_plus(key, encoding="utf-8", errors="strict")
        return _checked_key(decoded) if decoded != key else None
    except (UnicodeDecodeError, MalformedEventError):
        return None


def _checked_sequencer(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not is_valid_sequencer(value):
        raise MalformedEventError(f"sequencer {value[:40]!r} is not a hex string")
    if len(value) > MAX_SEQUENCER_DIGITS:
        raise MalformedEventError(f"sequencer has {len(value)} hex digits; S3 sends at most {MAX_SEQUENCER_DIGITS}")
    return value


def _as_utc(moment: datetime) -> datetime:
    """S3 stamps times in UTC ('Z'); a time without an offset is read as UTC rather than compared naively."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _from_s3_record(record: _S3Record) -> ChangeEvent | IgnoredNotification:
    kind = _kind_of(record.event_name)
    if kind is None:
        return IgnoredNotification(
            reason=f"event {record.event_name} does not change what replicates", bucket=record.s3.bucket.name
        )
    obj = record.s3.object
    return ChangeEvent(
        bucket=record.s3.bucket.name,
        key=decode_key(obj.key),
        kind=kind,
        event_name=record.event_name.removeprefix("s3:"),
        event_time=_as_utc(record.event_time),
        sequencer=_checked_sequencer(obj.sequencer),
        version_id=obj.version_id if obj.version_id not in (None, "", "null") else None,
        etag=obj.etag,
        size=obj.size,
        region=record.aws_region,
    )


def _from_eventbridge(event: _EventBridgeEvent) -> list[ChangeEvent | IgnoredNotification]:
    """The change an EventBridge S3 event names: its key as delivered (EventBridge carries JSON, so
    nothing needs escaping, and ``unquote_plus`` would turn the ``+`` of ``a+b`` into a space).

    AWS documents the form-URL-encoding only for notification records, and AWS's own consumers
    (Powertools' ``S3EventBridgeNotificationObject``) decode EventBridge keys as well. A key that reads
    differently decoded (it holds ``+`` or ``%``) therefore also yields a hint for that reading,
    without sequencer or version: reconciling a key always makes the replica match the source's
    current state, and, having no sequencer, the hint never fences a later change of that key out of
    the ledger. Both readings are marked ``speculative``, so the wrong one costs a HEAD and no write.
    """
    kind = _EVENTBRIDGE_KINDS.get(event.detail_type)
    if kind is None:
        return [
            IgnoredNotification(
                reason=f"EventBridge {event.detail_type!r} does not change what replicates",
                bucket=event.detail.bucket.name,
            )
        ]
    obj = event.detail.object
    change = ChangeEvent(
        bucket=event.detail.bucket.name,
        key=_checked_key(obj.key),
        kind=kind,
        event_name=event.detail_type,
        event_time=_as_utc(event.time),
        sequencer=_checked_sequencer(obj.sequencer),
        version_id=obj.version_id if obj.version_id not in (None, "", "null") else None,
        etag=obj.etag,
        size=obj.size,
        region=event.region,
    )
    decoded = _form_decoded_reading(obj.key)
    if decoded is None:
        return [change]
    # Either reading may be the wrong one, so for both a create that finds no source object is dropped
    # rather than reconciled into a (spurious) delete of the replica; deletes are reconciled as usual.
    return [
        change.model_copy(update={"speculative": True}),
        change.model_copy(
            update={
                "key": decoded,
                "sequencer": None,
                "version_id": None,
                "etag": None,
                "size": None,
                "speculative": True,
            }
        ),
    ]


def _load_json(body: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedEventError(f"message body is not JSON: {exc}") from exc


def parse_notification(body: str) -> list[ChangeEvent | IgnoredNotification]:
    """Parse one queue message body into change events.

    Accepts an S3 notification (``Records``), an EventBridge S3 event, an SNS envelope around either,
    and ``s3:TestEvent``. Raises MalformedEventError for anything else, saying what was wrong.
    """
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise MalformedEventError(f"message body is larger than an SQS message ({MAX_BODY_BYTES} bytes)")
    document = _load_json(body)
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        message = document["Message"]
        if not isinstance(message, str):
            raise MalformedEventError("SNS envelope's Message is not a string")
        document = _load_json(message)
    if not isinstance(document, dict):
        raise MalformedEventError(f"message body is a JSON {type(document).__name__}, not an object")
    if document.get("Event") == "s3:TestEvent":
        return [
            IgnoredNotification(
                reason="s3:TestEvent sent when notifications were configured", bucket=document.get("Bucket")
            )
        ]
    try:
        if "Records" in document:
            notification = _S3Notification.model_validate(document)
            if not notification.records:
                raise MalformedEventError("S3 notification has an empty Records list")
            return [_from_s3_record(record) for record in notification.records]
        if "detail-type" in document:
            return _from_eventbridge(_EventBridgeEvent.model_validate(document))
    except ValidationError as exc:
        raise MalformedEventError(f"not an S3 change notification: {_summarise(exc)}") from None
    raise MalformedEventError("message is neither an S3 notification, an EventBridge S3 event nor s3:TestEvent")


def _summarise(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])


# configurationId of the notices crr sends itself (no sequencer: the ledger never fences them out).
NUDGE_CONFIGURATION_ID = "crr-peer-nudge"
LARGE_COPY_CONFIGURATION_ID = "crr-large-copy"


def change_notice(
    bucket: str, region: str, key: str, *, configuration_id: str, at: datetime, event_name: str = "ObjectCreated:Put"
) -> str:
    """The body of an S3 notification (as S3 sends it to SQS) saying that ``key`` changed.

    The replicator reconciles the key's current state whatever the event name says.
    """
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {"name": bucket},
            # Form-URL-encoded like S3's own records (a space becomes '+'); decode_key undoes it.
            "object": {"key": quote_plus(key, safe="/")},
        },
    }
    return json.dumps({"Records": [record]}, separators=(",", ":"))


@dataclass(frozen=True)
class NotificationPart:
    """One record of a queue message: what it asks for (``item``) or why it cannot be read (``error``),
    its raw JSON (``raw``) and a message body holding it alone (``body``), so it can be handed back to
    the queue or dead-lettered without its siblings."""

    body: str
    raw: Any
    item: ChangeEvent | IgnoredNotification | None = None
    error: MalformedEventError | None = None


def split_notification(body: str) -> list[NotificationPart]:
    """The records of one queue message, each parsed on its own: a malformed record is reported in its
    part instead of failing its siblings.

    A message that is not a notification at all (not JSON, no ``Records`` list, an empty one) raises
    MalformedEventError as ``parse_notification`` does; one that is not an S3 ``Records`` list
    (EventBridge, s3:TestEvent) is one part.
    """
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise MalformedEventError(f"message body is larger than an SQS message ({MAX_BODY_BYTES} bytes)")
    document = _load_json(body)
    if (
        isinstance(document, dict)
        and document.get("Type") == "Notification"
        and isinstance(document.get("Message"), str)
    ):
        document = _load_json(document["Message"])
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list) or not records:
        return [NotificationPart(body, document, item) for item in parse_notification(body)]
    parts: list[NotificationPart] = []
    for raw in records:
        alone = json.dumps({"Records": [raw]}, separators=(",", ":"))
        try:
            [item] = parse_notification(alone)
        except MalformedEventError as exc:
            parts.append(NotificationPart(alone, raw, error=exc))
        else:
            parts.append(NotificationPart(alone, raw, item))
    return parts


def join_records(parts: Sequence[NotificationPart]) -> str:
    """One message body carrying these parts' records (as S3 would send them)."""
    return json.dumps({"Records": [part.raw for part in parts]}, separators=(",", ":"))
