"""S3 for the replicator: HEAD the source, server-side copy into the destination region, delete."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.errors import (
    DestinationChangedError,
    SourceChangedError,
    SourceGoneError,
    StorageError,
    UnknownBucketError,
)
from crr.markers import refreshed
from crr.models import KMS_ENCRYPTIONS, AclGrants, CopyRequest, KeyVersion, ObjectState, UploadedPart
from crr.observability import logger
from crr.part_planning import PartRange

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import (
        CompletedPartTypeDef,
        CopySourceTypeDef,
        GrantTypeDef,
        TagTypeDef,
    )


# Parts copied at once by one invocation (each UploadPartCopy is server side: this bounds connections).
PART_CONCURRENCY = 16
# Checksums S3 can keep for a whole object, in the order verify prefers them (S3's default first).
_FULL_OBJECT_CHECKSUMS = ("CRC64NVME", "SHA256", "SHA1", "CRC32C", "CRC32")
_PERMISSIONS = {"FULL_CONTROL": "full_control", "READ": "read", "READ_ACP": "read_acp", "WRITE_ACP": "write_acp"}
_OPTIONAL_HEADERS = {
    "CacheControl": "cache_control",
    "ContentDisposition": "content_disposition",
    "ContentEncoding": "content_encoding",
    "ContentLanguage": "content_language",
}


class DestinationEncryption:
    """The request headers that state a destination bucket's default encryption, cached per bucket.

    A replica that is not re-encrypted with a rule's replica key gets the destination's default
    encryption. Sending that default explicitly changes nothing S3 stores, but a bucket policy that
    requires SSE-KMS reads the request's headers, not the default, and refuses a write without them.
    """

    def __init__(self, clients: ClientFactory, ttl: float = 300.0) -> None:
        self._clients = clients
        self._ttl = ttl
        self._cached: dict[str, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()

    def headers(self, bucket: str, region: str) -> dict[str, Any]:
        """CopyObject / CreateMultipartUpload parameters for the bucket's default ({} when unknown).

        Raises StorageError subclasses when S3 cannot say (other than "none configured" or "denied")."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached.get(bucket)
        if cached is not None and cached[1] > now:
            return dict(cached[0])
        found: Mapping[str, Any]
        try:
            found = self._clients.client("s3", region).get_bucket_encryption(Bucket=bucket)
        except ClientError as exc:
            code = error_code(exc)
            if meaning(exc) is S3ErrorMeaning.NOT_CONFIGURED:
                found = {}
            elif meaning(exc) is S3ErrorMeaning.ACCESS_DENIED:
                # Without s3:GetEncryptionConfiguration the default still applies; only a policy that
                # requires the headers would then refuse the replica, with its own AccessDenied.
                logger.warning(
                    "cannot read the destination's default encryption; writing replicas without stating it",
                    extra={"bucket": bucket, "error_code": code},
                )
                found = {}
            else:
                raise storage_error(exc, "GetBucketEncryption", bucket, None) from exc
        headers = _default_encryption_headers(found)
        with self._lock:
            self._cached[bucket] = (headers, now + self._ttl)
        return dict(headers)


def _default_encryption_headers(found: Mapping[str, Any]) -> dict[str, Any]:
    rules = found.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    if not rules:
        return {}
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
    algorithm = default.get("SSEAlgorithm")
    if not algorithm:
        return {}
    headers: dict[str, Any] = {"ServerSideEncryption": algorithm}
    if algorithm in KMS_ENCRYPTIONS and default.get("KMSMasterKeyID"):
        headers["SSEKMSKeyId"] = default["KMSMasterKeyID"]
    if algorithm in KMS_ENCRYPTIONS and rules[0].get("BucketKeyEnabled"):
        headers["BucketKeyEnabled"] = True
    return headers


