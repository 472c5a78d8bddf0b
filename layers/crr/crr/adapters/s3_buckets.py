"""What the S3 adapters ask of a bucket rather than of an object: its default encryption and ACL mode,
which every replica write depends on (each looked up once per bucket and cached), and its region,
versioning and lifecycle, which managing rules checks before a rule may use it."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code
from crr.adapters.s3_errors import S3ErrorMeaning, meaning, storage_error
from crr.errors import UnknownBucketError
from crr.models import KMS_ENCRYPTIONS
from crr.observability import logger


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


class BucketAclModes:
    """Whether a bucket uses ACLs (its Object Ownership), cached per bucket for ``ttl`` seconds."""

    def __init__(self, clients: ClientFactory, ttl: float = 300.0) -> None:
        self._clients = clients
        self._ttl = ttl
        self._cached: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def acls_enabled(self, bucket: str, region: str) -> bool:
        """False when Object Ownership is BucketOwnerEnforced (ACLs disabled: the default since 2023)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached.get(bucket)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            controls = self._clients.client("s3", region).get_bucket_ownership_controls(Bucket=bucket)
            rules = controls.get("OwnershipControls", {}).get("Rules", [])
            enabled = not any(rule.get("ObjectOwnership") == "BucketOwnerEnforced" for rule in rules)
        except ClientError as exc:
            if meaning(exc) is not S3ErrorMeaning.NOT_CONFIGURED:
                raise storage_error(exc, "GetBucketOwnershipControls", bucket, None) from exc
            enabled = True  # buckets without ownership controls predate them and use ACLs
        with self._lock:
            self._cached[bucket] = (enabled, now + self._ttl)
        return enabled


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
