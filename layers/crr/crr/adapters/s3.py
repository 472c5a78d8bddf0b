"""S3 for the replicator: HEAD the source, server-side copy into the destination region, delete, and
the per-version reads and writes (tags, ACLs, versions, checksums). The copy in parts is in
``crr.adapters.s3_multipart``, the bucket-level lookups in ``crr.adapters.s3_buckets``."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3_buckets import BucketAclModes, DestinationEncryption
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.adapters.s3_multipart import S3MultipartUploads
from crr.adapters.s3_requests import (
    OPTIONAL_HEADERS,
    copy_error,
    copy_source,
    destination_conditions,
    grant_params,
    grants_from_acl,
    object_headers,
)
from crr.errors import DestinationChangedError, SourceChangedError, SourceGoneError, StorageError
from crr.models import AclGrants, CopyRequest, KeyVersion, ObjectState
from crr.part_planning import PartRange

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import TagTypeDef


# Parts copied at once by one invocation (each UploadPartCopy is server side: this bounds connections).
PART_CONCURRENCY = 16
# Checksums S3 can keep for a whole object, in the order verify prefers them (S3's default first).
_FULL_OBJECT_CHECKSUMS = ("CRC64NVME", "SHA256", "SHA1", "CRC32C", "CRC32")


class S3ObjectStore:
    """ObjectStore over boto3. ACL mode and the destination's default encryption are looked up once per
    bucket and cached for ``ownership_ttl``."""

    def __init__(self, clients: ClientFactory, ownership_ttl: float = 300.0) -> None:
        self._clients = clients
        self.acl_modes = BucketAclModes(clients, ownership_ttl)
        self.encryption = DestinationEncryption(clients, ownership_ttl)

    def _s3(self, region: str) -> S3Client:
        return self._clients.client("s3", region)

    def head(self, bucket: str, region: str, key: str) -> ObjectState | None:
        try:
            found = self._s3(region).head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                return None  # includes a current delete marker
            raise storage_error(exc, "HeadObject", bucket, key) from exc
        version = found.get("VersionId")
        # ExpiresString is botocore's own addition to the answer (the raw header), absent from the stubs.
        answer: Mapping[str, Any] = found
        return ObjectState(
            key=key,
            etag=found["ETag"],
            size=int(found["ContentLength"]),
            last_modified=found["LastModified"],
            version_id=version if version not in (None, "null") else None,
            metadata=dict(found.get("Metadata", {})),
            content_type=found.get("ContentType"),
            expires=answer.get("ExpiresString"),
            storage_class=found.get("StorageClass"),
            server_side_encryption=found.get("ServerSideEncryption"),
            kms_key_id=found.get("SSEKMSKeyId"),
            **{field: answer[name] for name, field in OPTIONAL_HEADERS.items() if answer.get(name)},
        )

    def copy(self, request: CopyRequest) -> str:
        return str(self.copy_version(request).etag)

    def copy_version(self, request: CopyRequest) -> KeyVersion:
        state = request.state
        params: dict[str, Any] = {
            **object_headers(request, self.encryption),
            "CopySource": copy_source(request),
            "CopySourceIfMatch": state.etag,
            "MetadataDirective": "REPLACE",
            "TaggingDirective": "COPY",
            **destination_conditions(request),
        }
        try:
            copied = self._s3(request.destination_region).copy_object(**params)
        except ClientError as exc:
            raise copy_error(exc, request, "CopyObject") from exc
        result = copied.get("CopyObjectResult", {})
        return KeyVersion(
            version_id=str(copied.get("VersionId") or "null"),
            last_modified=result.get("LastModified") or datetime.now(UTC),
            is_delete_marker=False,
            etag=str(result.get("ETag", "")),
        )

    def part_sizes(self, bucket: str, region: str, state: ObjectState) -> list[int]:
        """One GetObjectAttributes per 1000 parts where S3 lists them (objects uploaded with a checksum),
        else one HEAD ?partNumber=n per part."""
        listed = self._listed_part_sizes(bucket, region, state)
        if listed is not None:
            return listed
        count = state.parts_count or 1
        version: dict[str, Any] = {"VersionId": state.version_id} if state.version_id else {}

        def size_of(number: int) -> int:
            try:
                # Not pinned by If-Match (S3 compares it with the part's ETag); every part copy is.
                found = self._s3(region).head_object(Bucket=bucket, Key=state.key, PartNumber=number, **version)
            except ClientError as exc:
                if meaning(exc) is S3ErrorMeaning.PRECONDITION_FAILED:
                    raise SourceChangedError(f"{bucket}/{state.key} changed while reading its parts") from exc
                if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                    raise SourceGoneError(f"{bucket}/{state.key} vanished while reading its parts") from exc
                raise storage_error(exc, "HeadObject", bucket, state.key) from exc
            return int(found["ContentLength"])

        with ThreadPoolExecutor(max_workers=min(PART_CONCURRENCY, count)) as pool:
            return list(pool.map(size_of, range(1, count + 1)))

    def _listed_part_sizes(self, bucket: str, region: str, state: ObjectState) -> list[int] | None:
        """The part sizes from GetObjectAttributes, or None when S3 does not list them all (AWS lists
        parts only of objects uploaded with an additional checksum) or the call is not allowed."""
        version: dict[str, Any] = {"VersionId": state.version_id} if state.version_id else {}
        sizes: list[int] = []
        marker = 0
        while True:
            try:
                found = self._s3(region).get_object_attributes(
                    Bucket=bucket,
                    Key=state.key,
                    ObjectAttributes=["ETag", "ObjectParts"],
                    PartNumberMarker=marker,
                    **version,
                )
            except ClientError as exc:
                if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                    raise SourceGoneError(f"{bucket}/{state.key} vanished while reading its parts") from exc
                return None  # not allowed or not supported: the HEADs still work
            parts = found.get("ObjectParts", {})
            sizes.extend(int(part["Size"]) for part in parts.get("Parts", []) if "Size" in part)
            if not parts.get("IsTruncated"):
                break
            marker = int(parts["NextPartNumberMarker"])
        if not sizes or len(sizes) != state.parts_count:
            return None
        if str(found.get("ETag", "")).strip('"') != state.etag.strip('"'):
            raise SourceChangedError(f"{bucket}/{state.key} changed while reading its parts")
        return sizes

    def multipart_copy(self, request: CopyRequest, parts: list[PartRange]) -> str:
        uploads = self.uploads
        upload_id = uploads.create(request)
        try:
            with ThreadPoolExecutor(max_workers=min(PART_CONCURRENCY, len(parts))) as pool:
                done = list(pool.map(lambda part: uploads.copy_part(request, upload_id, part), parts))
            return uploads.complete(request, upload_id, done)
        except BaseException:
            # Never leave an incomplete upload behind (it would be billed until a lifecycle rule ends it);
            # if even the abort fails, the original error is the one worth reporting.
            with suppress(StorageError):
                uploads.abort(request, upload_id)
            raise

    @property
    def uploads(self) -> S3MultipartUploads:
        return S3MultipartUploads(self._clients, self.encryption)

    def delete(self, bucket: str, region: str, key: str, if_etag: str | None = None) -> str | None:
        condition: dict[str, Any] = {"IfMatch": if_etag} if if_etag is not None else {}
        try:
            deleted = self._s3(region).delete_object(Bucket=bucket, Key=key, **condition)
        except ClientError as exc:
            if if_etag is not None and meaning(exc) in {S3ErrorMeaning.PRECONDITION_FAILED, S3ErrorMeaning.MISSING_KEY}:
                raise DestinationChangedError(f"{bucket}/{key} is no longer version {if_etag}") from exc
            raise storage_error(exc, "DeleteObject", bucket, key) from exc
        version = deleted.get("VersionId")
        return str(version) if deleted.get("DeleteMarker") and version not in (None, "null") else None

    def recent_versions(self, bucket: str, region: str, key: str, count: int) -> list[KeyVersion]:
        try:
            # The key sorts before every longer key it prefixes, so its own versions come first.
            listed = self._s3(region).list_object_versions(Bucket=bucket, Prefix=key, MaxKeys=count)
        except ClientError as exc:
            raise storage_error(exc, "ListObjectVersions", bucket, key) from exc
        # Versions and delete markers differ in shape (a marker has no ETag): read both as plain mappings.
        entries: list[tuple[Mapping[str, Any], bool]] = [(entry, False) for entry in listed.get("Versions", [])]
        entries += [(entry, True) for entry in listed.get("DeleteMarkers", [])]
        found = [
            (
                bool(entry.get("IsLatest")),
                KeyVersion(str(entry["VersionId"]), entry["LastModified"], marker, entry.get("ETag")),
            )
            for entry, marker in entries
            if entry["Key"] == key
        ]
        # The response lists versions and markers apart, losing their common order; the current one is
        # flagged IsLatest and the rest follow by time. A version and a marker of the same time keep the
        # version first (a stable sort), so a copy that landed on a marker in the same second is listed
        # above it, as the check for a buried delete (crr.two_way_conflicts) needs.
        found.sort(key=lambda pair: (pair[0], pair[1].last_modified), reverse=True)
        return [version for _, version in found[:count]]

    def delete_version(self, bucket: str, region: str, key: str, version_id: str) -> None:
        try:
            self._s3(region).delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        except ClientError as exc:
            raise storage_error(exc, "DeleteObject", bucket, key) from exc

    def checksum(self, bucket: str, region: str, key: str) -> str | None:
        """The current version's full-object checksum as ``ALGORITHM:value`` (HEAD with ChecksumMode), or
        None when it has none or only a composite one (per part: it depends on the part layout)."""
        try:
            found = self._s3(region).head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                return None
            raise storage_error(exc, "HeadObject", bucket, key) from exc
        if found.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
            return None
        checksums: Mapping[str, Any] = found  # looked up by a computed name, which a TypedDict cannot check
        for algorithm in _FULL_OBJECT_CHECKSUMS:
            if checksums.get(f"Checksum{algorithm}"):
                return f"{algorithm}:{checksums[f'Checksum{algorithm}']}"
        return None

    def tags(self, bucket: str, region: str, key: str, version_id: str | None) -> dict[str, str]:
        version: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        try:
            found = self._s3(region).get_object_tagging(Bucket=bucket, Key=key, **version)
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                raise SourceGoneError(f"{bucket}/{key} vanished while reading its tags") from exc
            raise storage_error(exc, "GetObjectTagging", bucket, key) from exc
        return {tag["Key"]: tag["Value"] for tag in found.get("TagSet", [])}

    def put_tags(self, bucket: str, region: str, key: str, version_id: str | None, tags: dict[str, str]) -> None:
        version: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        try:
            if tags:
                tag_set: list[TagTypeDef] = [{"Key": name, "Value": value} for name, value in sorted(tags.items())]
                self._s3(region).put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set}, **version)
            else:
                self._s3(region).delete_object_tagging(Bucket=bucket, Key=key, **version)
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                raise DestinationChangedError(f"{bucket}/{key} changed while its tags were set") from exc
            raise storage_error(exc, "PutObjectTagging", bucket, key) from exc

    def put_acl(self, bucket: str, region: str, key: str, version_id: str | None, grants: AclGrants) -> None:
        version: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        try:
            self._s3(region).put_object_acl(Bucket=bucket, Key=key, **grant_params(grants), **version)
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
                raise DestinationChangedError(f"{bucket}/{key} changed while its ACL was set") from exc
            raise storage_error(exc, "PutObjectAcl", bucket, key) from exc

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
        acls = self.acl_modes
        if not (acls.acls_enabled(bucket, region) and acls.acls_enabled(destination_bucket, destination_region)):
            return None
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            acl = self._s3(region).get_object_acl(**params)
        except ClientError as exc:
            raise storage_error(exc, "GetObjectAcl", bucket, key) from exc
        return grants_from_acl(acl.get("Grants", []))
