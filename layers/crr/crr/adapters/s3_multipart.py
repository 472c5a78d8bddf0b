"""The destination's multipart uploads, one request per step: the copy in parts, whether one invocation
runs it all (``S3ObjectStore.multipart_copy``) or the large-copy workflow spreads it over several."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory
from crr.adapters.s3_buckets import DestinationEncryption
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.adapters.s3_requests import copy_error, copy_source, destination_conditions, object_headers
from crr.markers import refreshed
from crr.models import CopyRequest, UploadedPart
from crr.part_planning import PartRange

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


class S3MultipartUploads:
    """MultipartUploads over boto3: the steps of a copy in parts, each one request (ListParts: per 1000)."""

    def __init__(self, clients: ClientFactory, encryption: DestinationEncryption | None = None) -> None:
        self._clients = clients
        self._encryption = encryption or DestinationEncryption(clients)

    def _s3(self, region: str) -> S3Client:
        return self._clients.client("s3", region)

    def create(self, request: CopyRequest) -> str:
        create = object_headers(request, self._encryption)
        # S3 stamps a copy in parts with the time its upload starts, which may be long after the live
        # path built the request: the marker's write time must be that one (crr.markers).
        create["Metadata"] = refreshed(request.metadata, request.state, datetime.now(UTC))
        tags = self._source_tags(request)
        if tags:
            create["Tagging"] = urlencode(tags)
        try:
            return str(self._s3(request.destination_region).create_multipart_upload(**create)["UploadId"])
        except ClientError as exc:
            raise copy_error(exc, request, "CreateMultipartUpload") from exc

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
                CopySource=copy_source(request),
                CopySourceRange=part.header,
                CopySourceIfMatch=request.state.etag,
            )
        except ClientError as exc:
            raise copy_error(exc, request, "UploadPartCopy") from exc
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
                **_upload(request, upload_id), MultipartUpload={"Parts": listed}, **destination_conditions(request)
            )
        except ClientError as exc:
            raise copy_error(exc, request, "CompleteMultipartUpload") from exc
        return str(completed.get("ETag", ""))

    def abort(self, request: CopyRequest, upload_id: str) -> None:
        try:
            self._s3(request.destination_region).abort_multipart_upload(**_upload(request, upload_id))
        except ClientError as exc:
            if meaning(exc) is not S3ErrorMeaning.MISSING_UPLOAD:
                raise storage_error(exc, "AbortMultipartUpload", request.destination_bucket, request.state.key) from exc


def _upload(request: CopyRequest, upload_id: str) -> dict[str, Any]:
    return {"Bucket": request.destination_bucket, "Key": request.state.key, "UploadId": upload_id}
