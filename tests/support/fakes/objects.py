"""In-memory fakes of the S3 ports (``crr.ports.objects``): ``FakeS3`` (ObjectStore, Inspector),
``FakePageListing`` (PageListing), ``FakeFastCopier`` (FastCopier), ``FakeListing`` (Listing),
``FakeInventoryFiles`` (InventoryFiles) and ``FakeWiringProbe`` (WiringProbe).

``FakeS3`` keeps S3's semantics that replication depends on: versions, CopySource pinning by VersionId and
If-Match, TaggingDirective=COPY, delete markers (tests/integration/seaweedfs/test_object_store_contract.py
checks them against a real S3 server). The listings list like ListObjectsV2 (S3's key order,
``StartAfter``, ``MaxKeys``); ``FakeFastCopier`` copies like CopyObject with ``MetadataDirective=COPY`` and
``CopySourceIfMatch``, with hooks between its read of the source and its write of the destination, where
S3 lets other writers in. Every request of ``FakeS3``, ``FakePageListing`` and ``FakeFastCopier`` passes
through ``yield_point`` so a test can interleave concurrent workers deterministically (see
``tests/support/interleave.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from crr.errors import (
    BucketMissingError,
    DestinationChangedError,
    InventoryAccessDeniedError,
    InventoryFileMissingError,
    SourceChangedError,
    SourceGoneError,
)
from crr.models import AclGrants, CopyRequest, KeyVersion, ListedObject, ListingPage, ObjectState
from crr.part_planning import PartRange
from crr.rules import ReplicationRule


def _no_yield() -> None:
    return None


@dataclass(frozen=True)
class StoredVersion:
    version_id: str
    body: bytes
    etag: str
    metadata: dict[str, str]
    tags: dict[str, str]
    content_type: str
    last_modified: datetime
    is_delete_marker: bool = False


@dataclass
class FakeBucket:
    region: str
    versioned: bool = False
    acls_enabled: bool = False
    # SSE-KMS by default: every write gets an ETag of its own, not the MD5 of its bytes (as on AWS).
    sse_kms: bool = False
    history: dict[str, list[StoredVersion]] = field(default_factory=dict)
    acls: dict[str, AclGrants] = field(default_factory=dict)

    def current(self, key: str) -> StoredVersion | None:
        versions = self.history.get(key)
        if not versions or versions[-1].is_delete_marker:
            return None
        return versions[-1]


class FakeS3:
    """Fake of ``crr.ports.objects.ObjectStore`` and ``Inspector``: buckets in any region; counts requests by
    operation.

    ``clock`` stamps every write's LastModified (default: one millisecond later each time);
    ``on_change(bucket, key)`` is told of every write and delete, as S3 notifications would be.
    """

    def __init__(
        self, yield_point: Callable[[], None] = _no_yield, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.buckets: dict[str, FakeBucket] = {}
        self.calls: dict[str, int] = {}
        self.yield_point = yield_point
        self._versions = itertools.count(1)
        self._ticks = itertools.count(1)
        self._salts = itertools.count(1)
        self._clock = clock
        self.on_change: Callable[[str, str], None] | None = None
        # Told of tag and ACL changes (s3:ObjectTagging:* / s3:ObjectAcl:Put); None: on_change is.
        self.on_attributes: Callable[[str, str], None] | None = None
        self._lock = threading.RLock()

    def create_bucket(
        self, name: str, region: str, *, versioned: bool = False, acls: bool = False, sse_kms: bool = False
    ) -> None:
        self.buckets[name] = FakeBucket(region=region, versioned=versioned, acls_enabled=acls, sse_kms=sse_kms)

    def _etag(self, target: FakeBucket, body: bytes) -> str:
        if target.sse_kms:
            return f'"{hashlib.md5(body + str(next(self._salts)).encode()).hexdigest()}"'
        return f'"{hashlib.md5(body).hexdigest()}"'

    def _bucket(self, name: str, operation: str) -> FakeBucket:
        if name not in self.buckets:
            raise BucketMissingError(operation, name, None, "NoSuchBucket", "The specified bucket does not exist")
        return self.buckets[name]

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1

    def _now(self) -> datetime:
        if self._clock is not None:
            return self._clock()
        return datetime(2026, 11, 25, tzinfo=UTC) + timedelta(milliseconds=next(self._ticks))

    def _version_id(self, target: FakeBucket) -> str:
        return f"v{next(self._versions)}" if target.versioned else "null"

    # ---- what users do ------------------------------------------------------------------------

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        metadata: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        content_type: str = "binary/octet-stream",
    ) -> StoredVersion:
        with self._lock:
            target = self._bucket(bucket, "PutObject")
            version = StoredVersion(
                version_id=self._version_id(target),
                body=body,
                etag=self._etag(target, body),
                metadata=dict(metadata or {}),
                tags=dict(tags or {}),
                content_type=content_type,
                last_modified=self._now(),
            )
            self._store(target, key, version)
            self._changed(bucket, key)
            return version

    def remove(self, bucket: str, key: str) -> str | None:
        """A user's delete: a delete marker on a versioned bucket (returns its version id)."""
        with self._lock:
            target = self._bucket(bucket, "DeleteObject")
            if target.versioned:
                marker = StoredVersion(self._version_id(target), b"", "", {}, {}, "", self._now(), True)
                target.history.setdefault(key, []).append(marker)
                self._changed(bucket, key)
                return marker.version_id
            target.history.pop(key, None)
            self._changed(bucket, key)
            return None

    def copy_within(
        self,
        bucket: str,
        source_key: str,
        key: str,
        *,
        metadata: dict[str, str] | None = None,
        source_version: str | None = None,
    ) -> StoredVersion:
        """A user's server-side copy inside ``bucket`` (``aws s3 cp``/``mv``, ``rclone touch``, restoring a
        version): bytes, tags and content type come along; metadata too (MetadataDirective COPY) unless
        ``metadata`` replaces it. The copy is a new version with its own Last-Modified."""
        with self._lock:
            target = self._bucket(bucket, "CopyObject")
            versions = target.history.get(source_key, [])
            read = (
                next(v for v in versions if v.version_id == source_version)
                if source_version
                else target.current(source_key)
            )
            assert read is not None, f"{bucket}/{source_key} has nothing to copy"
            assert not read.is_delete_marker, f"{bucket}/{source_key} is a delete marker"
            copied = replace(
                read,
                metadata=dict(read.metadata if metadata is None else metadata),
                version_id=self._version_id(target),
                last_modified=self._now(),
            )
            self._store(target, key, copied)
            self._changed(bucket, key)
            return copied

    def set_tags(self, bucket: str, key: str, tags: dict[str, str]) -> None:
        """A user's PutObjectTagging on the current version: a new tag set, no new version."""
        with self._lock:
            target = self._bucket(bucket, "PutObjectTagging")
            current = target.current(key)
            assert current is not None
            target.history[key][-1] = replace(current, tags=dict(tags))
            notify = self.on_attributes or self.on_change
            if notify is not None:
                notify(bucket, key)

    def _changed(self, bucket: str, key: str) -> None:
        if self.on_change is not None:
            self.on_change(bucket, key)

    @staticmethod
    def _store(target: FakeBucket, key: str, version: StoredVersion) -> None:
        if target.versioned:
            target.history.setdefault(key, []).append(version)
        else:
            target.history[key] = [version]

    def current(self, bucket: str, key: str) -> StoredVersion | None:
        with self._lock:
            return self.buckets[bucket].current(key)

    def keys(self, bucket: str) -> set[str]:
        with self._lock:
            found = self.buckets[bucket]
            return {key for key in found.history if found.current(key) is not None}

    # ---- ObjectStore ------------------------------------------------------------------------

    def head(self, bucket: str, region: str, key: str) -> ObjectState | None:
        self.yield_point()
        with self._lock:
            self._count("HeadObject")
            found = self._bucket(bucket, "HeadObject").current(key)
            if found is None:
                return None
            return ObjectState(
                key=key,
                etag=found.etag,
                size=len(found.body),
                last_modified=found.last_modified,
                version_id=None if found.version_id == "null" else found.version_id,
                metadata=dict(found.metadata),
                content_type=found.content_type,
            )

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
        with self._lock:
            if not (self.buckets[bucket].acls_enabled and self.buckets[destination_bucket].acls_enabled):
                return None
            self._count("GetObjectAcl")
            return self.buckets[bucket].acls.get(key, AclGrants(full_control='id="owner"'))

    def copy(self, request: CopyRequest) -> str:
        return str(self.copy_version(request).etag)

    def copy_version(self, request: CopyRequest) -> KeyVersion:
        # A server-side copy reads the source and writes the destination at different moments;
        # the yield between them lets another worker's copy land in between, as in S3.
        self.yield_point()
        with self._lock:
            self._count("CopyObject")
            source = self._bucket(request.source_bucket, "CopyObject")
            versions = source.history.get(request.state.key, [])
            if request.state.version_id:
                pinned = [v for v in versions if v.version_id == request.state.version_id and not v.is_delete_marker]
                if not pinned:
                    raise SourceGoneError("no such version")
                read = pinned[0]
            else:
                read = source.current(request.state.key)  # type: ignore[assignment]
                if read is None:
                    raise SourceGoneError("NoSuchKey")
            if read.etag != request.state.etag:
                raise SourceChangedError("PreconditionFailed")
            destination = self._bucket(request.destination_bucket, "CopyObject")
        self.yield_point()
        with self._lock:
            present = destination.current(request.state.key)
            if request.destination_absent and present is not None:
                raise DestinationChangedError("PreconditionFailed: If-None-Match")
            if request.destination_etag is not None and (present is None or present.etag != request.destination_etag):
                raise DestinationChangedError("PreconditionFailed: If-Match")
            written = replace(
                read,
                etag=self._etag(destination, read.body) if destination.sse_kms else read.etag,
                metadata=dict(request.metadata),
                content_type=request.state.content_type or "",
                version_id=self._version_id(destination),
                last_modified=self._now(),
            )
            self._store(destination, request.state.key, written)
            self._changed(request.destination_bucket, request.state.key)
            if request.grants is not None:
                destination.acls[request.state.key] = request.grants
            return KeyVersion(written.version_id, written.last_modified, False, written.etag)

    def part_sizes(self, bucket: str, region: str, state: ObjectState) -> list[int]:
        self._count("HeadObject")
        return [state.size]

    def multipart_copy(self, request: CopyRequest, parts: list[PartRange]) -> str:
        # Same outcome as a copy, as S3 gives; the parts must cover the object exactly.
        assert sum(part.size for part in parts) == request.state.size
        self._count("MultipartCopy")
        return self.copy(request)

    def delete(self, bucket: str, region: str, key: str, if_etag: str | None = None) -> str | None:
        self.yield_point()
        with self._lock:
            self._count("DeleteObject")
            present = self._bucket(bucket, "DeleteObject").current(key)
            if if_etag is not None and (present is None or present.etag != if_etag):
                raise DestinationChangedError("PreconditionFailed: If-Match")
            return self.remove(bucket, key)

    def recent_versions(self, bucket: str, region: str, key: str, count: int) -> list[KeyVersion]:
        self.yield_point()
        with self._lock:
            self._count("ListObjectVersions")
            versions = self._bucket(bucket, "ListObjectVersions").history.get(key, [])
            return [
                KeyVersion(v.version_id, v.last_modified, v.is_delete_marker, None if v.is_delete_marker else v.etag)
                for v in reversed(versions[-count:])
            ]

    def _version(self, bucket: str, key: str, version_id: str | None, operation: str) -> StoredVersion | None:
        if version_id is None:
            return self._bucket(bucket, operation).current(key)
        found = self._bucket(bucket, operation).history.get(key, [])
        return next((v for v in found if v.version_id == version_id and not v.is_delete_marker), None)

    def checksum(self, bucket: str, region: str, key: str) -> str | None:
        """A full-object checksum of the bytes, as S3 keeps for new objects (here: SHA-256)."""
        self.yield_point()
        with self._lock:
            self._count("HeadObject")
            found = self._bucket(bucket, "HeadObject").current(key)
            return None if found is None else f"SHA256:{hashlib.sha256(found.body).hexdigest()}"

    def tags(self, bucket: str, region: str, key: str, version_id: str | None) -> dict[str, str]:
        self.yield_point()
        with self._lock:
            self._count("GetObjectTagging")
            found = self._version(bucket, key, version_id, "GetObjectTagging")
            if found is None:
                raise SourceGoneError("NoSuchKey")
            return dict(found.tags)

    def put_tags(self, bucket: str, region: str, key: str, version_id: str | None, tags: dict[str, str]) -> None:
        self.yield_point()
        with self._lock:
            self._count("PutObjectTagging")
            found = self._version(bucket, key, version_id, "PutObjectTagging")
            if found is None:
                raise DestinationChangedError("NoSuchVersion")
            history = self.buckets[bucket].history[key]
            history[history.index(found)] = replace(found, tags=dict(tags))
            notify = self.on_attributes or self.on_change
            if notify is not None:
                notify(bucket, key)

    def put_acl(self, bucket: str, region: str, key: str, version_id: str | None, grants: AclGrants) -> None:
        self.yield_point()
        with self._lock:
            self._count("PutObjectAcl")
            if self._version(bucket, key, version_id, "PutObjectAcl") is None:
                raise DestinationChangedError("NoSuchVersion")
            self.buckets[bucket].acls[key] = grants

    def delete_version(self, bucket: str, region: str, key: str, version_id: str) -> None:
        self.yield_point()
        with self._lock:
            self._count("DeleteObjectVersion")
            history = self._bucket(bucket, "DeleteObject").history
            history[key] = [v for v in history.get(key, []) if v.version_id != version_id]
            self._changed(bucket, key)


