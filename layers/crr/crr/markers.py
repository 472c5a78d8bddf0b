"""crr's replica marker, bound to the write that made it so that a user's copy cannot inherit it.

S3 carries user metadata along with every server-side copy that keeps it (``aws s3 cp`` and ``mv``
inside a bucket, ``rclone touch``, restoring an older version): if the marker were only "this came
from bucket X", such a copy would pass for crr's replica, and the loop guard would keep a user's
change from the other side for good. So the marker also holds

- ``crr-origin-seal``: a digest of the key the replica was written as, its origin stamp and ETag, the
  write time below, and every user metadata value and content header crr wrote. A copy to another
  key, or one that changes metadata or a content header (``rclone touch`` sets ``mtime``), breaks it;
- ``crr-written``: when crr sent the write. S3 stamps every new object (a copy too) with its own
  Last-Modified, the moment the write began, so a copy made later than the write window after crr's
  write (a restored version, a copy back from a temporary key) breaks the binding even though
  everything else is inherited. The window is the longest a request can take to reach S3 after crr
  built it: a Lambda invocation's limit (15 minutes) and some clock skew; a copy in parts, which the
  large-copy workflow may start in a later invocation, refreshes ``crr-written`` when its upload starts.
  The window must not be shorter: a write of crr's misjudged as a user's would get a stamp of its own
  (its Last-Modified) and could then win over a later real write.

What stays out of reach: a user who, within the window, recreates crr's replica of a key at that same
key with the same metadata and headers (a copy back from a temporary key seconds after crr wrote it).

Both are checked from the HEAD the replicator makes anyway: no request is added. A marker that does not
hold makes the object a user's write, made where it is, when S3 says. The digest is not a secret: it
guards against inheritance, not against someone writing ``crr-*`` metadata on purpose (those keys are
reserved).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from crr.models import ObjectState

MARKER_ORIGIN_BUCKET = "crr-origin-bucket"
MARKER_ORIGIN_TIME = "crr-origin-time"
# The source's version id: two-way sync tells two writes of one second apart by it.
MARKER_ORIGIN_VERSION = "crr-origin-version"
# The source's ETag: with an SSE-KMS source the replica's own ETag differs, so sameness is read here.
MARKER_ORIGIN_ETAG = "crr-origin-etag"
MARKER_WRITTEN = "crr-written"
MARKER_SEAL = "crr-origin-seal"
MARKER_KEYS = frozenset(
    {MARKER_ORIGIN_BUCKET, MARKER_ORIGIN_TIME, MARKER_ORIGIN_VERSION, MARKER_ORIGIN_ETAG, MARKER_WRITTEN, MARKER_SEAL}
)

# How long after crr built a write S3 may stamp the replica's Last-Modified: the request is sent within
# the invocation that built it (at most 15 minutes), plus clock skew.
CLOCK_SKEW = timedelta(seconds=2)
WRITE_WINDOW = timedelta(minutes=15) + timedelta(seconds=30)
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
_UNSEALED = frozenset({MARKER_SEAL})


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def user_metadata(state: ObjectState) -> dict[str, str]:
    """The metadata the user wrote on ``state``, without crr's replica marker."""
    return {name: value for name, value in state.metadata.items() if name not in MARKER_KEYS}


def seal(
    key: str,
    marker: dict[str, str],
    user_metadata: dict[str, str],
    headers: dict[str, str | None],
) -> str:
    """The digest binding ``marker`` to the replica crr is about to write (see the module docstring)."""
    document = {
        "key": key,
        "marker": {name: value for name, value in sorted(marker.items()) if name not in _UNSEALED},
        "metadata": dict(sorted(user_metadata.items())),
        "headers": {name: value for name, value in sorted(headers.items()) if value},
    }
    return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()[:32]


def replica_headers(state: ObjectState) -> dict[str, str | None]:
    """The content headers a replica of ``state`` is written with, as a HEAD of it will report them.

    Expires is left out: S3 may reformat the date, and a marker broken by that alone would cost a copy
    back on every write.
    """
    return {
        "content-type": state.content_type or DEFAULT_CONTENT_TYPE,
        "cache-control": state.cache_control,
        "content-disposition": state.content_disposition,
        "content-encoding": state.content_encoding,
        "content-language": state.content_language,
    }


def marker_for(state: ObjectState, origin_bucket: str, written: datetime) -> dict[str, str]:
    """The marker metadata of a replica of ``state`` (a version of ``origin_bucket``) written at ``written``."""
    marker = {
        MARKER_ORIGIN_BUCKET: origin_bucket,
        MARKER_ORIGIN_TIME: _text(state.last_modified),
        MARKER_ORIGIN_ETAG: state.etag.strip('"'),
        MARKER_WRITTEN: _text(written),
    }
    if state.version_id:
        marker[MARKER_ORIGIN_VERSION] = state.version_id
    marker[MARKER_SEAL] = seal(state.key, marker, user_metadata(state), replica_headers(state))
    return marker


def sealed_origin(state: ObjectState) -> str | None:
    """The bucket ``state`` was replicated from, when its marker holds for exactly this object: written
    by crr as this key, with these metadata and headers, and not copied since (a user's copy of a
    replica inherits the marker but is not one). None otherwise."""
    metadata = state.metadata
    origin = metadata.get(MARKER_ORIGIN_BUCKET)
    claimed, written = metadata.get(MARKER_SEAL), metadata.get(MARKER_WRITTEN)
    if origin is None or claimed is None or written is None:
        return None
    marker = {name: value for name, value in metadata.items() if name in MARKER_KEYS}
    if seal(state.key, marker, user_metadata(state), replica_headers(state)) != claimed:
        return None
    try:
        sent = datetime.fromisoformat(written)
    except ValueError:
        return None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    modified = state.last_modified if state.last_modified.tzinfo else state.last_modified.replace(tzinfo=UTC)
    # Last-Modified has whole seconds, so it may read up to a second before the moment crr sent the write.
    if not sent - CLOCK_SKEW - timedelta(seconds=1) <= modified <= sent + WRITE_WINDOW:
        return None
    return origin


def refreshed(metadata: dict[str, str], state: ObjectState, written: datetime) -> dict[str, str]:
    """``metadata`` (of a replica of ``state``) with crr's write time set to ``written`` and sealed again,
    if it carries a marker."""
    if MARKER_WRITTEN not in metadata:
        return metadata
    marker = {name: value for name, value in metadata.items() if name in MARKER_KEYS}
    marker[MARKER_WRITTEN] = _text(written)
    user = {name: value for name, value in metadata.items() if name not in MARKER_KEYS}
    marker[MARKER_SEAL] = seal(state.key, marker, user, replica_headers(state))
    return {**user, **marker}


def origin_etag(state: ObjectState) -> str | None:
    """The source ETag a sealed replica was copied from (unquoted), or None when ``state`` is not one."""
    if sealed_origin(state) is None:
        return None
    return state.metadata.get(MARKER_ORIGIN_ETAG)
