"""`crr status`: lag and idle detection, formatting, the JSON shape, the failure window, the health
adapters over moto, and the watch loop."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from crr.adapters.dynamodb import DynamoFailureLog, DynamoProgress, DynamoRules
from crr.adapters.dynamodb.keys import rule_pk
from crr.backfill.models import BackfillJob, PageCounts
from crr.errors import RuleNotFoundError, StateStoreError, StatusProbeError
from crr.failures import FailureKind, FailureReason
from crr.models import FailureCount, ProgressDelta, QueueDepth, QueueMessage, RuleProgress
from crr.rules import ReplicationRule, RuleStatus
from crr_cli.adapters.health import (
    CloudWatchBacklogAge,
    CloudWatchFailureMetric,
    DynamoFailureCounter,
    DynamoProgressReader,
    SqsQueueGauge,
    queue_name_from_url,
)
from crr_cli.operations.status import (
    LagState,
    StackStatus,
    StatusReport,
    humanize_bytes,
    humanize_seconds,
    lag_of,
    render_text,
)
from crr_cli.status_command import DEFAULT_WATCH_SECONDS, add_status_parser, watch
from tests.support.aws import client, create_rules_table
from tests.support.fakes import (
    FakeBackfillJobs,
    FakeBacklogAgeGauge,
    FakeFailureCounter,
    FakeFailureMetric,
    FakeProgress,
    FakeQueueGauge,
    FakeRules,
)
from tests.support.rules import named_rule

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
EMPTY = QueueDepth(visible=0, in_flight=0)
BUSY = QueueDepth(visible=7, in_flight=3)


def synced(event_age: float, sync_age: float = 1.0, copied: int = 5) -> RuleProgress:
    return RuleProgress(
        objects_copied=copied,
        bytes_copied=copied * 1024,
        deletes_applied=1,
        skipped=2,
        last_sync_at=NOW - timedelta(seconds=sync_age),
        last_event_time=NOW - timedelta(seconds=event_age),
    )


# ---- an outage of the table -----------------------------------------------------------------------


class TableDown:
    """Every read of the rules table during an outage of it (the operator's reads included)."""

    def __init__(self) -> None:
        self.error = StateStoreError("Scan failed: InternalServerError: injected outage", "InternalServerError")

    def list(self) -> list[ReplicationRule]:
        raise self.error

    def get(self, rule_id: str) -> ReplicationRule:
        raise self.error

    def read(self, rule_id: str) -> RuleProgress | None:
        raise self.error

    def count_since(self, cutoff: datetime) -> FailureCount:
        raise self.error


def stack_status(
    *rules: ReplicationRule,
    progress: dict[str, RuleProgress] | None = None,
    queue: QueueDepth = EMPTY,
    dlq: QueueDepth = EMPTY,
    backlog_age: FakeBacklogAgeGauge | None = None,
    failures: FakeFailureCounter | None = None,
    failure_metric: FakeFailureMetric | None = None,
    backfills: dict[str, BackfillJob] | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
) -> StackStatus:
    return StackStatus(
        stack="crr-test",
        region="us-west-1",
        rules=FakeRules(*rules),
        progress=FakeProgress(**(progress or {})),
        queue=FakeQueueGauge(queue),
        dead_letters=FakeQueueGauge(dlq),
        backlog_age=backlog_age or FakeBacklogAgeGauge(),
        failures=failures or FakeFailureCounter(),
        failure_metric=failure_metric or FakeFailureMetric(),
        backfills=FakeBackfillJobs(jobs=(backfills or {}).values()),
        clock=clock,
    )


def backfill_job(rule: ReplicationRule, *, processed: int, counted: int, seconds: float) -> BackfillJob:
    """A running job that has dealt with ``processed`` objects of ``counted`` in ``seconds``."""
    job = BackfillJob.start(rule, at=NOW, job_id="20261125T095000000000Z-abc123", workers=4)
    return job.model_copy(
        update={
            "pages": 3,
            "totals": PageCounts(listed=processed, copied=processed, bytes_copied=processed * 10),
            "counted": counted,
            "ranges_made": 6,
            "ranges_open": 1,  # one range left: one page at a time
            "ranges_uncounted": 0,
            "active_seconds": seconds,
        }
    )


# ---- lag and idle -------------------------------------------------------------------------------


def test_lag_is_now_minus_the_newest_applied_event_while_work_is_queued() -> None:
    # Given a rule whose newest applied change happened 75 s ago, and messages in the queue
    lag = lag_of(named_rule("photos"), synced(event_age=75), queue_empty=BUSY.empty, now=NOW)
    # Then it is 75 s behind
    assert (lag.state, lag.seconds) == (LagState.BEHIND, 75.0)


def test_an_empty_queue_with_nothing_in_flight_is_idle_however_old_the_last_change() -> None:
    lag = lag_of(named_rule("photos"), synced(event_age=86_400), queue_empty=EMPTY.empty, now=NOW)
    assert (lag.state, lag.seconds) == (LagState.IDLE, None)


@pytest.mark.parametrize(
    ("depth", "idle"),
    [
        (QueueDepth(visible=0, in_flight=0), True),
        (QueueDepth(visible=0, in_flight=1), False),  # a message being processed is work in flight
        (QueueDepth(visible=1, in_flight=0), False),
        (QueueDepth(visible=0, in_flight=0, delayed=2), False),  # delayed messages are still to come
    ],
)
def test_idle_means_nothing_waiting_in_flight_or_delayed(depth: QueueDepth, idle: bool) -> None:
    assert depth.empty is idle
    report = stack_status(named_rule("photos"), progress={"photos": synced(event_age=30)}, queue=depth).report()
    assert report.stack.idle is idle
    assert (report.rules[0].lag is LagState.IDLE) is idle


def test_a_paused_rule_shows_paused_instead_of_a_lag_even_when_the_queue_is_empty() -> None:
    paused = named_rule("photos", status=RuleStatus.PAUSED)
    assert lag_of(paused, synced(event_age=30), queue_empty=False, now=NOW).state is LagState.PAUSED
    assert lag_of(paused, synced(event_age=30), queue_empty=True, now=NOW).state is LagState.PAUSED


def test_a_rule_that_never_applied_a_change_has_an_unknown_lag_while_work_is_queued() -> None:
    assert lag_of(named_rule("photos"), None, queue_empty=False, now=NOW).state is LagState.UNKNOWN
    no_event = RuleProgress(skipped=3, last_sync_at=NOW)  # only skips: no applied event time
    assert lag_of(named_rule("photos"), no_event, queue_empty=False, now=NOW).state is LagState.UNKNOWN


def test_a_change_timestamped_after_now_by_clock_skew_never_gives_a_negative_lag() -> None:
    assert lag_of(named_rule("photos"), synced(event_age=-3), queue_empty=False, now=NOW).seconds == 0.0


# ---- assembly -----------------------------------------------------------------------------------


def test_the_report_counts_failures_of_the_last_hour_from_the_injected_clock() -> None:
    # Given failures 2 h, 61 min, 59 min and 1 min before now
    failures = FakeFailureCounter(*(NOW - timedelta(minutes=minutes) for minutes in (120, 61, 59, 1)))
    # When the report is built
    report = stack_status(named_rule("photos"), failures=failures).report()
    # Then the window starts one hour before the clock's now, and the two inside it are counted
    assert failures.cutoffs == [NOW - timedelta(hours=1)]
    assert (report.stack.failures_last_hour, report.stack.failures_counted_completely) == (2, True)
    assert report.generated_at == NOW


def test_a_failure_count_cut_short_by_its_scan_bound_is_flagged_as_a_lower_bound() -> None:
    report = stack_status(named_rule("photos"), failures=FakeFailureCounter(NOW, complete=False)).report()
    assert report.stack.failures_counted_completely is False
    assert any("at least 1" in warning for warning in report.warnings)
    assert "failures (last hour): >=1" in render_text(report)


def test_one_rule_can_be_asked_for_and_an_unknown_one_is_refused() -> None:
    status = stack_status(named_rule("a"), named_rule("b"))
    assert [health.rule_id for health in status.report().rules] == ["a", "b"]
    assert [health.rule_id for health in status.report("b").rules] == ["b"]
    with pytest.raises(RuleNotFoundError):
        status.report("c")


def test_counters_come_from_progress_and_default_to_zero_before_the_first_sync() -> None:
    report = stack_status(named_rule("a"), named_rule("b"), progress={"a": synced(10, copied=9)}).report()
    first, second = report.rules
    assert (first.objects_copied, first.bytes_copied, first.deletes_applied, first.skipped) == (9, 9216, 1, 2)
    assert first.last_sync_at == NOW - timedelta(seconds=1)
    assert (second.objects_copied, second.last_sync_at, second.backfill) == (0, None, None)


def test_failed_attempts_are_the_functions_published_failures_of_the_last_15_minutes() -> None:
    # Given CloudWatch counting 7 failed attempts, and the table 2 failure records
    metric = FakeFailureMetric(7)
    report = stack_status(named_rule("photos"), failures=FakeFailureCounter(NOW, NOW), failure_metric=metric).report()
    # Then both are reported, the attempts over the 15 minutes before the clock's now, and all is well
    assert metric.windows == [(NOW - timedelta(minutes=15), NOW)]
    assert (report.stack.failed_attempts, report.stack.failed_attempts_window_seconds) == (7, 900)
    assert (report.stack.failures_last_hour, report.stack.rules_table_readable) == (2, True)
    assert report.warnings == []


def test_failed_attempts_without_any_failure_record_say_the_functions_cannot_write_the_table() -> None:
    # Given the functions failing (CloudWatch counts 12 attempts) while no failure record reaches the table
    report = stack_status(named_rule("photos"), failure_metric=FakeFailureMetric(12)).report()
    # Then status does not claim that nothing failed: it shows the attempts and says why the table has none
    assert (report.stack.failures_last_hour, report.stack.failed_attempts) == (0, 12)
    [warning] = report.warnings
    assert warning.startswith("CloudWatch counts 12 failed attempt(s) in the last 15 minutes")
    assert "cannot write it" in warning
    assert "failed attempts (15m, CloudWatch): 12" in render_text(report)


def test_a_rules_table_the_operator_cannot_read_is_reported_as_unreadable_not_as_no_failures() -> None:
    # Given a table that fails every read, and CloudWatch counting 3 failed attempts
    table = TableDown()
    status = StackStatus(
        stack="crr-test",
        region="us-west-1",
        rules=table,
        progress=table,
        queue=FakeQueueGauge(BUSY),
        dead_letters=FakeQueueGauge(QueueDepth(visible=1, in_flight=0)),
        backlog_age=FakeBacklogAgeGauge(),
        failures=table,
        failure_metric=FakeFailureMetric(3),
        clock=lambda: NOW,
    )
    # When the status of the stack, and of one rule, is asked for
    for report in (status.report(), status.report("photos")):
        # Then the queues and CloudWatch are reported, the table's figures are unknown, and it says why
        assert (report.stack.rules_table_readable, report.rules) == (False, [])
        assert (report.stack.failures_last_hour, report.stack.failed_attempts) == (None, 3)
        assert (report.stack.queue.depth, report.stack.dead_letters.depth) == (10, 1)
        [warning] = report.warnings
        assert warning.startswith("the rules table cannot be read (Scan failed: InternalServerError")
        assert warning.endswith("CloudWatch counts 3 failed attempt(s) in the last 15 minutes")
        text = render_text(report)
        assert "failures (last hour): unknown  |  failed attempts (15m, CloudWatch): 3" in text
        assert "rules unknown: the rules table cannot be read" in text


def test_a_rules_table_failing_after_the_rule_list_leaves_out_every_rule() -> None:
    # Given rules that list, but progress that cannot be read (the table failing mid-report)
    status = StackStatus(
        stack="crr-test",
        region="us-west-1",
        rules=FakeRules(named_rule("a"), named_rule("b")),
        progress=TableDown(),
        queue=FakeQueueGauge(EMPTY),
        dead_letters=FakeQueueGauge(EMPTY),
        backlog_age=FakeBacklogAgeGauge(),
        failures=FakeFailureCounter(),
        clock=lambda: NOW,
    )
    report = status.report()
    # Then no rule is shown with counters of 0 it could not read
    assert (report.stack.rules_table_readable, report.rules) == (False, [])
    assert report.warnings[0].startswith("the rules table cannot be read")


def test_an_unreadable_failure_metric_is_a_warning_not_a_failure() -> None:
    error = StatusProbeError("CloudWatch GetMetricData failed: AccessDenied: no", "AccessDenied")
    report = stack_status(named_rule("photos"), failure_metric=FakeFailureMetric(error=error)).report()
    assert report.stack.failed_attempts is None
    assert report.warnings == [f"failed attempts (CloudWatch) unavailable: {error}"]
    assert "failed attempts (15m, CloudWatch): -" in render_text(report)


def test_an_unreadable_backlog_age_is_a_warning_not_a_failure() -> None:
    error = StatusProbeError("CloudWatch GetMetricStatistics failed: AccessDenied: no", "AccessDenied")
    report = stack_status(named_rule("photos"), queue=BUSY, backlog_age=FakeBacklogAgeGauge(error=error)).report()
    assert report.stack.oldest_message_age_seconds is None
    assert report.warnings == [f"age of the oldest queued message unavailable: {error}"]


# ---- formatting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.42, "0.4s"),
        (-5, "0.0s"),
        (42.9, "42s"),
        (185, "3m05s"),
        (7620, "2h07m"),
        (3 * 86_400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_durations_are_humanised_compactly(seconds: float | None, text: str) -> None:
    assert humanize_seconds(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3072.0 TiB")],
)
def test_bytes_are_humanised_in_binary_units(count: int, text: str) -> None:
    assert humanize_bytes(count) == text


def test_the_text_shows_the_stack_numbers_once_and_one_aligned_line_per_rule() -> None:
    # Given a busy stack with two rules, one paused
    status = stack_status(
        named_rule("photos"),
        named_rule("logs", status=RuleStatus.PAUSED),
        progress={"photos": synced(event_age=75, sync_age=4, copied=1234)},
        queue=BUSY,
        dlq=QueueDepth(visible=2, in_flight=1),
        backlog_age=FakeBacklogAgeGauge(age=95),
        failures=FakeFailureCounter(NOW, NOW),
        failure_metric=FakeFailureMetric(4),
    )
    # When it is rendered
    lines = render_text(status.report()).splitlines()
    # Then the header holds the shared numbers, once
    assert lines[0] == "stack crr-test (us-west-1)  at 2026-11-25 10:00:00Z"
    assert lines[1] == (
        "queue: 10 message(s) (3 in flight), oldest 1m35s  |  DLQ: 3  |  failures (last hour): 2"
        "  |  failed attempts (15m, CloudWatch): 4"
    )
    header, logs, photos = lines[3:6]
    assert header.split() == [
        "RULE", "STATE", "SOURCE", "->", "DESTINATION", "LAST", "SYNC", "LAG", "COPIED", "BYTES", "DELETES", "SKIPPED",
        "BACKFILL",
    ]  # fmt: skip
    # And each rule says its state, route with regions, last sync, lag, counters and backfill
    assert photos.split() == [
        "photos", "enabled", "photos-src", "(us-west-1)", "->", "photos-dst", "(us-east-1)",
        "4.0s", "ago", "1m15s", "1234", "1.2", "MiB", "1", "2", "-",
    ]  # fmt: skip
    assert logs.split()[:2] == ["logs", "paused"]
    assert "paused" in logs.split()[7:]
    # And the columns line up: numbers right-aligned under their header, the backfill after them
    assert header.index("SKIPPED") + len("SKIPPED") == photos.rindex(" 2 ") + 2 == logs.rindex(" 0 ") + 2
    assert header.index("BACKFILL") == photos.rindex("-") == logs.rindex("-")


def test_a_rule_shows_its_backfill_percent_and_eta_once_the_total_is_counted() -> None:
    # Given a rule whose backfill dealt with 250 of 1000 counted objects in 10 s
    rule = named_rule("photos")
    status = stack_status(rule, backfills={"photos": backfill_job(rule, processed=250, counted=1000, seconds=10)})
    # When the status is read
    report = status.report()
    # Then it shows 25 % done and 30 s to go (750 objects at 25 per second)
    backfill = report.rules[0].backfill
    assert backfill is not None
    assert (backfill.status, backfill.processed, backfill.total) == ("running", 250, 1000)
    assert backfill.percent_complete == 25.0
    assert backfill.eta_seconds == 30.0
    assert (backfill.objects_per_second, backfill.bytes_copied, backfill.ranges_open) == (25.0, 2500, 1)
    assert render_text(report).splitlines()[4].endswith("25.0% ETA 30s")


def test_an_idle_stack_without_a_backlog_datapoint_says_idle_and_dash() -> None:
    text = render_text(stack_status(named_rule("photos"), progress={"photos": synced(event_age=600)}).report())
    assert "queue: idle, oldest -  |  DLQ: 0" in text
    assert text.splitlines()[-1].split()[9] == "idle"


def test_a_stack_without_rules_says_so() -> None:
    assert render_text(stack_status().report()).splitlines()[-1] == "no rules"


def test_the_json_document_has_the_stack_once_and_each_rule_with_its_fields() -> None:
    report = stack_status(named_rule("photos"), progress={"photos": synced(event_age=75)}, queue=BUSY).report()
    document = json.loads(report.model_dump_json())
    assert set(document) == {"generated_at", "stack", "rules", "warnings"}
    assert document["stack"] == {
        "stack": "crr-test",
        "region": "us-west-1",
        "queue": {"visible": 7, "in_flight": 3, "delayed": 0, "depth": 10},
        "oldest_message_age_seconds": None,
        "dead_letters": {"visible": 0, "in_flight": 0, "delayed": 0, "depth": 0},
        "failures_last_hour": 0,
        "failures_counted_completely": True,
        "failed_attempts": 0,
        "failed_attempts_window_seconds": 900,
        "rules_table_readable": True,
        "idle": False,
    }
    [rule] = document["rules"]
    assert rule == {
        "rule_id": "photos",
        "state": "enabled",
        "source_bucket": "photos-src",
        "source_region": "us-west-1",
        "destination_bucket": "photos-dst",
        "destination_region": "us-east-1",
        "prefixes": [],
        "last_sync_at": "2026-11-25T09:59:59Z",
        "last_event_time": "2026-11-25T09:58:45Z",
        "lag": "behind",
        "lag_seconds": 75.0,
        "objects_copied": 5,
        "bytes_copied": 5120,
        "deletes_applied": 1,
        "skipped": 2,
        "backfill": None,
        "breaker": None,
        "wiring": "unknown",  # no wiring probe given
        "wiring_problem": None,
    }
    # And it reads back into the model
    assert StatusReport.model_validate(document).rules[0].lag is LagState.BEHIND


# ---- adapters over moto -------------------------------------------------------------------------


@pytest.fixture
def table(aws: None) -> Any:
    dynamodb = client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, "rules")
    return dynamodb


def test_queue_depth_counts_waiting_and_in_flight_messages_without_consuming_any(aws: None) -> None:
    # Given a queue with three messages, one of them received and not yet deleted
    sqs = client("sqs", "us-west-1")
    url = sqs.create_queue(QueueName="replication")["QueueUrl"]
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=300)
    gauge = SqsQueueGauge(sqs, url)
    # When its depth is read (twice)
    first, second = gauge.depth(), gauge.depth()
    # Then it is two waiting and one in flight, and reading took nothing off the queue
    assert (first.visible, first.in_flight, first.depth) == (2, 1, 3)
    assert second == first


