"""Managing rules: the checks and steps of add / pause / resume / remove, free of AWS calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from crr.errors import (
    BucketNotAllowedError,
    BucketRegionMismatchError,
    InvalidRuleError,
    PairedRuleError,
    ReplicaKeyError,
    VersioningRequiredError,
)
from crr.ports.objects import BucketDirectory, NotificationWiring
from crr.ports.services import KeyDirectory
from crr.ports.table import RuleStore
from crr.rules import PeerRule, ReplicationRule, RuleStatus


class PairRemoval(StrEnum):
    BOTH = "both"  # remove both directions
    ONE_DIRECTION = "one-direction"  # remove this one; the other becomes a one-way rule


@dataclass(frozen=True)
class StackScope:
    """What one deployed stack can do: its region, its queue, and the buckets its IAM policy names."""

    region: str
    queue_arn: str
    rules_table: str = ""
    queue_url: str = ""
    source_buckets: Sequence[str] = field(default_factory=tuple)
    destination_buckets: Sequence[str] = field(default_factory=tuple)
    # The keys the stack's IAM policy lets replicas be encrypted with (ReplicaKmsKeyArns); None: unknown.
    replica_kms_key_arns: Sequence[str] | None = None


@dataclass(frozen=True)
class RuleRequest:
    source_bucket: str
    destination_bucket: str
    rule_id: str | None = None
    source_region: str | None = None
    destination_region: str | None = None
    prefixes: tuple[str, ...] = ()
    replicate_deletes: bool = True
    storage_class: str | None = None
    replica_kms_key_arn: str | None = None


class RuleCatalog:
    def __init__(
        self,
        store: RuleStore,
        buckets: BucketDirectory,
        notifications: NotificationWiring,
        scope: StackScope,
        keys: KeyDirectory | None = None,
    ) -> None:
        self._store = store
        self._buckets = buckets
        self._notifications = notifications
        self._scope = scope
        self._keys = keys

    def add(self, request: RuleRequest) -> ReplicationRule:
        """Validate, store with its claims, then wire the source bucket's notifications to the queue.

        Raises InvalidRuleError subclasses, UnknownBucketError, BucketRegionMismatchError,
        BucketNotAllowedError, or the claim conflicts of ``RuleStore.create``.
        """
        rule = self._validated(request)
        self._store.create(rule)
        try:
            self._notifications.subscribe(rule, self._scope.queue_arn)
        except Exception:
            self._store.remove(rule.rule_id)  # no rule without its notifications
            raise
        return rule

    def add_two_way(
        self, request: RuleRequest, peer: RuleCatalog, reverse_rule_id: str | None = None
    ) -> tuple[ReplicationRule, ReplicationRule]:
        """Both directions of a two-way pair: this stack's rule and the reverse in ``peer`` (the stack of
        the destination region). Both buckets must be versioned. All or nothing.

        Raises what ``add`` raises, for either direction, and VersioningRequiredError.
        """
        forward = self._validated(request)
        reverse = peer._validated(
            RuleRequest(
                source_bucket=forward.destination_bucket,
                destination_bucket=forward.source_bucket,
                rule_id=reverse_rule_id or forward.destination_bucket,
                source_region=forward.destination_region,
                destination_region=forward.source_region,
                prefixes=forward.prefixes,
                replicate_deletes=forward.replicate_deletes,
                storage_class=forward.storage_class,
            )
        )
        for rule in (forward, reverse):
            if not self._buckets.versioning_enabled(rule.source_bucket, rule.source_region):
                raise VersioningRequiredError(rule.source_bucket)
        forward = forward.model_copy(update={"peer": peer._as_peer(reverse.rule_id)})
        reverse = reverse.model_copy(update={"peer": self._as_peer(forward.rule_id)})
        self._store.create(forward)
        try:
            peer._store.create(reverse)
        except Exception:
            self._store.remove(forward.rule_id)
            raise
        try:
            self._notifications.subscribe(forward, self._scope.queue_arn)
            peer._notifications.subscribe(reverse, peer._scope.queue_arn)
        except Exception:
            self.remove(forward.rule_id, PairRemoval.BOTH, peer)
            raise
        return forward, reverse

    def _as_peer(self, rule_id: str) -> PeerRule:
        return PeerRule(rule_id=rule_id, rules_table=self._scope.rules_table, queue_url=self._scope.queue_url)

    def _validated(self, request: RuleRequest) -> ReplicationRule:
        source_region = self._located(request.source_bucket, request.source_region)
        destination_region = self._located(request.destination_bucket, request.destination_region)
        rule = ReplicationRule.create(
            rule_id=request.rule_id or request.source_bucket,
            source_bucket=request.source_bucket,
            source_region=source_region,
            destination_bucket=request.destination_bucket,
            destination_region=destination_region,
            prefixes=request.prefixes,
            replicate_deletes=request.replicate_deletes,
            storage_class=request.storage_class,
            replica_kms_key_arn=request.replica_kms_key_arn,
        )
        if source_region != self._scope.region:
            raise InvalidRuleError(
                f"source bucket {rule.source_bucket!r} is in {source_region} but this stack is in "
                f"{self._scope.region}: S3 only notifies queues in the bucket's own region, so deploy crr "
                f"in {source_region} and add the rule there"
            )
        _require_allowed(rule.source_bucket, "SourceBuckets", self._scope.source_buckets)
        _require_allowed(rule.destination_bucket, "DestinationBuckets", self._scope.destination_buckets)
        if rule.replica_kms_key_arn is not None:
            rule = rule.model_copy(update={"replica_kms_key_arn": self._granted_key(rule)})
        return rule

    def _granted_key(self, rule: ReplicationRule) -> str:
        """The key ARN behind the rule's replica key, which must be one the stack may use: IAM ignores
        aliases in a policy's Resource, so only a key ARN listed in ReplicaKmsKeyArns is granted."""
        named = str(rule.replica_kms_key_arn)
        key = self._keys.key_arn(named, rule.destination_region) if self._keys is not None else named
        granted = self._scope.replica_kms_key_arns
        if granted is not None and key not in granted:
            via = f" (alias {named})" if key != named else ""
            raise ReplicaKeyError(
                f"replica KMS key {key}{via} is not in the stack's ReplicaKmsKeyArns {list(granted)}: the functions "
                "may encrypt only with the listed key ARNs; redeploy the stack with this key ARN added"
            )
        return key

    def _located(self, bucket: str, declared: str | None) -> str:
        actual = self._buckets.region_of(bucket)
        if declared is not None and declared != actual:
            raise BucketRegionMismatchError(bucket, declared, actual)
        return actual

    def advice(self, rule: ReplicationRule) -> list[str]:
        """Warnings worth printing after ``add``: things that do not stop replication but cost money or
        limit what the replica can restore."""
        advice = []
        if not self._buckets.versioning_enabled(rule.destination_bucket, rule.destination_region):
            advice.append(
                f"destination bucket {rule.destination_bucket!r} is not versioned: the replica keeps only the "
                "current version of each object, so it can restore objects deleted at the source while the "
                "mass-delete breaker held their deletes, but not objects overwritten at the source (say, "
                "encrypted in place by ransomware): crr copies each overwrite over the only copy. Enable "
                "versioning on it (with a lifecycle rule expiring noncurrent versions) to keep earlier versions."
            )
        if not self._buckets.aborts_incomplete_uploads(rule.destination_bucket, rule.destination_region):
            advice.append(
                f"destination bucket {rule.destination_bucket!r} has no lifecycle rule aborting incomplete "
                "multipart uploads: crr aborts the uploads it abandons, but one cut off mid-copy (a timeout, a "
                "crash) would be billed until deleted. Add AbortIncompleteMultipartUpload (e.g. 7 days) to its "
                "lifecycle."
            )
        return advice

    def list(self) -> list[ReplicationRule]:
        return self._store.list()

    def show(self, rule_id: str) -> ReplicationRule:
        return self._store.get(rule_id)

    def rewire(self, rule_id: str) -> ReplicationRule:
        """Wire the rule's source bucket into the queue again, e.g. after infrastructure-as-code rewrote
        the bucket's notification configuration (``crr status`` names such rules). Idempotent."""
        rule = self._store.get(rule_id)
        self._notifications.subscribe(rule, self._scope.queue_arn)
        return rule

    def pause(self, rule_id: str) -> ReplicationRule:
        """Paused rules acknowledge their records without copying (notifications stay wired)."""
        return self._store.set_status(rule_id, RuleStatus.PAUSED)

    def resume(self, rule_id: str) -> ReplicationRule:
        return self._store.set_status(rule_id, RuleStatus.ENABLED)

    def remove(self, rule_id: str, pair: PairRemoval | None = None, peer: RuleCatalog | None = None) -> ReplicationRule:
        """Unwire notifications first, so no record arrives for a rule that no longer exists.

        One direction of a two-way pair is removed only when ``pair`` says what becomes of the other
        (``peer``: the catalog of the stack holding it); else PairedRuleError.
        """
        rule = self._store.get(rule_id)
        if rule.peer is not None:
            if pair is None or peer is None:
                raise PairedRuleError(rule.rule_id, rule.peer.rule_id)
            if pair is PairRemoval.BOTH:
                peer._store.set_peer(rule.peer.rule_id, None)
                peer.remove(rule.peer.rule_id)
            else:
                peer._store.set_peer(rule.peer.rule_id, None)
        self._notifications.unsubscribe(rule)
        return self._store.remove(rule_id)


def _require_allowed(bucket: str, parameter: str, allowed: Sequence[str]) -> None:
    if bucket not in allowed:
        raise BucketNotAllowedError(bucket, parameter, list(allowed))
