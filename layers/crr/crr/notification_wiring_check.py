"""Replication must not stop silently: every rule's source bucket must still reach the stack's queue.

A rule stops replicating without a single failure when other tooling (Terraform, CloudFormation,
a console click) rewrites the source bucket's notification configuration: S3 keeps one
configuration per bucket, and whoever writes last owns it. Nothing then fails, nothing is queued,
`crr status` looks idle. The WiringWatchFunction runs ``check_wiring`` on a schedule and publishes
the number of unwired rules, which ``ReplicationWiringAlarm`` watches; ``crr status`` runs the same
check on demand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crr.errors import CrrError
from crr.ports.objects import WiringProbe
from crr.ports.table import RuleReader
from crr.settings import ConfigurationError


class WiringFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    source_bucket: str
    problem: str


class WiringReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    checked_at: datetime
    rules_checked: int = Field(ge=0)
    unwired: list[WiringFinding] = Field(description="rules whose source changes no longer reach the queue")
    unchecked: list[WiringFinding] = Field(description="rules whose wiring could not be read, with the reason")


def check_wiring(rules: RuleReader, probe: WiringProbe, now: datetime) -> WiringReport:
    """Check every rule (paused ones too: their notifications stay wired). A rule whose wiring cannot
    be read is reported as unchecked and never stops the others. Raises what ``rules.list`` raises."""
    unwired: list[WiringFinding] = []
    unchecked: list[WiringFinding] = []
    listed = rules.list()
    for rule in listed:
        try:
            problem = probe.problem(rule)
        except CrrError as exc:
            unchecked.append(WiringFinding(rule_id=rule.rule_id, source_bucket=rule.source_bucket, problem=str(exc)))
            continue
        if problem is not None:
            unwired.append(WiringFinding(rule_id=rule.rule_id, source_bucket=rule.source_bucket, problem=problem))
    return WiringReport(checked_at=now, rules_checked=len(listed), unwired=unwired, unchecked=unchecked)


class WiringWatchSettings(BaseModel):
    """The WiringWatchFunction's configuration, read per invocation."""

    model_config = ConfigDict(frozen=True)

    rules_table_name: str = Field(min_length=1)
    region: str = Field(min_length=1)
    replication_queue_arn: str = Field(min_length=1)
    change_route: Literal["S3Notifications", "EventBridge"]
    source_changes_rule_arn: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> WiringWatchSettings:
        """Raises ConfigurationError naming the variable that is missing or wrong."""
        env = os.environ if environ is None else environ
        try:
            return cls(
                rules_table_name=env.get("RULES_TABLE_NAME", ""),
                region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "",
                replication_queue_arn=env.get("REPLICATION_QUEUE_ARN", ""),
                change_route=env.get("CHANGE_ROUTE", ""),  # type: ignore[arg-type]  # validated
                source_changes_rule_arn=env.get("SOURCE_CHANGES_RULE_ARN") or None,
            )
        except ValidationError as exc:
            names = ", ".join(str(error["loc"][0]).upper() for error in exc.errors())
            raise ConfigurationError(f"WiringWatchFunction settings missing or invalid: {names}") from None
