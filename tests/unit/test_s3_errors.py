"""One S3 error mapping (crr.adapters.s3_errors) for every S3 adapter: what each code or bare status means."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.errors import AccessDeniedError, BucketMissingError, SlowDownError, StorageError
from crr.failures import FailureKind, classify


def s3_error(code: str, status: int, message: str = "", operation: str = "GetObject") -> ClientError:
    """A ClientError as botocore raises it; a HEAD has no body, so its code is the bare status."""
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, S3ErrorMeaning.MISSING_KEY),
        ("404", 404, S3ErrorMeaning.MISSING_KEY),  # HEAD of a missing key (or delete marker): no body
        ("NotFound", 404, S3ErrorMeaning.MISSING_KEY),
        ("NoSuchVersion", 404, S3ErrorMeaning.MISSING_KEY),
        ("NoSuchBucket", 404, S3ErrorMeaning.MISSING_BUCKET),
        ("NoSuchUpload", 404, S3ErrorMeaning.MISSING_UPLOAD),
        ("ServerSideEncryptionConfigurationNotFoundError", 404, S3ErrorMeaning.NOT_CONFIGURED),
        ("OwnershipControlsNotFoundError", 404, S3ErrorMeaning.NOT_CONFIGURED),
        ("NoSuchLifecycleConfiguration", 404, S3ErrorMeaning.NOT_CONFIGURED),
        ("PreconditionFailed", 412, S3ErrorMeaning.PRECONDITION_FAILED),
        ("412", 412, S3ErrorMeaning.PRECONDITION_FAILED),  # HEAD with If-Match
        ("ConditionalRequestConflict", 409, S3ErrorMeaning.PRECONDITION_FAILED),
        ("AccessDenied", 403, S3ErrorMeaning.ACCESS_DENIED),
        ("403", 403, S3ErrorMeaning.ACCESS_DENIED),  # HEAD without s3:GetObject
        ("AllAccessDisabled", 403, S3ErrorMeaning.ACCESS_DENIED),
        ("AccountProblem", 403, S3ErrorMeaning.ACCESS_DENIED),
        ("SlowDown", 503, S3ErrorMeaning.SLOW_DOWN),
        ("503", 503, S3ErrorMeaning.SLOW_DOWN),  # HEAD throttled
        # A named code is never re-read by its status: these share a status with a meaning above.
        ("InvalidObjectState", 403, S3ErrorMeaning.OTHER),
        ("InvalidAccessKeyId", 403, S3ErrorMeaning.OTHER),
        ("ServiceUnavailable", 503, S3ErrorMeaning.OTHER),
        ("InternalError", 500, S3ErrorMeaning.OTHER),
        ("500", 500, S3ErrorMeaning.OTHER),
    ],
)
def test_each_code_or_bare_status_has_one_meaning(code: str, status: int, expected: S3ErrorMeaning) -> None:
    # Given an S3 error as botocore raises it
    error = s3_error(code, status)
    # When its meaning is asked
    # Then it is the one S3's error-code table gives it
    assert meaning(error) is expected


@pytest.mark.parametrize(
    ("code", "status", "error_type", "failure_kind"),
    [
        ("NoSuchBucket", 404, BucketMissingError, FailureKind.PERMANENT),
        ("AccessDenied", 403, AccessDeniedError, FailureKind.PERMANENT),
        ("403", 403, AccessDeniedError, FailureKind.PERMANENT),
        ("AllAccessDisabled", 403, AccessDeniedError, FailureKind.PERMANENT),
        ("SlowDown", 503, SlowDownError, FailureKind.TRANSIENT),
        ("503", 503, SlowDownError, FailureKind.TRANSIENT),
        ("InvalidObjectState", 403, StorageError, FailureKind.PERMANENT),
        ("InternalError", 500, StorageError, FailureKind.TRANSIENT),
    ],
)
def test_a_failed_call_becomes_the_crr_error_its_failure_policy_acts_on(
    code: str, status: int, error_type: type[StorageError], failure_kind: FailureKind
) -> None:
    # Given a failed S3 call
    error = s3_error(code, status)
    # When it is translated
    translated = storage_error(error, "CopyObject", "dst", "k")
    # Then it is the crr error for its meaning, keeps S3's code, and the failure policy retries it or not
    assert type(translated) is error_type
    assert (translated.operation, translated.bucket, translated.key, translated.code) == (
        "CopyObject",
        "dst",
        "k",
        code,
    )
    assert classify(translated).kind is failure_kind


def test_a_bodiless_error_still_says_what_happened() -> None:
    # Given a HEAD's 500 (no code of its own, no message)
    # When it is translated
    translated = storage_error(s3_error("500", 500), "HeadObject", "src", "k")
    # Then the message names the status
    assert str(translated) == "HeadObject on src/k failed: 500: HTTP 500"
