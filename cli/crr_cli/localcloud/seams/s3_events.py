"""S3 event notifications and conditional copies as S3 has them, applied inside the main moto process.

moto's S3 notification records lack `s3.object.sequencer` and `s3.object.versionId`, a delete on a
versioned bucket emits no `s3:ObjectRemoved:DeleteMarkerCreated` record, CompleteMultipartUpload
emits a stray `ObjectCreated:Put` before its own record, and every record is sent *inside* the
backend call, before the request has stored the object's metadata, ACL and tags. A replicator as
fast as the local one can then copy an object that is still half-written. These seams fix all of it:

* every record gets a sequencer drawn from one process-wide clock (16 uppercase hex digits,
  strictly increasing), taken under the same lock as the write, so per key the sequencer order is
  the write order, as on S3;
* `versionId` is added when the bucket has versioning enabled or suspended;
* a delete on a versioned bucket emits `DeleteMarkerCreated` (no version id given) or
  `ObjectRemoved:Delete` for the exact version that was removed (version id given);
* records raised while an S3 HTTP request is handled are held back and delivered when the request
  handler returns, i.e. after metadata, ACL and tags are in place.

Conditional copies, as S3 has them and moto does not: CopyObject honours `If-Match` and
`If-None-Match: *` on the destination key (a delete marker counts as absent) and
`x-amz-copy-source-if-match` on the source, and CompleteMultipartUpload honours `If-Match`; the check
and the write happen under the write lock, so they are atomic as on S3. A copy onto an existing key
gets exactly the source's tags (moto kept the overwritten object's tags beside them).

`install()` is idempotent and must run before the server serves requests (`seams.install` runs it
first); `delivering_event()` is how the EventBridge seam learns the record's sequencer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from moto.s3 import notifications
from moto.s3.exceptions import MissingKey, PreconditionFailed
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response

_Event = notifications.S3NotificationEvent
_DELETE_MARKER_CREATED = _Event.OBJECT_REMOVED_DELETE_MARKER_CREATED_EVENT
_REMOVED_DELETE = _Event.OBJECT_REMOVED_DELETE_EVENT
_CREATED_PUT = _Event.OBJECT_CREATED_PUT_EVENT

# One re-entrant lock around every S3 write that emits an event: the sequencer is drawn while the
# write's lock is held, so two writers racing on one key get sequencers in their write order.
_WRITE_LOCK = threading.RLock()
_installed = False


class _ThreadState(threading.local):
    """Per request-thread state of the seams (moto's server runs one thread per request)."""

    def __init__(self) -> None:
        self.pending: list[_PendingEvent] | None = None
        self.suppressed: frozenset[str] = frozenset()
        self.delivering: _PendingEvent | None = None


_state = _ThreadState()


class _SequencerClock:
    """Strictly increasing sequencers; seeded from the wall clock so they also grow across restarts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns() // 1000)
            return f"{self._last:016X}"


_clock = _SequencerClock()


@dataclass(frozen=True)
class _DeleteMarkerView:
    """The attributes moto's record builder reads from a key, for a delete marker (no bytes, no ETag)."""

    name: str
    version_id: str
    etag: str = ""
    size: int = 0


@dataclass(frozen=True)
class _PendingEvent:
    account_id: str
    event_name: str
    bucket: Any
    key: Any
    sequencer: str
    versioned: bool


@contextmanager
def _suppressing(*events: notifications.S3NotificationEvent) -> Iterator[None]:
    previous = _state.suppressed
    _state.suppressed = previous | frozenset(event.value for event in events)
    try:
        yield
    finally:
        _state.suppressed = previous


def _bucket_is_versioned(bucket: Any) -> bool:
    return getattr(bucket, "versioning_status", None) in ("Enabled", "Suspended")


class _EventDelivery:
    """Replaces moto's `send_event` / `_get_s3_event`; keeps the originals to do the sending."""

    def __init__(self) -> None:
        self._send_event: Callable[..., None] = notifications.send_event
        self._get_s3_event: Callable[..., dict[str, Any]] = notifications._get_s3_event

    def send_event(self, account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
        name = str(getattr(event_name, "value", event_name))
        if key is None or name in _state.suppressed:
            return
        with _WRITE_LOCK:
            event = _PendingEvent(account_id, name, bucket, key, _clock.next(), _bucket_is_versioned(bucket))
        if _state.pending is None:
            self.deliver(event)
        else:
            _state.pending.append(event)

    def deliver(self, event: _PendingEvent) -> None:
        _state.delivering = event
        try:
            self._send_event(event.account_id, event.event_name, event.bucket, event.key)
        finally:
            _state.delivering = None

    def get_s3_event(self, event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        body = self._get_s3_event(event_name, bucket, key, notification_id)
        event = _state.delivering
        s3_object: dict[str, Any] = body["Records"][0]["s3"]["object"]
        if event is not None:
            s3_object["sequencer"] = event.sequencer
            if event.versioned and getattr(key, "version_id", None) is not None:
                s3_object["versionId"] = str(key.version_id)
        if isinstance(key, _DeleteMarkerView):
            s3_object.pop("eTag", None)
            s3_object.pop("size", None)
        return body


def _defer_until_request_returns(method: Callable[..., Any], delivery: _EventDelivery) -> Callable[..., Any]:
    """Hold the records raised during one S3 request and deliver them when the handler returns."""

    def handle(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _state.pending is not None:  # nested dispatch (ambiguous -> key/bucket)
            return method(self, *args, **kwargs)
        _state.pending = []
        try:
            return method(self, *args, **kwargs)
        finally:
            pending, _state.pending = _state.pending, None
            for event in _as_s3_sends(pending):
                delivery.deliver(event)

    return handle


def _as_s3_sends(pending: list[_PendingEvent]) -> list[_PendingEvent]:
    """moto stores the tags of a PutObject/CopyObject through put_object_tagging, which raises an
    ObjectTagging:Put record S3 does not send: drop it when the same request created the key."""
    created = {getattr(event.key, "name", None) for event in pending if "ObjectCreated:" in event.event_name}
    return [
        event
        for event in pending
        if not ("ObjectTagging:Put" in event.event_name and getattr(event.key, "name", None) in created)
    ]


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(self, *args, **kwargs)

    return write


def _complete_multipart_upload(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto stores the assembled object with put_object, which emits a Put record S3 does not send."""

    def complete(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK, _suppressing(_CREATED_PUT):
            return original(self, *args, **kwargs)

    return complete


def _delete_object(original: Callable[..., Any]) -> Callable[..., Any]:
    """Emit the records S3 sends for deletes on versioned buckets; moto sends none or the wrong one."""

    def delete(
        self: Any, bucket_name: str, key_name: str, version_id: str | None = None, bypass: bool = False
    ) -> tuple[bool, dict[str, Any]]:
        with _WRITE_LOCK:
            bucket = self.get_bucket(bucket_name)
            if not bucket.is_versioned:
                result: tuple[bool, dict[str, Any]] = original(self, bucket_name, key_name, version_id, bypass)
                return result
            removed = [
                candidate
                for candidate in bucket.keys.getlist(key_name, [])
                if version_id is not None and str(candidate.version_id) == str(version_id)
            ]
            with _suppressing(_REMOVED_DELETE):
                deleted, meta = original(self, bucket_name, key_name, version_id, bypass)
            if deleted and version_id is None and meta.get("delete-marker") == "true":
                marker = _DeleteMarkerView(name=key_name, version_id=str(meta["version-id"]))
                notifications.send_event(self.account_id, _DELETE_MARKER_CREATED, bucket, marker)
            elif deleted and removed:
                gone = removed[0]
                if not hasattr(gone, "etag"):  # a delete marker removed for good
                    gone = _DeleteMarkerView(name=key_name, version_id=str(gone.version_id))
                notifications.send_event(self.account_id, _REMOVED_DELETE, bucket, gone)
            return deleted, meta

    return delete


def _unquoted(etag: str) -> str:
    return etag.strip('"')


def _check_destination(response: Any, key_name: str) -> None:
    """Raise PreconditionFailed as S3 does when the destination's If-Match / If-None-Match fails."""
    if_match, if_none_match = response.headers.get("If-Match"), response.headers.get("If-None-Match")
    if not (if_match or if_none_match):
        return
    current = response.backend.get_object(response.bucket_name, key_name)
    if if_match and current is None:
        raise MissingKey(key=key_name)
    if if_match and _unquoted(if_match) != _unquoted(current.etag):
        raise PreconditionFailed("If-Match")
    if if_none_match == "*" and current is not None:
        raise PreconditionFailed("If-None-Match")


def _conditional_copy(original: Callable[..., Any]) -> Callable[..., Any]:
    def copy_object(self: Any) -> Any:
        with _WRITE_LOCK:
            _check_destination(self, self.parse_key_name())
            expected = self.headers.get("x-amz-copy-source-if-match")
            if expected:
                source = self.headers.get("x-amz-copy-source", "")
                bucket, _, rest = unquote(source.lstrip("/")).partition("/")
                key, _, query = rest.partition("?versionId=")
                found = self.backend.get_object(bucket, key, version_id=query or None)
                if found is not None and _unquoted(found.etag) != _unquoted(expected):
                    raise PreconditionFailed("x-amz-copy-source-If-Match")
            return original(self)

    return copy_object


def _conditional_complete(original: Callable[..., Any]) -> Callable[..., Any]:
    def key_response_post(self: Any, *args: Any) -> Any:
        # (request, body, bucket_name, query, key_name), as moto passes them
        query, key_name = args[3], args[4]
        if not query.get("uploadId"):
            return original(self, *args)
        with _WRITE_LOCK:
            if self.headers.get("If-Match"):
                _check_destination(self, key_name)
            return original(self, *args)

    return key_response_post


def _copy_with_exactly_the_source_tags(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto adds the source's tags to those the overwritten destination key had; S3 gives the new object
    exactly the source's tags (none when the source has none)."""

    def copy_object(
        self: Any, src_key: Any, dest_bucket_name: str, dest_key_name: str, *args: Any, **kwargs: Any
    ) -> Any:
        copied = original(self, src_key, dest_bucket_name, dest_key_name, *args, **kwargs)
        new_key = self.get_object(dest_bucket_name, dest_key_name)
        if new_key is not None:
            self.tagger.delete_all_tags_for_resource(new_key.arn)
            self.tagger.copy_tags(src_key.arn, new_key.arn)
        return copied

    return copy_object


def install() -> None:
    """Patch moto's S3 notifications, writes and copies in this process (idempotent)."""
    global _installed  # noqa: PLW0603 - process-wide patch state
    if _installed:
        return
    delivery = _EventDelivery()
    notifications.send_event = delivery.send_event
    notifications._get_s3_event = delivery.get_s3_event
    setattr(S3Backend, "copy_object", _copy_with_exactly_the_source_tags(S3Backend.copy_object))  # noqa: B010
    for name in ("put_object", "copy_object", "put_object_acl", "put_object_tagging", "delete_object_tagging"):
        setattr(S3Backend, name, _locked(getattr(S3Backend, name)))
    setattr(S3Backend, "complete_multipart_upload", _complete_multipart_upload(S3Backend.complete_multipart_upload))  # noqa: B010
    setattr(S3Backend, "delete_object", _delete_object(S3Backend.delete_object))  # noqa: B010
    setattr(S3Response, "copy_object", _conditional_copy(S3Response.copy_object))  # noqa: B010
    setattr(S3Response, "_key_response_post", _conditional_complete(S3Response._key_response_post))  # noqa: B010
    for name in ("bucket_response", "key_response"):
        setattr(S3Response, name, _defer_until_request_returns(getattr(S3Response, name), delivery))
    _installed = True


def delivering_event() -> _PendingEvent | None:
    """The record this request thread is delivering now (its sequencer and versioning), else None."""
    return _state.delivering
