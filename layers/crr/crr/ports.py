"""The interfaces the replication domain needs from the outside world, and the values they exchange.

Adapters in ``crr.adapters`` implement them over boto3; tests implement them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from crr.copying import PartRange
from crr.failures import FailureReason, FailureRecord
from crr.markers import MARKER_KEYS, sealed_origin
from crr.rules import ReplicationRule
from crr.stamps import Stamp

if TYPE_CHECKING:
    from crr.large_copy import LargeCopyJob

# Server-side encryption with KMS keys: SSE-KMS and dual-layer DSSE-KMS.
KMS_ENCRYPTIONS = frozenset({"aws:kms", "aws:kms:dsse"})


@dataclass(frozen=True)
class ObjectState:
    """What a HEAD of the source says about the current version of a key."""

    key: str
    etag: str
    size: int
    last_modified: datetime
    version_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None
    content_encoding: str | None = None
    content_language: str | None = None
    expires: str | None = None
    storage_class: str | None = None
    server_side_encryption: str | None = None
    kms_key_id: str | None = None

    @property
    def kms_encrypted(self) -> bool:
        """Encrypted with a KMS key (SSE-KMS or DSSE-KMS): its replica needs a key of the destination region."""
        return self.server_side_encryption in KMS_ENCRYPTIONS

    @property
    def replica_of(self) -> str | None:
        """The bucket this object was replicated from, when crr wrote it as this very object (a user's
        copy of a replica inherits the marker but is not one: crr.markers)."""
        return sealed_origin(self)

    @property
    def parts_count(self) -> int | None:
        """How many parts the source was uploaded in, read from its ETag ("<md5>-<parts>"); None if one."""
        _, dash, count = self.etag.strip('"').rpartition("-")
        return int(count) if dash and count.isdigit() else None

    @property
    def user_metadata(self) -> dict[str, str]:
        """Metadata the user wrote, without crr's replica marker."""
        return {k: v for k, v in self.metadata.items() if k not in MARKER_KEYS}


@dataclass(frozen=True)
class AclGrants:
    """ACL grants in CopyObject's header form (``id="..."``, ``uri="..."``), one string per permission."""

    full_control: str | None = None
    read: str | None = None
    read_acp: str | None = None
    write_acp: str | None = None


@dataclass(frozen=True)
class CopyRequest:
    source_bucket: str
    source_region: str
    destination_bucket: str
    destination_region: str
    state: ObjectState
    metadata: dict[str, str]
    storage_class: str | None
    grants: AclGrants | None
    replica_kms_key_arn: str | None = None
    replica_encryption: str | None = None  # the source's KMS algorithm, kept with the replica key
    # Two-way sync writes only over the destination version it compared against (If-Match), or only
    # where the key is absent (If-None-Match: *); a miss raises DestinationChangedError.
    destination_etag: str | None = None
    destination_absent: bool = False


@dataclass(frozen=True)
class KeyVersion:
    """One entry of a key's version history: an object version or a delete marker."""

    version_id: str
    last_modified: datetime
    is_delete_marker: bool
    etag: str | None = None


