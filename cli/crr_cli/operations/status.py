"""How replication is doing: per rule (state, last sync, lag, counters) and per stack (queue, DLQ, failures).

``StackStatus`` assembles a ``StatusReport`` from injected ports, so it holds no boto3 and runs in
tests against in-memory fakes; ``crr_cli.adapters.health`` implements the ports over SQS, CloudWatch and
DynamoDB. ``render_text`` turns a report into the aligned table ``crr status`` prints.

The queue, the DLQ and the failure log belong to the stack and are shared by all its rules, so their
numbers are reported once per stack, not per rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field, computed_field

from crr.backfill.models import BackfillJob
from crr.breaker import BreakerHealth, BreakerSettings, breaker_health, breaker_lines
from crr.errors import CrrError, RuleNotFoundError, StatusProbeError
from crr.models import FailureCount, QueueDepth, RuleProgress
from crr.ports.objects import WiringProbe
from crr.ports.queues import BacklogAgeGauge, QueueGauge
from crr.ports.services import FailureMetric
from crr.ports.table import BackfillSource, BreakerSource, FailureCounter, ProgressSource, RuleReader
from crr.rules import ReplicationRule, RuleStatus

# Failures are counted over this window ("failures in the last hour").
FAILURE_WINDOW = timedelta(hours=1)
# Failed attempts are summed from CloudWatch over this window (crr's ReplicationFailures metric).
FAILURE_METRIC_WINDOW = timedelta(minutes=15)


# ---- the report ----------------------------------------------------------------------------------


class LagState(StrEnum):
    IDLE = "idle"  # the queue is empty and nothing is in flight: the replica is caught up
    BEHIND = "behind"  # work is queued; lag_seconds is now minus the newest applied change's event time
    PAUSED = "paused"  # the rule is paused: changes are acknowledged without being replicated
    UNKNOWN = "unknown"  # work is queued but the rule never applied a change, so there is no reference time


class BackfillHealth(BaseModel):
    """The rule's newest backfill job, as ``crr status`` shows it (``crr backfill status`` shows more)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: str
    processed: int = Field(description="objects listed and dealt with (copied, skipped, superseded, failed)")
    total: int | None = Field(description="objects counted; null until the counting pass is complete")
    percent_complete: float | None = Field(description="null until the total is known; never goes backwards")
    eta_seconds: float | None = None
    objects_per_second: float | None = Field(default=None, description="over the ranges that can run at once")
    bytes_copied: int = 0
    ranges_open: int = Field(default=0, description="key ranges not done yet")
    workers: int = Field(default=1, description="ranges copied at once")
    failure_reason: str | None = None


def backfill_health(job: BackfillJob) -> BackfillHealth:
    """The job's aggregate, from its one item (its ranges are not read)."""
    progress = job.progress()
    return BackfillHealth(
        job_id=job.job_id,
        status=job.status.value,
        processed=progress.processed,
        total=progress.total,
        percent_complete=progress.percent,
        eta_seconds=progress.eta_seconds,
        objects_per_second=progress.objects_per_second,
        bytes_copied=progress.bytes_copied,
        ranges_open=progress.ranges_open,
        workers=progress.workers,
        failure_reason=job.failure_reason,
    )


class WiringState(StrEnum):
    WIRED = "wired"  # the source bucket's changes reach the stack's queue
    MISSING = "missing"  # they do not: the rule replicates nothing new (see wiring_problem)
    UNKNOWN = "unknown"  # the wiring could not be read, or was not checked


