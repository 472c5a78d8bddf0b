"""Find a deployed crr stack's resources from its CloudFormation outputs and parameters."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from crr.adapters.clients import ClientFactory, error_code, error_message
from crr.adapters.notifications import ChangeRoute
from crr.breaker import BreakerSettings
from crr.errors import CrrError
from crr_cli.operations.catalog import StackScope


class StackNotFoundError(CrrError):
    pass


@dataclass(frozen=True)
class CrrStack:
    name: str
    region: str
    rules_table: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    source_buckets: tuple[str, ...]
    destination_buckets: tuple[str, ...]
    delete_breaker_window_seconds: int = 300
    backfill_state_machine_arn: str | None = None
    replica_kms_key_arns: tuple[str, ...] | None = None
    delete_breaker_count: int = 1000
    delete_breaker_percent: float = 50.0
    change_route: ChangeRoute = ChangeRoute.S3_NOTIFICATIONS
    source_changes_rule_arn: str | None = None

    @property
    def breaker_settings(self) -> BreakerSettings:
        return BreakerSettings(
            count=self.delete_breaker_count,
            percent=self.delete_breaker_percent,
            window_seconds=self.delete_breaker_window_seconds,
        )

    @property
    def scope(self) -> StackScope:
        return StackScope(
            region=self.region,
            queue_arn=self.queue_arn,
            rules_table=self.rules_table,
            queue_url=self.queue_url,
            source_buckets=self.source_buckets,
            destination_buckets=self.destination_buckets,
            replica_kms_key_arns=self.replica_kms_key_arns,
        )


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


def discover_stack(clients: ClientFactory, name: str, region: str) -> CrrStack:
    """Raises StackNotFoundError when the stack is missing or is not a crr stack."""
    cloudformation = clients.client("cloudformation", region)
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        raise StackNotFoundError(
            f"stack {name!r} not found in {region} ({error_code(exc)}: {error_message(exc)}); "
            "pass --stack and --region, or deploy it with `sam deploy`"
        ) from exc
    outputs = {entry["OutputKey"]: entry["OutputValue"] for entry in stacks[0].get("Outputs", [])}
    needed = ("RulesTableName", "ReplicationQueueUrl", "ReplicationQueueArn", "ReplicationDLQUrl")
    missing = [key for key in needed if key not in outputs]
    if missing:
        raise StackNotFoundError(f"stack {name!r} lacks the outputs {missing}: is it a crr stack?")
    return CrrStack(
        name=name,
        region=region,
        rules_table=outputs["RulesTableName"],
        queue_url=outputs["ReplicationQueueUrl"],
        queue_arn=outputs["ReplicationQueueArn"],
        dlq_url=outputs["ReplicationDLQUrl"],
        source_buckets=_names(outputs.get("AllowedSourceBuckets", "")),
        destination_buckets=_names(outputs.get("AllowedDestinationBuckets", "")),
        delete_breaker_window_seconds=int(outputs.get("DeleteBreakerWindowSeconds", "300")),
        backfill_state_machine_arn=outputs.get("BackfillStateMachineArn"),
        # Stacks deployed before this output existed are not checked (None).
        replica_kms_key_arns=_names(outputs["AllowedReplicaKmsKeyArns"])
        if "AllowedReplicaKmsKeyArns" in outputs
        else None,
        delete_breaker_count=int(outputs.get("DeleteBreakerCount", "1000")),
        delete_breaker_percent=float(outputs.get("DeleteBreakerPercent", "50")),
        # Stacks deployed before the EventBridge route have no such output: they use notifications.
        change_route=ChangeRoute(outputs.get("SourceChangeRoute", ChangeRoute.S3_NOTIFICATIONS)),
        source_changes_rule_arn=outputs.get("SourceChangesRuleArn"),
    )