def assert_replica_equals_source(s3: FakeS3, source: str, destination: str, keys: Iterable[str]) -> None:
    """``destination`` holds exactly ``source``'s current state of ``keys``: present or not, bytes, user
    metadata (crr's marker aside), tags and Content-Type."""
    for key in keys:
        original, replica = s3.current(source, key), s3.current(destination, key)
        if original is None:
            assert replica is None, f"{key!r} was deleted at the source but survives in the replica"
            continue
        assert replica is not None, f"{key!r} is missing from the replica"
        assert replica.body == original.body, f"{key!r}: replica holds {replica.body!r}, source {original.body!r}"
        assert {k: v for k, v in replica.metadata.items() if not k.startswith("crr-")} == original.metadata
        assert replica.tags == original.tags
        assert replica.content_type == original.content_type


def etag_of(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def _utf8(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


class FakePageListing:
    """Fake of ``crr.ports.objects.PageListing`` over a FakeS3's current objects; logs every request in
    ``requests``."""

    def __init__(self, s3: FakeS3, yield_point: Callable[[], None] = _no_yield) -> None:
        self.s3 = s3
        self.yield_point = yield_point
        self.requests: list[tuple[str, str, str | None, int]] = []  # bucket, prefix, start_after, max_keys
        self._lock = threading.Lock()

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        self.yield_point()
        with self._lock:
            self.requests.append((bucket, prefix, start_after, max_keys))
        if bucket not in self.s3.buckets:
            raise BucketMissingError(
                "ListObjectsV2", bucket, None, "NoSuchBucket", "The specified bucket does not exist"
            )
        floor = _utf8(start_after) if start_after is not None else b""
        keys = sorted((key for key in self.s3.keys(bucket) if key.startswith(prefix) and _utf8(key) > floor), key=_utf8)
        entries = []
        for key in keys[:max_keys]:
            found = self.s3.current(bucket, key)
            if found is not None:  # deleted while we listed
                entries.append(
                    ListedObject(
                        key=key, size=len(found.body), etag=found.etag.strip('"'), last_modified=found.last_modified
                    )
                )
        return ListingPage(entries=entries, truncated=len(keys) > max_keys)

    def count(self, bucket: str) -> int:
        return sum(1 for request in self.requests if request[0] == bucket)


Hook = Callable[[str], None]


@dataclass
class FakeFastCopier:
    """Fake of ``crr.ports.objects.FastCopier`` over a FakeS3. ``before_read`` and ``before_write`` hooks run
    once per key (by key); ``failures`` maps a key to the error its copy raises."""

    s3: FakeS3
    yield_point: Callable[[], None] = _no_yield
    before_read: dict[str, Hook] = field(default_factory=dict)
    before_write: dict[str, Hook] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    calls: int = 0
    # Yields between reading the source and writing the copy: a copy takes as long as several requests.
    copy_yields: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        with self._lock:
            self.calls += 1
        self.yield_point()
        if (hook := self.before_read.pop(entry.key, None)) is not None:
            hook(entry.key)
        if entry.key in self.failures:
            raise self.failures[entry.key]
        if rule.destination_bucket not in self.s3.buckets:
            raise BucketMissingError("CopyObject", rule.destination_bucket, entry.key, "NoSuchBucket", "no bucket")
        source = self.s3.current(rule.source_bucket, entry.key)
        if source is None:
            raise SourceGoneError("NoSuchKey")
        if source.etag.strip('"') != entry.etag:
            raise SourceChangedError("PreconditionFailed")
        # S3 read the source when the request started; it writes the destination when it ends.
        for _ in range(self.copy_yields):
            self.yield_point()
        if (hook := self.before_write.pop(entry.key, None)) is not None:
            hook(entry.key)
        written = self.s3.put(
            rule.destination_bucket,
            entry.key,
            source.body,
            metadata=source.metadata,
            tags=source.tags,
            content_type=source.content_type,
        )
        with self._lock:
            self.copied.append(entry.key)
        return written.etag


class FakeListing:
    """Fake of ``crr.ports.objects.Listing``: buckets listed like ListObjectsV2, by prefix, sorted by the
    key's UTF-8 bytes, ``page_size`` objects per page. ``fetches`` logs each page as the consumer pulls it.

    Its buckets are its own ``ListedObject``s (``put``, ``remove``), or, given ``s3``, that FakeS3's current
    objects."""

    def __init__(self, page_size: int = 1000, s3: FakeS3 | None = None) -> None:
        self.page_size = page_size
        self.s3 = s3
        self.buckets: dict[str, dict[str, ListedObject]] = {}
        self.fetches: list[tuple[str, str]] = []  # (bucket, prefix) per page served

    def put(self, bucket: str, key: str, body: bytes = b"x", *, etag: str | None = None) -> None:
        listed = ListedObject(key=key, size=len(body), etag=etag if etag is not None else etag_of(body))
        self.buckets.setdefault(bucket, {})[key] = listed

    def remove(self, bucket: str, key: str) -> None:
        self.buckets.get(bucket, {}).pop(key, None)

    def _objects(self, bucket: str) -> dict[str, ListedObject]:
        if self.s3 is None:
            return self.buckets.get(bucket, {})
        found = {}
        for key in self.s3.keys(bucket):
            version = self.s3.current(bucket, key)
            if version is not None:
                found[key] = ListedObject(key, len(version.body), version.etag.strip('"'))
        return found

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        objects = self._objects(bucket)
        keys = sorted((key for key in objects if key.startswith(prefix)), key=str.encode)
        for start in range(0, len(keys), self.page_size):
            self.fetches.append((bucket, prefix))
            yield [objects[key] for key in keys[start : start + self.page_size]]


class FakeInventoryFiles:
    """Fake of ``crr.ports.objects.InventoryFiles`` over a FakeS3's current objects (put the report there
    with ``tests.support.inventory``). ``requests`` logs each GetObject (bucket, key); ``chunks_read`` counts
    the chunks streams handed out, so a test sees an early stop download no more. ``denied`` keys answer
    as S3 does without the read permission."""

    def __init__(self, s3: FakeS3, chunk_bytes: int = 64) -> None:
        self.s3 = s3
        self.chunk_bytes = chunk_bytes
        self.denied: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.chunks_read = 0

    def _body(self, bucket: str, key: str) -> bytes:
        self.requests.append((bucket, key))
        if key in self.denied:
            raise InventoryAccessDeniedError(bucket, key)
        if bucket not in self.s3.buckets:
            raise InventoryFileMissingError(bucket, key, "NoSuchBucket")
        found = self.s3.current(bucket, key)
        if found is None:
            raise InventoryFileMissingError(bucket, key)
        return found.body

    def read(self, bucket: str, region: str, key: str) -> bytes:
        return self._body(bucket, key)

    def stream(self, bucket: str, region: str, key: str) -> Iterator[bytes]:
        body = self._body(bucket, key)
        for start in range(0, len(body), self.chunk_bytes):
            self.chunks_read += 1
            yield body[start : start + self.chunk_bytes]


class FakeWiringProbe:
    """Fake of ``crr.ports.objects.WiringProbe``: wiring problems by rule id; a rule id mapped to an exception
    raises it."""

    def __init__(self, **problems: str | Exception) -> None:
        self.problems = problems

    def problem(self, rule: ReplicationRule) -> str | None:
        found = self.problems.get(rule.rule_id)
        if isinstance(found, Exception):
            raise found
        return found