class RuleHealth(BaseModel):
    """One rule as ``crr status`` shows it."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    state: RuleStatus
    source_bucket: str
    source_region: str
    destination_bucket: str
    destination_region: str
    prefixes: tuple[str, ...] = ()
    last_sync_at: datetime | None = Field(description="when the replicator last recorded progress for this rule")
    last_event_time: datetime | None = Field(description="event time of the newest change applied")
    lag: LagState
    lag_seconds: float | None = Field(description="now minus last_event_time while work is queued, else null")
    objects_copied: int
    bytes_copied: int
    deletes_applied: int
    skipped: int
    backfill: BackfillHealth | None = Field(default=None, description="the newest backfill job; null if none")
    breaker: BreakerHealth | None = Field(default=None, description="the mass-delete breaker and overwrite rate")
    wiring: WiringState = WiringState.UNKNOWN
    wiring_problem: str | None = Field(default=None, description="what is missing when wiring is missing")


class StackHealth(BaseModel):
    """What a stack's rules share: the replication queue, the DLQ and the failure log."""

    model_config = ConfigDict(frozen=True)

    stack: str
    region: str
    queue: QueueDepth
    oldest_message_age_seconds: float | None = Field(
        description="CloudWatch AWS/SQS ApproximateAgeOfOldestMessage (latest datapoint), null without one"
    )
    dead_letters: QueueDepth
    failures_last_hour: int | None = Field(
        description="failure records (FAILURE# items) of the last hour; null when the rules table cannot be read"
    )
    failures_counted_completely: bool = Field(
        description=(
            "false when the failure scan stopped at its bound (failures_last_hour is then a lower bound) or could "
            "not be made"
        )
    )
    failed_attempts: int | None = Field(
        default=None,
        description=(
            "failed attempts the functions published (CloudWatch, crr ReplicationFailures, service=<stack>) over "
            "failed_attempts_window_seconds: counted without the rules table, so failures show through an "
            "outage of it; null when CloudWatch cannot be read"
        ),
    )
    failed_attempts_window_seconds: int = int(FAILURE_METRIC_WINDOW.total_seconds())
    rules_table_readable: bool = Field(
        default=True, description="false when the rules table could not be read: rules and their figures are missing"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def idle(self) -> bool:
        """The replication queue holds nothing, in flight or waiting."""
        return self.queue.empty


class StatusReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    generated_at: datetime
    stack: StackHealth
    rules: list[RuleHealth]
    warnings: list[str] = Field(default_factory=list)


# ---- assembly ------------------------------------------------------------------------------------


class Lag(NamedTuple):
    state: LagState
    seconds: float | None


def lag_of(rule: ReplicationRule, progress: RuleProgress | None, queue_empty: bool, now: datetime) -> Lag:
    """The rule's lag: paused when the rule is (its replica stops following), idle when the stack's
    queue is empty and nothing is in flight, else now minus the event time of the newest change it
    applied (unknown before its first change).

    It is an estimate. The queue is shared, so a quiet rule of a busy stack shows the time since its
    own last change although none of its changes may be waiting; and a change retried after newer
    ones were applied is older than the lag says (the DLQ and failure counts show those).
    """
    if not rule.enabled:
        return Lag(LagState.PAUSED, None)
    if queue_empty:
        return Lag(LagState.IDLE, None)
    if progress is None or progress.last_event_time is None:
        return Lag(LagState.UNKNOWN, None)
    return Lag(LagState.BEHIND, max((now - progress.last_event_time).total_seconds(), 0.0))


def rule_health(rule: ReplicationRule, progress: RuleProgress | None, queue_empty: bool, now: datetime) -> RuleHealth:
    """Combine a rule, its progress and the stack's queue state into what ``crr status`` shows."""
    counters = progress or RuleProgress()
    lag = lag_of(rule, progress, queue_empty, now)
    return RuleHealth(
        rule_id=rule.rule_id,
        state=rule.status,
        source_bucket=rule.source_bucket,
        source_region=rule.source_region,
        destination_bucket=rule.destination_bucket,
        destination_region=rule.destination_region,
        prefixes=rule.prefixes,
        last_sync_at=counters.last_sync_at,
        last_event_time=counters.last_event_time,
        lag=lag.state,
        lag_seconds=lag.seconds,
        objects_copied=counters.objects_copied,
        bytes_copied=counters.bytes_copied,
        deletes_applied=counters.deletes_applied,
        skipped=counters.skipped,
    )


class StackStatus:
    """Reads every probe once and assembles a ``StatusReport``.

    Requests per report: 1 GetQueueAttributes per queue (2), 1 CloudWatch GetMetricStatistics (the
    backlog's age) and 1 GetMetricData (failed attempts), 1 Scan of the rules table for the rule list,
    1 GetItem per rule, and the bounded failure Scan (see ``crr_cli.adapters.health.DynamoFailureCounter``).
    """

    def __init__(
        self,
        *,
        stack: str,
        region: str,
        rules: RuleReader,
        progress: ProgressSource,
        queue: QueueGauge,
        dead_letters: QueueGauge,
        backlog_age: BacklogAgeGauge,
        failures: FailureCounter,
        failure_metric: FailureMetric | None = None,
        backfills: BackfillSource | None = None,
        breakers: tuple[BreakerSource, BreakerSettings] | None = None,
        wiring: WiringProbe | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._stack = stack
        self._region = region
        self._rules = rules
        self._progress = progress
        self._queue = queue
        self._dead_letters = dead_letters
        self._backlog_age = backlog_age
        self._failures = failures
        self._failure_metric = failure_metric
        self._backfills = backfills
        self._breakers = breakers
        self._wiring = wiring
        self._clock = clock

    def report(self, rule_id: str | None = None) -> StatusReport:
        """The stack's health and that of every rule, or of ``rule_id`` only.

        Raises RuleNotFoundError for an unknown ``rule_id`` and StatusProbeError when a queue cannot be
        read. The rest is reported as far as it can be read, the reasons in ``warnings``: the oldest
        message's age and the failed attempts (CloudWatch) as unknown; a rules table that cannot be read
        (an outage) leaves out the rules and the recorded failures (``rules_table_readable`` false),
        never counts them as none. Failed attempts with no failure record are warned about: the
        functions cannot write the table.
        """
        now = self._clock()
        warnings: list[str] = []
        table_error: str | None = None
        rules: list[ReplicationRule] = []
        try:
            rules = [self._rules.get(rule_id)] if rule_id is not None else self._rules.list()
        except RuleNotFoundError:
            raise
        except CrrError as exc:
            table_error = str(exc)
        queue = self._queue.depth()
        try:
            oldest = self._backlog_age.oldest_message_age_seconds()
        except StatusProbeError as exc:
            oldest = None
            warnings.append(f"age of the oldest queued message unavailable: {exc}")
        attempts = self._failed_attempts(now, warnings)
        failures: FailureCount | None = None
        healths: list[RuleHealth] = []
        if table_error is None:
            try:
                failures = self._failures.count_since(now - FAILURE_WINDOW)
                healths = self._rule_healths(rules, queue.empty, now)
            except CrrError as exc:
                table_error, healths = str(exc), []
        if failures is not None and not failures.complete:
            warnings.append(f"failure count stopped at its scan bound: at least {failures.count} in the last hour")
        warnings.extend(_failure_warnings(table_error, failures, attempts))
        stack = StackHealth(
            stack=self._stack,
            region=self._region,
            queue=queue,
            oldest_message_age_seconds=oldest,
            dead_letters=self._dead_letters.depth(),
            failures_last_hour=failures.count if failures is not None else None,
            failures_counted_completely=failures.complete if failures is not None else False,
            failed_attempts=attempts,
            rules_table_readable=table_error is None,
        )
        if self._wiring is not None and table_error is None:
            healths = [self._with_wiring(health, rule, warnings) for health, rule in zip(healths, rules, strict=True)]
        return StatusReport(generated_at=now, stack=stack, rules=healths, warnings=warnings)

    def _rule_healths(self, rules: list[ReplicationRule], queue_empty: bool, now: datetime) -> list[RuleHealth]:
        """Each rule with its progress, newest backfill and breaker (all read from the rules table).
        Raises CrrError when the table cannot be read."""
        healths = [rule_health(rule, self._progress.read(rule.rule_id), queue_empty, now) for rule in rules]
        if self._backfills is not None:
            healths = [health.model_copy(update={"backfill": self._backfill_of(health.rule_id)}) for health in healths]
        if self._breakers is not None:
            healths = [
                health.model_copy(update={"breaker": self._breaker_of(health.rule_id, now)}) for health in healths
            ]
        return healths

    def _failed_attempts(self, now: datetime, warnings: list[str]) -> int | None:
        if self._failure_metric is None:
            return None
        try:
            return self._failure_metric.failed_attempts(now - FAILURE_METRIC_WINDOW, now)
        except StatusProbeError as exc:
            warnings.append(f"failed attempts (CloudWatch) unavailable: {exc}")
            return None

    def _breaker_of(self, rule_id: str, now: datetime) -> BreakerHealth | None:
        if self._breakers is None:
            return None
        source, settings = self._breakers
        record = source.read(rule_id)
        return breaker_health(record, settings, source.held_count(rule_id) if record.held else 0, now)

    def _with_wiring(self, health: RuleHealth, rule: ReplicationRule, warnings: list[str]) -> RuleHealth:
        """The rule's health with its wiring checked; a rule whose changes no longer reach the queue (the
        bucket's notifications rewritten by other tooling) is named in the warnings, since it fails silently."""
        if self._wiring is None:
            return health
        try:
            problem = self._wiring.problem(rule)
        except CrrError as exc:
            warnings.append(f"rule {rule.rule_id}: wiring could not be checked: {exc}")
            return health.model_copy(update={"wiring": WiringState.UNKNOWN})
        if problem is None:
            return health.model_copy(update={"wiring": WiringState.WIRED})
        warnings.append(
            f"rule {rule.rule_id} is NOT WIRED, its new changes are not replicated: {problem} "
            f"(`crr rules rewire {rule.rule_id}` restores it)"
        )
        return health.model_copy(update={"wiring": WiringState.MISSING, "wiring_problem": problem})

    def _backfill_of(self, rule_id: str) -> BackfillHealth | None:
        job = self._backfills.latest(rule_id) if self._backfills is not None else None
        return backfill_health(job) if job is not None else None


def _failure_warnings(table_error: str | None, failures: FailureCount | None, attempts: int | None) -> list[str]:
    """What the two failure counts say together: the table's records (per message) and CloudWatch's
    failed attempts (published through the functions' logs, whatever the table does)."""
    window = f"{int(FAILURE_METRIC_WINDOW.total_seconds() // 60)} minutes"
    published = f"CloudWatch counts {attempts} failed attempt(s) in the last {window}" if attempts else ""
    if table_error is not None:
        return [
            f"the rules table cannot be read ({table_error}): rules, their progress and the recorded failures "
            f"are not shown{'; ' + published if published else ''}"
        ]
    if published and failures is not None and failures.count == 0:
        return [
            f"{published}, but the rules table holds no failure record: the functions cannot write it (a DynamoDB "
            f"outage, or a missing permission; their log says 'failure not recorded'). Dead letters carry their "
            f"reasons (crr dlq list)"
        ]
    return []


# ---- formatting ----------------------------------------------------------------------------------


def humanize_seconds(seconds: float | None) -> str:
    """A compact duration: ``0.4s``, ``42s``, ``3m05s``, ``2h07m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def humanize_bytes(count: int) -> str:
    """Binary units: ``512 B``, ``1.5 KiB``, ``2.0 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def ago(moment: datetime | None, now: datetime) -> str:
    """``12s ago`` (``-`` when there is no moment; clock skew never shows a negative age)."""
    return "-" if moment is None else f"{humanize_seconds((now - moment).total_seconds())} ago"


def lag_text(health: RuleHealth) -> str:
    return humanize_seconds(health.lag_seconds) if health.lag is LagState.BEHIND else health.lag.value


def backfill_text(backfill: BackfillHealth | None) -> str:
    """``-``, ``62.5% ETA 1m05s``, ``running (counting)``, ``done``, ``failed``."""
    if backfill is None:
        return "-"
    if backfill.status == "succeeded":
        return "done"
    if backfill.status == "failed":
        return f"failed at {backfill.processed} objects"
    if backfill.percent_complete is None:
        return f"{backfill.processed} done, counting"
    return f"{backfill.percent_complete:.1f}% ETA {humanize_seconds(backfill.eta_seconds)}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: frozenset[int]) -> list[str]:
    """Columns padded to their widest cell; columns in ``numeric`` right-aligned."""
    widths = [max(len(row[index]) for row in [headers, *rows]) for index in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _stack_lines(report: StatusReport) -> list[str]:
    stack = report.stack
    queue = stack.queue
    backlog = "idle" if stack.idle else f"{queue.depth} message(s) ({queue.in_flight} in flight)"
    if queue.delayed:
        backlog += f", {queue.delayed} delayed"
    if stack.failures_last_hour is None:
        recorded = "unknown"
    else:
        recorded = f"{'' if stack.failures_counted_completely else '>='}{stack.failures_last_hour}"
    attempts = "-" if stack.failed_attempts is None else str(stack.failed_attempts)
    window = humanize_seconds(stack.failed_attempts_window_seconds).replace("m00s", "m")
    return [
        f"stack {stack.stack} ({stack.region})  at {report.generated_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z",
        f"queue: {backlog}, oldest {humanize_seconds(stack.oldest_message_age_seconds)}"
        f"  |  DLQ: {stack.dead_letters.depth}"
        f"  |  failures (last hour): {recorded}"
        f"  |  failed attempts ({window}, CloudWatch): {attempts}",
    ]


_RULE_HEADERS = (
    "RULE",
    "STATE",
    "SOURCE -> DESTINATION",
    "LAST SYNC",
    "LAG",
    "COPIED",
    "BYTES",
    "DELETES",
    "SKIPPED",
    "BACKFILL",
)
_NUMERIC_COLUMNS = frozenset({4, 5, 6, 7, 8})


def render_text(report: StatusReport) -> str:
    """The report as aligned plain text: the stack's shared numbers once, then one line per rule."""
    now = report.generated_at
    lines = _stack_lines(report)
    lines.append("")
    if not report.rules:
        lines.append(
            "no rules" if report.stack.rules_table_readable else "rules unknown: the rules table cannot be read"
        )
    else:
        rows = [
            (
                health.rule_id,
                health.state.value,
                f"{health.source_bucket} ({health.source_region}) -> "
                f"{health.destination_bucket} ({health.destination_region})",
                ago(health.last_sync_at, now),
                lag_text(health),
                str(health.objects_copied),
                humanize_bytes(health.bytes_copied),
                str(health.deletes_applied),
                str(health.skipped),
                backfill_text(health.backfill),
            )
            for health in report.rules
        ]
        lines.extend(_table(_RULE_HEADERS, rows, _NUMERIC_COLUMNS))
        lines.extend(
            line for health in report.rules if health.breaker for line in breaker_lines(health.rule_id, health.breaker)
        )
    lines.extend(f"warning: {warning}" for warning in report.warnings)
    return "\n".join(lines)
