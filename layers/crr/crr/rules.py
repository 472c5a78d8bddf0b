"""Replication rules: what replicates where, validated the same way in the CLI and the functions."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crr.errors import InvalidPrefixError, InvalidRuleError, SameBucketError, SameRegionError

MAX_KEY_BYTES = 1024
MAX_PREFIXES = 100

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(key|alias)/[A-Za-z0-9/_-]+$")
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Storage classes a replica may be written in (CopyObject's StorageClass values that need no restore).
REPLICA_STORAGE_CLASSES = frozenset(
    {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"}
)


class RuleStatus(StrEnum):
    ENABLED = "enabled"
    PAUSED = "paused"


def check_bucket_name(name: str) -> str:
    """Return ``name`` if it is a valid S3 bucket name, else raise InvalidRuleError saying why."""
    if not _BUCKET_NAME.match(name) or ".." in name or _IP_ADDRESS.match(name):
        raise InvalidRuleError(
            f"{name!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit, not an IP address)"
        )
    return name


def check_rule_id(rule_id: str) -> str:
    if not _RULE_ID.match(rule_id):
        raise InvalidRuleError(
            f"rule id {rule_id!r} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return rule_id


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can select S3 keys, else raise InvalidPrefixError saying why."""
    if prefix == "":
        raise InvalidPrefixError("an empty prefix selects every key: omit prefixes instead")
    if prefix.startswith("/"):
        raise InvalidPrefixError(
            f"prefix {prefix!r} starts with '/': S3 keys have no leading slash, so it would match nothing"
        )
    if len(prefix.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidPrefixError(f"prefix {prefix[:40]!r}... is longer than an S3 key ({MAX_KEY_BYTES} bytes)")
    if any(unicodedata.category(ch) == "Cc" for ch in prefix):
        raise InvalidPrefixError(f"prefix {prefix!r} contains control characters")
    return prefix


BucketName = Annotated[str, Field(min_length=3, max_length=63)]


class PeerRule(BaseModel):
    """The opposite half of a two-way pair (destination -> source), deployed in the destination region's
    stack: the rule, the table it keeps its records in, and the queue it takes changes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str
    rules_table: str = Field(min_length=3, max_length=255)
    queue_url: str = Field(min_length=1)

    @field_validator("rule_id")
    @classmethod
    def _rule_id(cls, value: str) -> str:
        return check_rule_id(value)


class ReplicationRule(BaseModel):
    """One source bucket replicating into one destination bucket in another region."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str
    source_bucket: BucketName
    source_region: str
    destination_bucket: BucketName
    destination_region: str
    prefixes: tuple[str, ...] = ()
    replicate_deletes: bool = True
    storage_class: str | None = None
    # SSE-KMS objects are re-encrypted with this key of the destination region (never silently downgraded).
    replica_kms_key_arn: str | None = None
    status: RuleStatus = RuleStatus.ENABLED
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # The mass-delete breaker (crr.breaker) mirrors here whether deletes are held, and since when.
    deletes_held: bool = False
    deletes_held_since: datetime | None = None
    breaker_suspended_until: datetime | None = None  # no longer written; rules stored by older versions load
    peer: PeerRule | None = None  # set on both halves of a two-way pair

    @field_validator("rule_id")
    @classmethod
    def _rule_id(cls, value: str) -> str:
        return check_rule_id(value)

    @field_validator("source_bucket", "destination_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_bucket_name(value)

    @field_validator("source_region", "destination_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise InvalidRuleError(f"{value!r} is not an AWS region name (like us-west-1)")
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value is not None and value not in REPLICA_STORAGE_CLASSES:
            raise InvalidRuleError(
                f"storage class {value!r} is not one of {', '.join(sorted(REPLICA_STORAGE_CLASSES))}"
            )
        return value

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_PREFIXES:
            raise InvalidPrefixError(f"at most {MAX_PREFIXES} prefixes per rule, got {len(value)}")
        for prefix in value:
            check_prefix(prefix)
        ordered = tuple(sorted(set(value)))
        for shorter, longer in pairwise(ordered):
            if longer.startswith(shorter):
                raise InvalidPrefixError(f"prefix {longer!r} is already covered by prefix {shorter!r}")
        return ordered

    @model_validator(mode="after")
    def _replica_key_in_destination_region(self) -> Self:
        if self.replica_kms_key_arn is None:
            return self
        match = _KMS_KEY_ARN.match(self.replica_kms_key_arn)
        if match is None:
            raise InvalidRuleError(
                f"replica KMS key {self.replica_kms_key_arn!r} is not a KMS key or alias ARN "
                "(arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME)"
            )
        if match["region"] != self.destination_region:
            raise InvalidRuleError(
                f"replica KMS key is in {match['region']}, but replicas are written in {self.destination_region}: "
                "KMS keys are regional, so name a key of the destination region"
            )
        return self

    @model_validator(mode="after")
    def _distinct_ends(self) -> Self:
        if self.source_bucket == self.destination_bucket:
            raise SameBucketError(f"source and destination are both bucket {self.source_bucket!r}")
        if self.source_region == self.destination_region:
            raise SameRegionError(
                f"source and destination are both in {self.source_region}: crr replicates across regions "
                "(use S3 Same-Region Replication or a batch copy within a region)"
            )
        return self

    @classmethod
    def create(cls, **fields: object) -> ReplicationRule:
        """Build a rule, raising the specific InvalidRuleError subclass when a field is wrong."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise _domain_error(exc) from None

    @property
    def enabled(self) -> bool:
        return self.status is RuleStatus.ENABLED

    def selects(self, key: str) -> bool:
        """Whether the rule replicates ``key`` (no prefixes: every key)."""
        return not self.prefixes or any(key.startswith(prefix) for prefix in self.prefixes)

    @property
    def two_way(self) -> bool:
        """Half of a two-way pair: the destination also replicates back into the source."""
        return self.peer is not None

    def with_status(self, status: RuleStatus) -> ReplicationRule:
        return self.model_copy(update={"status": status})


def _domain_error(exc: ValidationError) -> InvalidRuleError:
    """Surface our own validator's error type (pydantic wraps it) or a readable summary."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidRuleError):
            return cause
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors())
    return InvalidRuleError(f"invalid rule: {summary}")
