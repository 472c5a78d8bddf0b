"""The values the ports exchange (crr.ports): what S3, the queues and the rules table hand the domain
and take from it. Plain data with the few derived properties every reader needs; no I/O.

They live apart from the ports and from the features that use them, so that a port, an adapter and a
feature can all import them without importing one another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from crr.part_planning import MAX_PARTS, PartRange, part_ranges
from crr.stamps import Stamp

# ---- objects (S3) --------------------------------------------------------------------------------

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
    def parts_count(self) -> int | None:
        """How many parts the source was uploaded in, read from its ETag ("<md5>-<parts>"); None if one."""
        _, dash, count = self.etag.strip('"').rpartition("-")
        return int(count) if dash and count.isdigit() else None


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


@dataclass(frozen=True)
class UploadedPart:
    """A part a multipart upload already holds (from ListParts, or from the copy that made it)."""

    number: int
    size: int
    etag: str


_EXECUTION_NAME = re.compile(r"[^A-Za-z0-9_-]")


class LargeCopyJob(BaseModel):
    """One large copy, as it travels between the workflow's steps (well under Step Functions' 256 KB)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    request: CopyRequest
    part_sizes: list[int] = Field(min_length=1, max_length=MAX_PARTS)
    event_time: datetime
    upload_id: str | None = None
    # Two-way copies onto an absent key check afterwards that no delete slipped under them (crr.two_way_conflicts).
    seen_marker_version: str | None = None

    @property
    def parts(self) -> list[PartRange]:
        return part_ranges(self.part_sizes)

    @property
    def execution_name(self) -> str:
        """The same for every delivery of one source version, so duplicates start one execution."""
        state = self.request.state
        identity = "\0".join((self.rule_id, state.key, state.version_id or "", state.etag))
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return f"{_EXECUTION_NAME.sub('-', self.rule_id)[:40]}-{digest}"


MAX_PAGE_SIZE = 1000  # ListObjectsV2 returns at most 1000 keys per request


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One object of a bucket listing, for every reader of one: the backfill (a page at a time) and
    verify (all of it). ``etag`` is unquoted; ``storage_class`` and ``last_modified`` are what the
    listing said, when it said it (fakes and hand-made entries may leave them out)."""

    key: str
    size: int
    etag: str
    storage_class: str | None = None
    last_modified: datetime | None = None

    @property
    def sort_key(self) -> bytes:
        """The key as S3 orders listings: by its UTF-8 bytes."""
        return self.key.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class ListingPage:
    """One ListObjectsV2 response (``crr.adapters.listing.S3Listing``): its objects in key order, and
    whether more follow."""

    entries: list[ListedObject]
    truncated: bool


# ---- the rules table (DynamoDB) ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class TombstoneRecord:
    """The delete marker a two-way rule made in its destination, and the delete it stands for.

    A delete marker carries no metadata, so this record is how both rules of a pair recognise a marker
    crr made (and when the original delete happened). ``pending_*`` is written before the delete, so
    a marker whose record was cut off by a crash is still recognised (see crr.two_way_conflicts).
    """

    marker_version: str | None
    stamp: Stamp | None
    pending_stamp: Stamp | None = None
    pending_since: datetime | None = None
    # The version the pending delete removes (its If-Match): only a marker right on it can be that delete.
    # None in a record written before crr kept it.
    pending_target: str | None = None


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


class RuleProgress(BaseModel):
    """A rule's ``PROGRESS`` item: counters added atomically by the replicator, and two times.

    The replicator writes it at the end of a batch, at most once a second per warm function, so it
    trails the replica by that much; counts of a worker's last batches wait for its next batch."""

    model_config = ConfigDict(frozen=True)

    objects_copied: int = 0
    bytes_copied: int = 0
    deletes_applied: int = 0
    skipped: int = 0
    last_sync_at: datetime | None = None
    last_event_time: datetime | None = None


class FailureCount(BaseModel):
    """Failure records whose last failure falls in a window; ``complete`` is False when the count
    stopped at its scan bound and is therefore a lower bound."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(ge=0)
    complete: bool = True


class Verdict(StrEnum):
    """What an operator answered for a burst."""

    RELEASED = "released"
    DISCARDED = "discarded"


@dataclass(frozen=True)
class BreakerRecord:
    """The rule's breaker as stored: per-slot counts and the state of the current (or last) burst."""

    deletes: Mapping[int, int] = field(default_factory=dict)
    changes: Mapping[int, int] = field(default_factory=dict)
    overwrites: Mapping[int, int] = field(default_factory=dict)
    held_since: datetime | None = None  # tripped at; None when not held
    verdict: Verdict | None = None  # the operator's answer to the last burst...
    verdict_from: datetime | None = None  # ...covering deletes with event times in [from, to]
    verdict_to: datetime | None = None
    discarding: bool = False  # a discarded burst may still be arriving
    overwrites_total: int = 0
    overwrites_since: datetime | None = None

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def verdict_for(self, event_time: datetime | None) -> Verdict | None:
        """The operator's answer that covers a delete made at ``event_time``, if any."""
        if event_time is None or self.verdict is None or self.verdict_from is None or self.verdict_to is None:
            return None
        return self.verdict if self.verdict_from <= event_time <= self.verdict_to else None

    def slots(self) -> set[int]:
        return set(self.deletes) | set(self.changes) | set(self.overwrites)


# ---- queues (SQS) --------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class RawDeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    sent_at: datetime
    attributes: dict[str, str] = field(default_factory=dict)


class QueueDepth(BaseModel):
    """An SQS queue's approximate message counts (one GetQueueAttributes)."""

    model_config = ConfigDict(frozen=True)

    visible: int = Field(ge=0, description="ApproximateNumberOfMessages: waiting to be received")
    in_flight: int = Field(ge=0, description="ApproximateNumberOfMessagesNotVisible: received, not yet deleted")
    delayed: int = Field(default=0, ge=0, description="ApproximateNumberOfMessagesDelayed: not yet deliverable")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def depth(self) -> int:
        """Messages in the queue: waiting plus in flight."""
        return self.visible + self.in_flight

    @property
    def empty(self) -> bool:
        """Nothing waiting, nothing in flight, nothing delayed."""
        return self.depth == 0 and self.delayed == 0
