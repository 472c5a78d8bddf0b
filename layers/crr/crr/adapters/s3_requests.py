"""How a replica write is spelled for S3, shared by the one-request copy (``crr.adapters.s3``) and the copy
in parts (``crr.adapters.s3_multipart``): the headers a replica is written with, the pinned copy source,
the destination's conditions, and what a refused copy means."""

from __future__ import annotations

from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.s3_buckets import DestinationEncryption
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.errors import DestinationChangedError, SourceChangedError, SourceGoneError
from crr.models import AclGrants, CopyRequest
from crr.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CopySourceTypeDef, GrantTypeDef


# The optional headers an object keeps and its replica is written with: request parameter -> ObjectState field.
OPTIONAL_HEADERS = {
    "CacheControl": "cache_control",
    "ContentDisposition": "content_disposition",
    "ContentEncoding": "content_encoding",
    "ContentLanguage": "content_language",
}
_PERMISSIONS = {"FULL_CONTROL": "full_control", "READ": "read", "READ_ACP": "read_acp", "WRITE_ACP": "write_acp"}


def copy_source(request: CopyRequest) -> CopySourceTypeDef:
    source: CopySourceTypeDef = {"Bucket": request.source_bucket, "Key": request.state.key}
    if request.state.version_id:
        source["VersionId"] = request.state.version_id
    return source


def object_headers(request: CopyRequest, encryption: DestinationEncryption) -> dict[str, Any]:
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
    params.update({name: getattr(state, field) for name, field in OPTIONAL_HEADERS.items() if getattr(state, field)})
    expires = http_date(state.expires, request)
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


def http_date(value: str | None, request: CopyRequest) -> str | None:
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


def destination_conditions(request: CopyRequest) -> dict[str, Any]:
    if request.destination_etag is not None:
        return {"IfMatch": request.destination_etag}
    if request.destination_absent:
        return {"IfNoneMatch": "*"}
    return {}


def copy_error(exc: ClientError, request: CopyRequest, operation: str) -> Exception:
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


def grants_from_acl(grants: Sequence[GrantTypeDef]) -> AclGrants:
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
