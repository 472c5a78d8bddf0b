"""Domain errors. Adapters translate AWS ``ClientError`` into these, so callers act on meaning, not codes."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field


class CrrError(Exception):
    """Base of every error crr raises on purpose."""


# ---- rules -------------------------------------------------------------------------------------


class RuleError(CrrError):
    """A rule cannot be created or changed as asked."""


class InvalidRuleError(RuleError):
    """The rule's own fields are inconsistent (same region, same bucket, bad prefix, bad name)."""


class SameRegionError(InvalidRuleError):
    pass


class ReplicaKeyError(InvalidRuleError):
    """The rule's replica KMS key cannot be used: unknown, unusable, or not granted to the stack."""


class SameBucketError(InvalidRuleError):
    pass


class InvalidPrefixError(InvalidRuleError):
    pass


class SourceAlreadyReplicatingError(RuleError):
    """The source bucket already has a rule: one destination per source bucket."""

    def __init__(self, bucket: str, existing_rule_id: str) -> None:
        super().__init__(
            f"source bucket {bucket!r} already replicates through rule {existing_rule_id!r}; "
            "a source bucket has exactly one destination (remove that rule first)"
        )
        self.bucket = bucket
        self.existing_rule_id = existing_rule_id


class DestinationAlreadyClaimedError(RuleError):
    """The destination bucket already receives from another source (or replicates itself: no chaining)."""

    def __init__(self, bucket: str, existing_rule_id: str, role: str) -> None:
        super().__init__(
            f"destination bucket {bucket!r} is already the {role} of rule {existing_rule_id!r}; "
            "a destination receives from one source only and cannot itself be replicated onwards"
        )
        self.bucket = bucket
        self.existing_rule_id = existing_rule_id


class SourceIsDestinationError(RuleError):
    """The source bucket already receives replicas: replicating it onwards would chain a third bucket."""

    def __init__(self, bucket: str, existing_rule_id: str) -> None:
        super().__init__(
            f"source bucket {bucket!r} is the destination of rule {existing_rule_id!r}; "
            "chaining replication through a third bucket is not supported"
        )
        self.bucket = bucket
        self.existing_rule_id = existing_rule_id


class UnknownBucketError(RuleError):
    def __init__(self, bucket: str, detail: str = "does not exist or is not visible to these credentials") -> None:
        super().__init__(f"bucket {bucket!r} {detail}")
        self.bucket = bucket


class BucketRegionMismatchError(RuleError):
    def __init__(self, bucket: str, declared: str, actual: str) -> None:
        super().__init__(f"bucket {bucket!r} is in {actual}, not {declared} as the rule says")
        self.bucket = bucket


class BucketNotAllowedError(RuleError):
    """The stack's IAM policy does not cover the bucket (least privilege: buckets are deploy parameters)."""

    def __init__(self, bucket: str, parameter: str, allowed: list[str]) -> None:
        super().__init__(
            f"bucket {bucket!r} is not in the stack's {parameter} ({', '.join(allowed) or 'empty'}); "
            f"redeploy the stack with {parameter} including it so the function may access it"
        )
        self.bucket = bucket


class PairedRuleError(RuleError):
    """Removing one direction of a two-way pair must be asked for explicitly."""

    def __init__(self, rule_id: str, peer_rule_id: str) -> None:
        super().__init__(
            f"rule {rule_id} is one direction of a two-way pair with rule {peer_rule_id}: pass --pair to remove "
            f"both directions, or --one-direction to keep {peer_rule_id} as a one-way rule"
        )
        self.rule_id = rule_id
        self.peer_rule_id = peer_rule_id


class VersioningRequiredError(RuleError):
    """Two-way sync needs versioned buckets: only delete markers tell when and where a delete happened."""

    def __init__(self, bucket: str) -> None:
        super().__init__(
            f"bucket {bucket!r} does not have versioning enabled: two-way sync needs it on both buckets, because "
            "a delete marker is the only record of when a delete happened (enable it with "
            f"aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled)"
        )
        self.bucket = bucket


class RuleNotFoundError(RuleError):
    def __init__(self, rule_id: str) -> None:
        super().__init__(f"no rule {rule_id!r}")
        self.rule_id = rule_id


class RuleAlreadyExistsError(RuleError):
    def __init__(self, rule_id: str) -> None:
        super().__init__(f"a rule with id {rule_id!r} already exists")
        self.rule_id = rule_id


# ---- events ------------------------------------------------------------------------------------


class MalformedEventError(CrrError):
    """A queue message is not an S3 change notification we can act on."""


class WrongRegionError(MalformedEventError):
    """A record places its bucket in another region than the bucket's rule does."""


# ---- storage -----------------------------------------------------------------------------------


class StorageError(CrrError):
    """An S3 call failed for a reason the replicator cannot fix by reconciling again."""

    def __init__(self, operation: str, bucket: str, key: str | None, code: str, message: str) -> None:
        where = f"{bucket}/{key}" if key is not None else bucket
        super().__init__(f"{operation} on {where} failed: {code}: {message}")
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.code = code


class BucketMissingError(StorageError):
    pass


class AccessDeniedError(StorageError):
    pass


class SlowDownError(StorageError):
    """S3 asked for a lower request rate (503 SlowDown) and the SDK's own retries did not get through."""


class SourceChangedError(CrrError):
    """The source object changed between reading it and copying it (precondition failed)."""


class LedgerConflictError(CrrError):
    """Someone else applied a change to the same key between our ledger read and our ledger write."""


class StateStoreError(CrrError):
    """DynamoDB refused or failed a request."""

    def __init__(self, message: str, code: str = "Unknown") -> None:
        super().__init__(message)
        self.code = code