def test_queue_depth_of_a_missing_queue_is_a_probe_error(aws: None) -> None:
    sqs = client("sqs", "us-west-1")
    url = sqs.create_queue(QueueName="gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(StatusProbeError, match="GetQueueAttributes on gone failed"):
        SqsQueueGauge(sqs, url).depth()


def test_the_queue_name_comes_from_its_url() -> None:
    assert queue_name_from_url("https://sqs.us-west-1.amazonaws.com/123456789012/crr-Queue-AB12/") == "crr-Queue-AB12"


def test_the_oldest_message_age_is_the_newest_cloudwatch_datapoint_or_none(aws: None) -> None:
    cloudwatch = client("cloudwatch", "us-west-1")
    now = datetime.now(UTC)
    gauge = CloudWatchBacklogAge(cloudwatch, "replication", clock=lambda: now)
    # Given no datapoint (moto and the local cloud publish no SQS metrics), Then the age is unknown
    assert gauge.oldest_message_age_seconds() is None
    # Given datapoints three minutes and one minute old, Then the newer one is the age
    for minutes_ago, age in ((3, 400.0), (1, 42.0)):
        cloudwatch.put_metric_data(
            Namespace="AWS/SQS",
            MetricData=[
                {
                    "MetricName": "ApproximateAgeOfOldestMessage",
                    "Dimensions": [{"Name": "QueueName", "Value": "replication"}],
                    "Value": age,
                    "Timestamp": now - timedelta(minutes=minutes_ago),
                }
            ],
        )
    assert gauge.oldest_message_age_seconds() == 42.0
    # And another queue's datapoints are not this queue's
    assert CloudWatchBacklogAge(cloudwatch, "other", clock=lambda: now).oldest_message_age_seconds() is None


def test_a_refused_metric_read_is_a_probe_error(aws: None) -> None:
    cloudwatch = client("cloudwatch", "us-west-1")
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("get_metric_statistics", "AccessDenied", "not allowed")
        with pytest.raises(StatusProbeError, match="AccessDenied") as raised:
            CloudWatchBacklogAge(cloudwatch, "replication").oldest_message_age_seconds()
    assert raised.value.code == "AccessDenied"


def put_failures(cloudwatch: Any, dimensions: dict[str, str], values: list[float], at: datetime) -> None:
    cloudwatch.put_metric_data(
        Namespace="crr",
        MetricData=[
            {
                "MetricName": "ReplicationFailures",
                "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
                "Values": values,
                "Timestamp": at,
            }
        ],
    )


def test_failed_attempts_sum_the_stacks_replication_failures_and_nothing_else(aws: None) -> None:
    cloudwatch = client("cloudwatch", "us-west-1")
    now = datetime.now(UTC).replace(microsecond=0)
    # Given the stack's failures as Powertools publishes them: per stack (service) and per rule (rule,
    # service), 2 and 3 attempts 10 and 2 minutes ago; one 20 minutes ago; another stack's failures
    for at, values in ((now - timedelta(minutes=10), [1.0, 1.0]), (now - timedelta(minutes=2), [1.0, 2.0])):
        put_failures(cloudwatch, {"service": "crr-dev"}, values, at)
        put_failures(cloudwatch, {"rule": "photos", "service": "crr-dev"}, values, at)
    put_failures(cloudwatch, {"service": "crr-dev"}, [9.0], now - timedelta(minutes=20))
    put_failures(cloudwatch, {"service": "crr-prod"}, [5.0], now - timedelta(minutes=1))
    # When the last 15 minutes are summed
    attempts = CloudWatchFailureMetric(cloudwatch, "crr-dev").failed_attempts(now - timedelta(minutes=15), now)
    # Then only this stack's per-stack series counts (the per-rule one would count each failure twice)
    assert attempts == 5


def test_a_refused_failure_metric_read_is_a_probe_error(aws: None) -> None:
    cloudwatch = client("cloudwatch", "us-west-1")
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("get_metric_data", "AccessDenied", "not allowed")
        with pytest.raises(StatusProbeError, match="GetMetricData failed: AccessDenied"):
            CloudWatchFailureMetric(cloudwatch, "crr-dev").failed_attempts(NOW - timedelta(minutes=15), NOW)


def record_failure(table: Any, message_id: str, at: datetime) -> None:
    log = DynamoFailureLog(table, "rules", clock=lambda: at)
    reason = FailureReason(FailureKind.PERMANENT, "AccessDenied", "denied")
    log.record(QueueMessage(message_id, "{}", "rh", 1), reason, rule_id="r", bucket="b", key="k")


def test_failures_are_counted_by_last_failure_within_the_window_and_other_items_are_ignored(table: Any) -> None:
    # Given failures last seen 2 h, 61 min, 59 min and 0 s ago, and a rule with progress and a ledger
    for minutes in (120, 61, 59, 0):
        record_failure(table, f"m-{minutes}", NOW - timedelta(minutes=minutes))
    DynamoRules(table, "rules").create(named_rule("photos"))
    DynamoProgress(table, "rules").add("photos", ProgressDelta(objects_copied=1), NOW)
    # And the 2-hour-old failure failing again a minute ago (its last failure moves into the window)
    record_failure(table, "m-120", NOW - timedelta(minutes=1))
    # When the failures since an hour ago are counted
    counted = DynamoFailureCounter(table, "rules").count_since(NOW - timedelta(hours=1))
    # Then exactly the three last seen within the hour count
    assert counted == FailureCount(count=3, complete=True)


def test_the_failure_scan_reads_every_page_and_stops_at_its_bound(table: Any) -> None:
    # Given more than 1 MB of table items, so a Scan takes two pages, and failures spread over them
    filler = "x" * 4000
    with_failures = [f"m-{index}" for index in range(0, 300, 50)]
    requests = [
        {"PutRequest": {"Item": {"pk": {"S": rule_pk(f"r{index}")}, "sk": {"S": "PAD"}, "pad": {"S": filler}}}}
        for index in range(300)
    ]
    for start in range(0, len(requests), 25):
        table.batch_write_item(RequestItems={"rules": requests[start : start + 25]})
    for message_id in with_failures:
        record_failure(table, message_id, NOW)
    cutoff = NOW - timedelta(hours=1)
    # When counted without a tight bound, Then every failure is found across the pages
    assert DynamoFailureCounter(table, "rules").count_since(cutoff) == FailureCount(count=6, complete=True)
    # When the bound is one page, Then the count is a lower bound and says so
    bounded = DynamoFailureCounter(table, "rules", max_pages=1).count_since(cutoff)
    assert bounded.complete is False
    assert bounded.count <= 6  # a lower bound of the full count


def test_a_failure_counter_needs_at_least_one_page(table: Any) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DynamoFailureCounter(table, "rules", max_pages=0)


def test_progress_is_read_back_as_counters_and_times(table: Any) -> None:
    # Given two batches of progress for a rule
    sink = DynamoProgress(table, "rules")
    event_time = NOW - timedelta(seconds=30)
    sink.add("photos", ProgressDelta(objects_copied=2, bytes_copied=10, latest_event_time=event_time), NOW)
    sink.add("photos", ProgressDelta(deletes_applied=1, skipped=4), NOW + timedelta(seconds=5))
    reader = DynamoProgressReader(table, "rules")
    # When it is read, Then counters are summed and times parsed (last sync from the latest batch)
    assert reader.read("photos") == RuleProgress(
        objects_copied=2,
        bytes_copied=10,
        deletes_applied=1,
        skipped=4,
        last_sync_at=NOW + timedelta(seconds=5),
        last_event_time=event_time,
    )
    # And a rule that never synced has no progress
    assert reader.read("other") is None


# ---- the command --------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_status_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["status", *argv])


def test_watch_defaults_to_two_seconds_and_takes_an_interval() -> None:
    assert parse().watch is None
    assert parse("--watch").watch == DEFAULT_WATCH_SECONDS == 2.0
    assert parse("photos", "--watch", "5").watch == 5.0
    assert parse("photos").rule_id == "photos"
    with pytest.raises(SystemExit):
        parse("--watch", "0")


def test_a_rule_after_watch_is_refused_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--watch", "photos")
    assert "write `crr status RULE --watch`" in capsys.readouterr().err


class Ticks:
    """A `sleep` that lets the watch loop run ``count`` refreshes, then presses Ctrl-C."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1


def test_watch_prints_a_report_per_refresh_until_ctrl_c_and_survives_a_failed_refresh() -> None:
    # Given a status whose second read fails
    status = stack_status(named_rule("photos"))
    answers: list[Callable[[], StatusReport]] = [status.report, lambda: status.report("gone"), status.report]
    out = io.StringIO()

    def produce() -> StatusReport:
        return answers.pop(0)()

    # When watched for three frames
    code = watch(produce, 0.5, False, out, sleep=Ticks(2))
    # Then it exits cleanly after printing each frame, the failed refresh as an error
    assert code == 0
    printed = out.getvalue()
    headers = [index for index, line in enumerate(printed.splitlines()) if line.startswith("stack crr-test")]
    error = printed.splitlines().index("error: no rule 'gone'")
    assert len(headers) == 2
    assert headers[0] < error < headers[1]


def test_watch_fails_at_once_when_the_first_report_cannot_be_made() -> None:
    with pytest.raises(RuleNotFoundError):
        watch(lambda: stack_status().report("gone"), 2.0, False, io.StringIO(), sleep=Ticks(5))


def test_watch_with_json_prints_one_document_per_line() -> None:
    out = io.StringIO()
    watch(stack_status(named_rule("photos")).report, 2.0, True, out, sleep=Ticks(1))
    documents = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(documents) == 2
    assert documents[0]["rules"][0]["rule_id"] == "photos"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_on_a_terminal_redraws_in_place() -> None:
    out = Terminal()
    watch(stack_status(named_rule("photos")).report, 2.0, False, out, sleep=Ticks(1))
    drawn = out.getvalue()
    assert drawn.startswith("\x1b[2J")  # cleared once
    assert drawn.count("\x1b[H") == 2  # then each frame is drawn from the top-left corner
    assert "refreshing every 2s; Ctrl-C to stop" in drawn
