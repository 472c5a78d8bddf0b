"""What an S3 error means, decided once for every S3 adapter (replication, backfill, listing, notifications).

Every mapping below comes from the Amazon S3 API Reference, "Error responses", list of error codes
(https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html), which gives each code its HTTP
status. One rule is botocore's, not S3's: a HEAD response has no body, so it carries no error code and
botocore reports the HTTP status as the code ("404", "403", "412", "503"). Such a bare status is read as
the code S3 sends for that status on a GET; a named code is never re-read by its status, because
several codes share one (403 is AccessDenied but also InvalidObjectState, an archived object).

Which *domain* error a meaning becomes can depend on the call: a missing key is SourceGoneError for a
copy and "nothing there" for a HEAD; the adapters decide that, from ``meaning``. ``storage_error`` is
the translation when the call gives the meaning no special sense.
"""

from __future__ import annotations

from enum import Enum

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message, http_status
from crr.errors import AccessDeniedError, BucketMissingError, SlowDownError, StorageError


class S3ErrorMeaning(Enum):
    MISSING_KEY = "missing key"  # the key, or the version asked for, does not exist (or is a delete marker)
    MISSING_BUCKET = "missing bucket"
    MISSING_UPLOAD = "missing upload"  # a multipart upload completed or aborted meanwhile
    NOT_CONFIGURED = "not configured"  # a bucket setting that was never set (encryption, ownership, lifecycle)
    PRECONDITION_FAILED = "precondition failed"  # an If-Match / If-None-Match / x-amz-copy-source-if-* lost
    ACCESS_DENIED = "access denied"
    SLOW_DOWN = "slow down"  # S3 asks for a lower request rate; the SDK's retries already backed off
    OTHER = "other"


_BY_CODE: dict[str, S3ErrorMeaning] = {
    # 404 NoSuchKey: "The specified key does not exist."
    "NoSuchKey": S3ErrorMeaning.MISSING_KEY,
    # 404 NoSuchVersion: "The version ID specified in the request does not match an existing version."
    "NoSuchVersion": S3ErrorMeaning.MISSING_KEY,
    # What some S3-compatible servers (and older botocore) name a body-less 404.
    "NotFound": S3ErrorMeaning.MISSING_KEY,
    # 404 NoSuchBucket: "The specified bucket does not exist."
    "NoSuchBucket": S3ErrorMeaning.MISSING_BUCKET,
    # 404 NoSuchUpload: "The specified multipart upload does not exist."
    "NoSuchUpload": S3ErrorMeaning.MISSING_UPLOAD,
    # 404s of the bucket-configuration GETs when the setting was never made.
    "ServerSideEncryptionConfigurationNotFoundError": S3ErrorMeaning.NOT_CONFIGURED,
    "OwnershipControlsNotFoundError": S3ErrorMeaning.NOT_CONFIGURED,
    "NoSuchLifecycleConfiguration": S3ErrorMeaning.NOT_CONFIGURED,
    # 412 PreconditionFailed: "At least one of the preconditions that you specified did not hold."
    "PreconditionFailed": S3ErrorMeaning.PRECONDITION_FAILED,
    # 409 ConditionalRequestConflict: a concurrent write to the key won the race for the condition
    # ("A conflicting operation occurred. If using PutObject you can retry the request.").
    "ConditionalRequestConflict": S3ErrorMeaning.PRECONDITION_FAILED,
    # 403 AccessDenied; 403 AllAccessDisabled: "All access to this Amazon S3 resource has been disabled.";
    # 403 AccountProblem: "There is a problem with your AWS account that prevents the operation."
    "AccessDenied": S3ErrorMeaning.ACCESS_DENIED,
    "AllAccessDisabled": S3ErrorMeaning.ACCESS_DENIED,
    "AccountProblem": S3ErrorMeaning.ACCESS_DENIED,
    # 503 SlowDown: "Please reduce your request rate."
    "SlowDown": S3ErrorMeaning.SLOW_DOWN,
    # Deliberately absent, so they stay OTHER with their own code: 403 InvalidObjectState (an archived
    # object: no retry helps, crr.failures counts it permanent), 403 InvalidAccessKeyId and
    # SignatureDoesNotMatch (credentials, not permissions), 500 InternalError, 503 ServiceUnavailable.
}

# A HEAD's bare status, read as the code S3 sends with that status on a GET.
_BY_BARE_STATUS: dict[str, S3ErrorMeaning] = {
    "404": S3ErrorMeaning.MISSING_KEY,  # a HEAD cannot tell a missing key from a missing bucket: the key
    "403": S3ErrorMeaning.ACCESS_DENIED,
    "412": S3ErrorMeaning.PRECONDITION_FAILED,
    "503": S3ErrorMeaning.SLOW_DOWN,
}


def meaning(exc: ClientError) -> S3ErrorMeaning:
    """What the S3 error says, by its code (or, for a body-less HEAD response, by its HTTP status)."""
    code = error_code(exc)
    return _BY_CODE.get(code) or _BY_BARE_STATUS.get(code) or S3ErrorMeaning.OTHER


def storage_error(exc: ClientError, operation: str, bucket: str, key: str | None) -> StorageError:
    """The crr error for an S3 call that failed, keeping S3's code for failure reports and replay filters:
    BucketMissingError, AccessDeniedError, SlowDownError, else StorageError."""
    code, message = error_code(exc), error_message(exc)
    found = meaning(exc)
    if found is S3ErrorMeaning.MISSING_BUCKET:
        return BucketMissingError(operation, bucket, key, code, message or "bucket does not exist")
    if found is S3ErrorMeaning.ACCESS_DENIED:
        return AccessDeniedError(operation, bucket, key, code, message or "access denied")
    if found is S3ErrorMeaning.SLOW_DOWN:
        return SlowDownError(operation, bucket, key, code, message or "reduce your request rate")
    return StorageError(operation, bucket, key, code, message or f"HTTP {http_status(exc)}")