class S3ObjectStore:
    """ObjectStore over boto3. ACL mode and the destination's default encryption are looked up once per
    bucket and cached for ``ownership_ttl``."""

    def __init__(self, clients: ClientFactory, ownership_ttl: float = 300.0) -> None:
        self._clients = clients
        self._ownership_ttl = ownership_ttl
        self._acls_enabled: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()
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
            **{field: answer[name] for name, field in _OPTIONAL_HEADERS.items() if answer.get(name)},
        )

    def copy(self, request: CopyRequest) -> str:
        return str(self.copy_version(request).etag)

    def copy_version(self, request: CopyRequest) -> KeyVersion:
        state = request.state
        params: dict[str, Any] = {
            **_object_headers(request, self.encryption),
            "CopySource": _copy_source(request),
            "CopySourceIfMatch": state.etag,
            "MetadataDirective": "REPLACE",
            "TaggingDirective": "COPY",
            **_destination_conditions(request),
        }
        try:
            copied = self._s3(request.destination_region).copy_object(**params)
        except ClientError as exc:
            raise _copy_error(exc, request, "CopyObject") from exc
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
        if not (
            self._acls_enabled_on(bucket, region) and self._acls_enabled_on(destination_bucket, destination_region)
        ):
            return None
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            params["VersionId"] = version_id
        try:
            acl = self._s3(region).get_object_acl(**params)
        except ClientError as exc:
            raise storage_error(exc, "GetObjectAcl", bucket, key) from exc
        return _grants_from_acl(acl.get("Grants", []))

    def _acls_enabled_on(self, bucket: str, region: str) -> bool:
        """False when Object Ownership is BucketOwnerEnforced (ACLs disabled: the default since 2023)."""
        now = time.monotonic()
        with self._lock:
            cached = self._acls_enabled.get(bucket)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            controls = self._s3(region).get_bucket_ownership_controls(Bucket=bucket)
            rules = controls.get("OwnershipControls", {}).get("Rules", [])
            enabled = not any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules)
        except ClientError as exc:
            if meaning(exc) is not S3ErrorMeaning.NOT_CONFIGURED:
                raise storage_error(exc, "GetBucketOwnershipControls", bucket, None) from exc
            enabled = True  # buckets without ownership controls predate them and use ACLs
        with self._lock:
            self._acls_enabled[bucket] = (enabled, now + self._ownership_ttl)
        return enabled


class S3MultipartUploads:
    """MultipartUploads over boto3: the steps of a copy in parts, each one request (ListParts: per 1000)."""

    def __init__(self, clients: ClientFactory, encryption: DestinationEncryption | None = None) -> None:
        self._clients = clients
        self._encryption = encryption or DestinationEncryption(clients)

    def _s3(self, region: str) -> S3Client:
        return self._clients.client("s3", region)

    def create(self, request: CopyRequest) -> str:
        create = _object_headers(request, self._encryption)
        # S3 stamps a copy in parts with the time its upload starts, which may be long after the live
        # path built the request: the marker's write time must be that one (crr.markers).
        create["Metadata"] = refreshed(request.metadata, request.state, datetime.now(UTC))
        tags = self._source_tags(request)
        if tags:
            create["Tagging"] = urlencode(tags)
        try:
            return str(self._s3(request.destination_region).create_multipart_upload(**create)["UploadId"])
        except ClientError as exc:
            raise _copy_error(exc, request, "CreateMultipartUpload") from exc

    def _source_tags(self, request: CopyRequest) -> dict[str, str]:
        """Multipart uploads cannot copy tags (no TaggingDirective), so they are read and set explicitly."""
        version: dict[str, Any] = {"VersionId": request.state.version_id} if request.state.version_id else {}
        try:
            found = self._s3(request.source_region).get_object_tagging(
                Bucket=request.source_bucket, Key=request.state.key, **version
            )
        except ClientError as exc:
            raise storage_error(exc, "GetObjectTagging", request.source_bucket, request.state.key) from exc
        return {tag["Key"]: tag["Value"] for tag in found.get("TagSet", [])}

    def copy_part(self, request: CopyRequest, upload_id: str, part: PartRange) -> UploadedPart:
        try:
            copied = self._s3(request.destination_region).upload_part_copy(
                **_upload(request, upload_id),
                PartNumber=part.number,
                CopySource=_copy_source(request),
                CopySourceRange=part.header,
                CopySourceIfMatch=request.state.etag,
            )
        except ClientError as exc:
            raise _copy_error(exc, request, "UploadPartCopy") from exc
        return UploadedPart(part.number, part.size, str(copied["CopyPartResult"]["ETag"]))

    def parts(self, request: CopyRequest, upload_id: str, first: int, last: int) -> dict[int, UploadedPart]:
        # ListParts from PartNumberMarker, one request per 1000 parts. Not the paginator: it documents its
        # starting point as a PaginationConfig token, not as this parameter (mypy_boto3_s3 refuses it).
        s3 = self._s3(request.destination_region)
        found: dict[int, UploadedPart] = {}
        marker = first - 1
        try:
            while True:
                page = s3.list_parts(**_upload(request, upload_id), PartNumberMarker=marker)
                for item in page.get("Parts", []):
                    number = int(item["PartNumber"])
                    if number > last:
                        return found
                    found[number] = UploadedPart(number, int(item["Size"]), str(item["ETag"]))
                if not page.get("IsTruncated") or "NextPartNumberMarker" not in page:
                    return found
                marker = int(page["NextPartNumberMarker"])
        except ClientError as exc:
            raise storage_error(exc, "ListParts", request.destination_bucket, request.state.key) from exc

    def complete(self, request: CopyRequest, upload_id: str, parts: list[UploadedPart]) -> str:
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": part.number, "ETag": part.etag} for part in sorted(parts, key=lambda p: p.number)
        ]
        try:
            completed = self._s3(request.destination_region).complete_multipart_upload(
                **_upload(request, upload_id), MultipartUpload={"Parts": listed}, **_destination_conditions(request)
            )
        except ClientError as exc:
            raise _copy_error(exc, request, "CompleteMultipartUpload") from exc
        return str(completed.get("ETag", ""))

    def abort(self, request: CopyRequest, upload_id: str) -> None:
        try:
            self._s3(request.destination_region).abort_multipart_upload(**_upload(request, upload_id))
        except ClientError as exc:
            if meaning(exc) is not S3ErrorMeaning.MISSING_UPLOAD:
                raise storage_error(exc, "AbortMultipartUpload", request.destination_bucket, request.state.key) from exc