class SourceGoneError(CrrError):
    """The source key vanished between reading it and copying it."""


class DestinationChangedError(CrrError):
    """A two-way copy or delete was conditional on the destination's version, and that version changed."""


class ReconcileContentionError(CrrError):
    """Reconciling one key kept colliding with concurrent work; the record is retried later."""


# ---- status ------------------------------------------------------------------------------------


class StatusProbeError(CrrError):
    """A health probe (queue attributes, metric, progress, failure count or a bucket's wiring) could not
    be read. Here, not with ``crr status``, because the notification adapter the functions ship raises it."""

    def __init__(self, message: str, code: str = "Unknown") -> None:
        super().__init__(message)
        self.code = code


# ---- verify ------------------------------------------------------------------------------------


class ListingOrderError(CrrError):
    """A bucket listing did not come in S3's key order (UTF-8 binary), so it cannot be merged."""

    def __init__(self, bucket: str, previous: str, key: str) -> None:
        super().__init__(
            f"the listing of bucket {bucket!r} returned {key!r} after {previous!r}, which is not S3's key order "
            "(ascending UTF-8 bytes); verify merges sorted listings and cannot compare this one"
        )
        self.bucket = bucket
        self.key = key


class RepairRefusedError(CrrError):
    """Repair messages would be acknowledged without effect (for example, the rule is paused)."""


class RepairIncompleteError(CrrError):
    """Sending repair messages failed after some were queued (those will still be applied)."""

    def __init__(self, queued: int, detail: str) -> None:
        super().__init__(f"repair stopped after queuing {queued} key(s): {detail}; run verify --repair again")
        self.queued = queued


class ReplicaKeyMissingError(CrrError):
    """An SSE-KMS source object, but the rule names no destination-region key to re-encrypt it with."""


# ---- workflows ---------------------------------------------------------------------------------


class WorkflowError(CrrError):
    """A Step Functions request failed (starting or describing a workflow execution)."""

    def __init__(self, message: str, code: str = "Unknown") -> None:
        super().__init__(message)
        self.code = code


class StepError(BaseModel):
    """The error a Catch puts at its ResultPath: the error's name and its cause (Lambda's error JSON for a
    function's exception, else text)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    error: str = Field(default="", alias="Error")
    cause: str = Field(default="", alias="Cause")

    @property
    def message(self) -> str:
        """The cause's own message: a function error's ``errorMessage``, else the cause as it is."""
        try:
            found = json.loads(self.cause)
        except ValueError:
            return self.cause
        if isinstance(found, dict) and isinstance(found.get("errorMessage"), str):
            return str(found["errorMessage"])
        return self.cause


# ---- backfill ----------------------------------------------------------------------------------


class BackfillError(CrrError):
    """A backfill job, or one page of it, cannot go on as asked."""


class BackfillPageError(BackfillError):
    """A whole page failed: a listing was refused, a bucket is missing, or keys that failed could not be
    handed to the replication queue. Nothing of the page is recorded, so the page may be run again."""

    def __init__(self, rule_id: str, job_id: str, sequence: int, detail: str, code: str = "Unknown") -> None:
        super().__init__(f"backfill {job_id} of rule {rule_id}, page {sequence}: {detail}")
        self.rule_id = rule_id
        self.job_id = job_id
        self.sequence = sequence
        self.code = code


class BackfillRefusedError(BackfillError):
    """The page cannot run for this rule: the rule is paused, or it is not the rule the job was planned for."""


class BackfillJobNotFoundError(BackfillError):
    def __init__(self, rule_id: str, job_id: str) -> None:
        super().__init__(f"rule {rule_id!r} has no backfill job {job_id!r}")
        self.rule_id = rule_id
        self.job_id = job_id


class BackfillJobConflictError(BackfillError):
    """A page result arrived out of order, or the job's status forbids the change asked for."""


# ---- inventory-driven backfill -----------------------------------------------------------------


class InventoryError(BackfillError):
    """An S3 Inventory report cannot drive a backfill as asked. No retry fixes it: the job fails with
    this reason (a transient failure to read the report is a StorageError instead, and is retried)."""


class InventoryManifestError(InventoryError):
    """The manifest is unreadable, or describes a report crr cannot use for this rule (another source
    bucket, a format other than CSV, a schema without the fields crr needs)."""


class InventoryFileMissingError(InventoryError):
    """A file of the report (the manifest, or a data file it lists) is not where the report says."""

    def __init__(self, bucket: str, key: str, detail: str = "NoSuchKey") -> None:
        super().__init__(f"the S3 Inventory file s3://{bucket}/{key} does not exist ({detail})")
        self.bucket = bucket
        self.key = key


class InventoryAccessDeniedError(InventoryError):
    """The stack may not read a file of the report (the BackfillFunction's InventoryBucket grant)."""

    def __init__(self, bucket: str, key: str, detail: str = "AccessDenied") -> None:
        super().__init__(
            f"reading the S3 Inventory file s3://{bucket}/{key} was denied ({detail}): deploy the stack with "
            f"InventoryBucket={bucket} so the BackfillFunction may read the report; a report encrypted with "
            "SSE-KMS also needs its key in SourceKmsKeyArns (the stack may not decrypt through S3 with any other)"
        )
        self.bucket = bucket
        self.key = key


class InventoryChecksumError(InventoryError):
    """A data file's MD5 is not the one the manifest gives: it was truncated, replaced or corrupted."""


class InventoryRowError(InventoryError):
    """A row of a data file does not fit the manifest's schema."""

    def __init__(self, file_key: str, row: int, detail: str) -> None:
        super().__init__(f"S3 Inventory file {file_key}, row {row}: {detail}")
        self.file_key = file_key
        self.row = row
