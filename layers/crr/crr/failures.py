"""What a failure means for a record: retry it later (transient) or set it aside at once (permanent).

Transient failures go back to the queue with a growing, jittered visibility timeout for that record
only; after the queue's MaxReceiveCount deliveries SQS moves them to the dead-letter queue. Permanent
failures cannot succeed by retrying (a denied key, a missing bucket, an archived object, a body that
is not a notification), so they go to the dead-letter queue at once, with their reason attached.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from crr.errors import (
    AccessDeniedError,
    BucketMissingError,
    CrrError,
    MalformedEventError,
    ReplicaKeyMissingError,
    StateStoreError,
    StorageError,
    WrongRegionError,
)


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


# S3 and KMS codes that no retry can fix. Anything unknown is retried: the redrive policy still
# bounds it, and a wrong "permanent" would skip the retries a blip deserves.
PERMANENT_S3_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "NoSuchBucket",
        "InvalidObjectState",
        "InvalidBucketState",
        "MetadataTooLarge",
        "InvalidStorageClass",
        "InvalidArgument",
        "InvalidRequest",
        "KeyTooLongError",
        "EntityTooLarge",
        "InvalidBucketName",
        "MethodNotAllowed",
        "NotImplemented",
        "AccessControlListNotSupported",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ObjectLockConfigurationNotFoundError",
        "InvalidToken",
        "ExpiredToken",
    }
)
PERMANENT_STATE_CODES = frozenset(
    {"ResourceNotFoundException", "AccessDeniedException", "ValidationException", "UnrecognizedClientException"}
)


@dataclass(frozen=True)
class FailureReason:
    kind: FailureKind
    code: str
    message: str

    @property
    def permanent(self) -> bool:
        return self.kind is FailureKind.PERMANENT


def _is_permanent_code(code: str) -> bool:
    return code in PERMANENT_S3_CODES or code.startswith("KMS.") or code in PERMANENT_STATE_CODES


_ALWAYS_PERMANENT: dict[type[CrrError], str] = {
    WrongRegionError: "WrongRegion",
    ReplicaKeyMissingError: "ReplicaKmsKeyMissing",
    MalformedEventError: "MalformedEvent",
}


def classify(error: BaseException) -> FailureReason:
    """Name the failure (an error code a user can filter replays by) and say whether retrying can help."""
    message = str(error)[:1000]
    for error_type, code in _ALWAYS_PERMANENT.items():
        if isinstance(error, error_type):
            return FailureReason(FailureKind.PERMANENT, code, message)
    if isinstance(error, AccessDeniedError | BucketMissingError):
        return FailureReason(FailureKind.PERMANENT, error.code, message)
    if isinstance(error, StorageError | StateStoreError):
        kind = FailureKind.PERMANENT if _is_permanent_code(error.code) else FailureKind.TRANSIENT
        return FailureReason(kind, error.code, message)
    name = type(error).__name__
    return FailureReason(
        FailureKind.TRANSIENT, name.removesuffix("Error") if isinstance(error, CrrError) else name, message
    )


# The first backoff's ceiling (the template's RetryBaseSeconds default, read as RETRY_BASE_SECONDS).
DEFAULT_RETRY_BASE_SECONDS = 5.0


@dataclass(frozen=True)
class Backoff:
    """Visibility timeout before the next delivery of a failed record: an exponential ceiling with
    "equal jitter" (a draw between half the ceiling and the ceiling), so delays keep growing while a
    burst of failures does not come back as a burst."""

    base_seconds: float = DEFAULT_RETRY_BASE_SECONDS
    cap_seconds: float = 900.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> int:
        """Seconds (an int, as SQS wants) for the ``attempt``-th failed delivery (1-based)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        draw = (rng or random).uniform(ceiling / 2, ceiling)
        return max(1, min(int(draw), int(self.cap_seconds)))


@dataclass(frozen=True)
class FailureRecord:
    """What the DLQ and ``crr dlq list`` show for a failed message."""

    message_id: str
    reason: FailureReason
    attempts: int
    first_failure: datetime
    last_failure: datetime
    rule_id: str | None = None
    bucket: str | None = None
    key: str | None = None