def _upload(request: CopyRequest, upload_id: str) -> dict[str, Any]:
    return {"Bucket": request.destination_bucket, "Key": request.state.key, "UploadId": upload_id}


def _copy_source(request: CopyRequest) -> CopySourceTypeDef:
    source: CopySourceTypeDef = {"Bucket": request.source_bucket, "Key": request.state.key}
    if request.state.version_id:
        source["VersionId"] = request.state.version_id
    return source


def _object_headers(request: CopyRequest, encryption: DestinationEncryption) -> dict[str, Any]:
    """What a replica is written with, whether by CopyObject (REPLACE) or CreateMultipartUpload.

    Encryption: the rule's replica key for a KMS-encrypted source (same algorithm, SSE-KMS or DSSE-KMS),
    else the destination's own default, stated (never the source's SSE-S3: on AWS every object reports
    it, and sending it would override a destination's SSE-KMS default)."""
    state = request.state
    params: dict[str, Any] = {
        "Bucket": request.destination_bucket,
        "Key": state.key,
        "Metadata": request.metadata,
        "ContentType": state.content_type or "binary/octet-stream",
    }
    params.update({name: getattr(state, field) for name, field in _OPTIONAL_HEADERS.items() if getattr(state, field)})
    expires = _http_date(state.expires, request)
    if expires is not None:
        params["Expires"] = expires
    if request.storage_class and request.storage_class != "STANDARD":
        params["StorageClass"] = request.storage_class
    if request.replica_kms_key_arn is not None:
        params["ServerSideEncryption"] = request.replica_encryption or "aws:kms"
        params["SSEKMSKeyId"] = request.replica_kms_key_arn
    else:
        params.update(encryption.headers(request.destination_bucket, request.destination_region))
    if request.grants is not None:
        params.update(grant_params(request.grants))
    return params


def _http_date(value: str | None, request: CopyRequest) -> str | None:
    """The source's Expires when it is an HTTP date, the only form the SDK can send; else None.

    S3 stores any Expires string, but botocore refuses to serialise one that is not a date (a parameter
    error that no retry fixes). HTTP caches treat an invalid Expires as already expired, as they treat
    a replica without one after its heuristic freshness: the replica is written without it, and says so.
    """
    if not value:
        return None
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        logger.warning(
            "source Expires is not an HTTP date; replica written without it",
            extra={"bucket": request.source_bucket, "key": request.state.key, "expires": value[:100]},
        )
        return None
    return value


def _destination_conditions(request: CopyRequest) -> dict[str, Any]:
    if request.destination_etag is not None:
        return {"IfMatch": request.destination_etag}
    if request.destination_absent:
        return {"IfNoneMatch": "*"}
    return {}


