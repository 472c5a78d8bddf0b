"""Ports to S3: the objects replication reads and writes, listings, buckets and their notifications."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from crr.models import AclGrants, CopyRequest, KeyVersion, ListedObject, ListingPage, ObjectState, UploadedPart
from crr.part_planning import PartRange
from crr.rules import ReplicationRule


class ObjectStore(Protocol):
    """S3 as replication sees it. Each method is one request unless it says otherwise.

    Implemented by ``crr.adapters.s3.S3ObjectStore``; in tests by ``tests.support.fakes.FakeS3``."""

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
        """The sizes of the parts ``state``'s version was uploaded in: one GetObjectAttributes per 1000
        parts where S3 lists them (objects uploaded with a checksum), else one HEAD per part."""
        ...

    def multipart_copy(self, request: CopyRequest, parts: list[PartRange]) -> str:
        """Copy in parts (in parallel), with every header, metadata, tags and grants set explicitly;
        abort the upload on any failure so none is left behind. Raises as ``copy`` does."""
        ...


class MultipartUploads(Protocol):
    """The destination's multipart uploads, step by step, for copies spread over several invocations.

    Implemented by ``crr.adapters.s3_multipart.S3MultipartUploads`` (``S3ObjectStore.uploads``); in tests by
    none: the steps are tested against SeaweedFS."""

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


class Inspector(Protocol):
    """What verify reads of one object beyond the listing (``crr.adapters.s3.S3ObjectStore`` does both).

    Implemented by ``crr.adapters.s3.S3ObjectStore``; in tests by ``tests.support.fakes.FakeS3``."""

    def head(self, bucket: str, region: str, key: str) -> ObjectState | None: ...

    def tags(self, bucket: str, region: str, key: str, version_id: str | None) -> dict[str, str]: ...

    def checksum(self, bucket: str, region: str, key: str) -> str | None:
        """The full-object checksum (``ALGORITHM:value``) of the current version, if S3 keeps one."""
        ...


class PageListing(Protocol):
    """A bucket listing one request at a time (the backfill's: it resumes from any key).

    Implemented by ``crr.adapters.listing.S3Listing``; in tests by ``tests.support.fakes.FakePageListing``; for
    memory at any object count by ``tests.support.synthetic.SyntheticListing``."""

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        """ONE ListObjectsV2 request: up to ``max_keys`` objects under ``prefix`` after ``start_after``,
        in S3's key order. Raises StorageError subclasses when the bucket cannot be listed."""
        ...


class FastCopier(Protocol):
    """The backfill's copy of a listed object: one request, no HEAD first.

    Implemented by ``crr.adapters.backfill_s3.S3FastCopier``; in tests by ``tests.support.fakes.FakeFastCopier``;
    for memory at any object count by ``tests.support.synthetic.CountingCopier``."""

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        """Copy ``entry`` into the rule's destination with ONE CopyObject (metadata and tags copied by the
        server, pinned to ``entry.etag``), plus GetObjectAcl only when both buckets use ACLs. Returns the
        replica's ETag as the copy's answer gives it (None if it gave none).

        Raises SourceChangedError when the source no longer has that ETag, SourceGoneError when it is
        gone, StorageError subclasses otherwise.
        """
        ...


class InventoryFiles(Protocol):
    """The files of an S3 Inventory report (its manifest.json and CSV.gz data files), read from the bucket
    they are in. Bytes only: what they mean is ``crr.backfill.inventory``'s.

    Implemented by ``crr.adapters.inventory_s3.S3InventoryFiles``; in tests by
    ``tests.support.fakes.FakeInventoryFiles``."""

    def read(self, bucket: str, region: str, key: str) -> bytes:
        """The whole object (ONE GetObject), for the manifest: a few KiB.

        Raises InventoryFileMissingError (no such key or bucket), InventoryAccessDeniedError, and
        StorageError subclasses for anything a retry may fix."""
        ...

    def stream(self, bucket: str, region: str, key: str) -> Iterator[bytes]:
        """The object's bytes as they arrive (ONE GetObject), in chunks; memory holds one chunk at a time.
        Stop consuming early and the rest is never downloaded. Raises as ``read`` does, also mid-stream
        (a connection cut: StorageError)."""
        ...


class Listing(Protocol):
    """A whole bucket listing as a stream of pages (verify's: it walks both buckets side by side).

    Implemented by ``crr.adapters.listing.S3Listing``; in tests by ``tests.support.fakes.FakeListing``."""

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        """The objects under ``prefix`` (``""``: every object), page by page, in S3's listing order:
        ascending by the UTF-8 bytes of the key. Pages are fetched as they are consumed.

        Raises StorageError subclasses when the bucket cannot be listed.
        """
        ...


class BucketDirectory(Protocol):
    """What managing rules checks about a bucket before a rule may use it.

    Implemented by ``crr.adapters.s3_buckets.S3Buckets``; in tests by none: tested over moto."""

    def region_of(self, bucket: str) -> str:
        """Raises UnknownBucketError when the bucket does not exist or cannot be seen."""
        ...

    def aborts_incomplete_uploads(self, bucket: str, region: str) -> bool:
        """Whether a lifecycle rule of the bucket aborts incomplete multipart uploads (for every key)."""
        ...

    def versioning_enabled(self, bucket: str, region: str) -> bool: ...


class NotificationWiring(Protocol):
    """A source bucket's change notifications, as adding and removing a rule edits them.

    Implemented by ``crr.adapters.notifications.S3BucketNotifications``; in tests by none: tested over moto."""

    def subscribe(self, rule: ReplicationRule, queue_arn: str) -> None:
        """Point the source bucket's change notifications at the queue, keeping every other configuration."""
        ...

    def unsubscribe(self, rule: ReplicationRule) -> None:
        """Take away only this rule's notification configurations."""
        ...


class WiringProbe(Protocol):
    """Whether a rule's source changes still reach the stack's queue.

    Implemented by ``crr.adapters.notifications.WiringCheck``; in tests by ``tests.support.fakes.FakeWiringProbe``."""

    def problem(self, rule: ReplicationRule) -> str | None:
        """What is missing for the rule's source changes to reach the stack's queue, or None when
        nothing is. Raises CrrError when the wiring cannot be read."""
        ...