class ObjectStore(Protocol):
    """S3 as replication sees it. Each method is one request unless it says otherwise."""

    def head(self, bucket: str, region: str, key: str) -> ObjectState | None:
        """The current version of ``key``, or None when it does not exist (or is a delete marker)."""
        ...

    def acl_grants(
        self,
        *,
        bucket: str,
        region: str,
        destination_bucket: str,
        destination_region: str,
        key: str,
        version_id: str | None,
    ) -> AclGrants | None:
        """Grants to carry over, or None when either bucket has ACLs disabled (no request then)."""
        ...

    def copy(self, request: CopyRequest) -> str:
        """Server-side copy pinned to ``request.state``'s version/ETag; returns the replica's ETag.

        Raises SourceChangedError when the source no longer matches, SourceGoneError when it vanished.
        """
        ...

    def copy_version(self, request: CopyRequest) -> KeyVersion:
        """``copy``, answering with the version it wrote (id, ETag; its time is the copy's end as S3
        reports it). Raises as ``copy`` does."""
        ...

    def delete(self, bucket: str, region: str, key: str, if_etag: str | None = None) -> str | None:
        """Delete ``key`` (a delete marker on a versioned bucket); deleting a missing key succeeds.

        Returns the new delete marker's version id (None on an unversioned bucket). With ``if_etag``
        the delete happens only while that version is current, else DestinationChangedError.
        """
        ...

    def recent_versions(self, bucket: str, region: str, key: str, count: int) -> list[KeyVersion]:
        """Up to ``count`` of the newest versions and delete markers of exactly ``key``, newest first
        (one ListObjectVersions request)."""
        ...

    def delete_version(self, bucket: str, region: str, key: str, version_id: str) -> None:
        """Remove one version for good (no delete marker)."""
        ...

    def tags(self, bucket: str, region: str, key: str, version_id: str | None) -> dict[str, str]:
        """The tag set of that version of ``key`` (GetObjectTagging). Raises SourceGoneError if it is gone."""
        ...

    def put_tags(self, bucket: str, region: str, key: str, version_id: str | None, tags: dict[str, str]) -> None:
        """Replace the tag set of that version (PutObjectTagging; an empty set deletes the tags).
        Raises DestinationChangedError if that version is gone."""
        ...

    def put_acl(self, bucket: str, region: str, key: str, version_id: str | None, grants: AclGrants) -> None:
        """Replace the ACL of that version with ``grants`` (PutObjectAcl).
        Raises DestinationChangedError if that version is gone."""
        ...

    def part_sizes(self, bucket: str, region: str, state: ObjectState) -> list[int]:
        """The sizes of the parts ``state``'s version was uploaded in (one HEAD per part)."""
        ...

    def multipart_copy(self, request: CopyRequest, parts: list[PartRange]) -> str:
        """Copy in parts (in parallel), with every header, metadata, tags and grants set explicitly;
        abort the upload on any failure so none is left behind. Raises as ``copy`` does."""
        ...


@dataclass(frozen=True)
class UploadedPart:
    """A part a multipart upload already holds (from ListParts, or from the copy that made it)."""

    number: int
    size: int
    etag: str