def _copy_error(exc: ClientError, request: CopyRequest, operation: str) -> Exception:
    if meaning(exc) is S3ErrorMeaning.PRECONDITION_FAILED:
        condition = str(exc.response.get("Error", {}).get("Condition", "")).lower()
        destination_conditional = request.destination_etag is not None or request.destination_absent
        if destination_conditional and "copy-source" not in condition:
            return DestinationChangedError(f"{request.destination_bucket}/{request.state.key} changed since read")
        return SourceChangedError(f"{request.source_bucket}/{request.state.key} changed since HEAD")
    if meaning(exc) is S3ErrorMeaning.MISSING_KEY:
        return SourceGoneError(f"{request.source_bucket}/{request.state.key} vanished since HEAD")
    return storage_error(exc, operation, request.destination_bucket, request.state.key)


def grant_params(grants: AclGrants) -> dict[str, Any]:
    """The Grant* request parameters of CopyObject / CreateMultipartUpload for ``grants``."""
    names = {
        "full_control": "GrantFullControl",
        "read": "GrantRead",
        "read_acp": "GrantReadACP",
        "write_acp": "GrantWriteACP",
    }
    return {names[field]: value for field, value in vars(grants).items() if value}


def _grants_from_acl(grants: Sequence[GrantTypeDef]) -> AclGrants:
    by_permission: dict[str, list[str]] = {}
    for grant in grants:
        field = _PERMISSIONS.get(grant.get("Permission", ""))
        grantee = grant.get("Grantee", {})
        if field is None:
            continue  # WRITE on objects is not a thing S3 honours; nothing else to carry
        if grantee.get("Type") == "CanonicalUser":
            by_permission.setdefault(field, []).append(f'id="{grantee["ID"]}"')
        elif grantee.get("Type") == "Group":
            by_permission.setdefault(field, []).append(f'uri="{grantee["URI"]}"')
        elif grantee.get("Type") == "AmazonCustomerByEmail":
            by_permission.setdefault(field, []).append(f'emailAddress="{grantee["EmailAddress"]}"')
    return AclGrants(**{field: ", ".join(values) for field, values in by_permission.items()})


class S3Buckets:
    """Bucket-level questions the CLI asks when a rule is added: does it exist, where is it."""

    def __init__(self, clients: ClientFactory, home_region: str) -> None:
        self._clients = clients
        self._home_region = home_region

    def region_of(self, bucket: str) -> str:
        """The bucket's region. Raises UnknownBucketError when it does not exist or is not visible."""
        try:
            found = self._clients.client("s3", self._home_region).get_bucket_location(Bucket=bucket)
        except ClientError as exc:
            if meaning(exc) in {S3ErrorMeaning.MISSING_BUCKET, S3ErrorMeaning.MISSING_KEY}:
                raise UnknownBucketError(bucket) from exc
            if meaning(exc) is S3ErrorMeaning.ACCESS_DENIED:
                raise UnknownBucketError(bucket, "is not accessible with these credentials (AccessDenied)") from exc
            raise storage_error(exc, "GetBucketLocation", bucket, None) from exc
        # us-east-1 answers with no constraint; EU is the legacy name of eu-west-1.
        constraint = found.get("LocationConstraint") or "us-east-1"
        return "eu-west-1" if constraint == "EU" else str(constraint)

    def versioning_enabled(self, bucket: str, region: str) -> bool:
        try:
            found = self._clients.client("s3", region).get_bucket_versioning(Bucket=bucket)
        except ClientError as exc:
            raise storage_error(exc, "GetBucketVersioning", bucket, None) from exc
        return bool(found.get("Status") == "Enabled")

    def aborts_incomplete_uploads(self, bucket: str, region: str) -> bool:
        try:
            found = self._clients.client("s3", region).get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as exc:
            if meaning(exc) is S3ErrorMeaning.NOT_CONFIGURED:
                return False
            raise storage_error(exc, "GetBucketLifecycleConfiguration", bucket, None) from exc
        for rule in found.get("Rules", []):
            applies_to_all = (
                not rule.get("Prefix")
                and not (rule.get("Filter") or {}).get("Prefix")
                and not (rule.get("Filter") or {}).get("And")
            )
            if rule.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in rule and applies_to_all:
                return True
        return False