class MultipartUploads(Protocol):
    """The destination's multipart uploads, step by step, for copies spread over several invocations."""

    def create(self, request: CopyRequest) -> str:
        """CreateMultipartUpload with every header, metadata, tags and grants of the replica; its id."""
        ...

    def copy_part(self, request: CopyRequest, upload_id: str, part: PartRange) -> UploadedPart:
        """UploadPartCopy pinned to the source version and ETag. Raises as ``ObjectStore.copy`` does."""
        ...

    def parts(self, request: CopyRequest, upload_id: str, first: int, last: int) -> dict[int, UploadedPart]:
        """The parts numbered ``first``..``last`` the upload holds (ListParts, one request per 1000)."""
        ...

    def complete(self, request: CopyRequest, upload_id: str, parts: list[UploadedPart]) -> str:
        """CompleteMultipartUpload (conditional like a two-way copy); the replica's ETag."""
        ...

    def abort(self, request: CopyRequest, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone (completed or aborted) is fine."""
        ...


class LargeCopyLauncher(Protocol):
    def start(self, job: LargeCopyJob) -> None:
        """Start the large-copy workflow for ``job`` (idempotent per source version)."""
        ...


class KeyHandOver(Protocol):
    """Where a key goes when a copy workflow cannot finish it, so it is never lost."""

    def reconcile(self, request: CopyRequest, why: str) -> None:
        """Ask the live path to reconcile the key's current state (a change notice on its queue)."""
        ...

    def dead_letter(self, rule_id: str, request: CopyRequest, reason: FailureReason, attempt_id: str) -> None:
        """Put a change notice for the key into the dead-letter queue with ``reason`` (replayable)."""
        ...


@dataclass(frozen=True)
class LedgerEntry:
    """What the replicator last applied for one (rule, key)."""

    revision: int
    sequencer: str | None
    etag: str | None
    deleted: bool
    applied_at: datetime
    # The source version applied (id and Last-Modified): the fence skips an older sequencer only while
    # the source still holds it, and the backfill recognises a key already replicated by it.
    version_id: str | None = None
    source_modified: datetime | None = None
    # The replica's own ETag as the copy's answer gave it (CopyObject, CompleteMultipartUpload): how
    # `crr verify` recognises a replica crr wrote whose ETag is not the source's (SSE-KMS), marker or not.
    replica_etag: str | None = None


class KeyLedger(Protocol):
    def read(self, rule_id: str, key: str) -> LedgerEntry | None: ...

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        """Store ``entry`` if the stored revision is still ``expected_revision`` (None: no entry yet).

        Raises LedgerConflictError otherwise.
        """
        ...

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        """The entries of those keys that have one (BatchGetItem: one request per 100 keys)."""
        ...


@dataclass(frozen=True)
class TombstoneRecord:
    """The delete marker a two-way rule made in its destination, and the delete it stands for.

    A delete marker carries no metadata, so this record is how both rules of a pair recognise a marker
    crr made (and when the original delete happened). ``pending_*`` is written before the delete, so
    a marker whose record was cut off by a crash is still recognised (see crr.mutual).
    """

    marker_version: str | None
    stamp: Stamp | None
    pending_stamp: Stamp | None = None
    pending_since: datetime | None = None
    # The version the pending delete removes (its If-Match): only a marker right on it can be that delete.
    # None in a record written before crr kept it.
    pending_target: str | None = None


class TombstoneRegistry(Protocol):
    def read(self, rule_id: str, key: str) -> TombstoneRecord | None:
        """This rule's record for ``key`` (the rule's own table)."""
        ...

    def read_peer(self, rule: ReplicationRule, key: str) -> TombstoneRecord | None:
        """The peer rule's record for ``key``: the markers it made in this rule's source (read from the
        peer's table, in the destination region)."""
        ...

    def intend(self, rule_id: str, key: str, stamp: Stamp, at: datetime, target: str | None) -> None:
        """Record, just before deleting version ``target`` of ``key``, the delete (``stamp``) it stands for."""
        ...

    def settle(self, rule_id: str, key: str, marker_version: str | None, stamp: Stamp) -> None: ...

    def withdraw(self, rule_id: str, key: str) -> None:
        """Forget a pending delete that did not happen (its condition failed)."""
        ...


class PeerNudges(Protocol):
    def nudge(self, rule: ReplicationRule, key: str) -> None:
        """Ask the peer rule to reconcile ``key``: the destination holds the later change, which only
        the peer may carry back into this rule's source."""
        ...


class RuleLookup(Protocol):
    def rule_for_source(self, bucket: str) -> ReplicationRule | None: ...


@dataclass
class ProgressDelta:
    """Counters one batch adds to a rule's progress."""

    objects_copied: int = 0
    bytes_copied: int = 0
    deletes_applied: int = 0
    skipped: int = 0
    latest_event_time: datetime | None = None

    def is_empty(self) -> bool:
        return not (self.objects_copied or self.deletes_applied or self.skipped)


class ProgressSink(Protocol):
    def add(self, rule_id: str, delta: ProgressDelta, applied_at: datetime) -> None: ...


@dataclass(frozen=True)
class QueueMessage:
    """One delivery of a replication-queue message, as the function received it."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)
    # SQS's ApproximateFirstReceiveTimestamp: when the message was first delivered (its first attempt).
    first_received_at: datetime | None = None


class FailureLog(Protocol):
    def record(
        self, message: QueueMessage, reason: FailureReason, *, rule_id: str | None, bucket: str | None, key: str | None
    ) -> FailureRecord:
        """Count one more failed attempt of ``message`` and keep its latest reason; returns the record."""
        ...

    def find(self, message_id: str) -> FailureRecord | None: ...


class FailedMessages(Protocol):
    """The queues' side of failure handling."""

    def retry_later(self, message: QueueMessage, delay_seconds: int) -> None:
        """Make the message visible again only after ``delay_seconds`` (its own backoff)."""
        ...

    def dead_letter(self, message: QueueMessage, record: FailureRecord) -> None:
        """Put the message into the dead-letter queue now, with its failure reason attached."""
        ...

    def hand_back(self, message: QueueMessage, bodies: list[str]) -> None:
        """Send ``bodies`` to the replication queue as new messages (records of ``message`` this
        invocation had no time to apply). Raises QueueError unless every one was sent."""
        ...
