"""Health probes for ``crr status`` (the ports of ``crr_cli.operations.status``) over SQS, CloudWatch and DynamoDB.

Read-only: nothing here receives, changes or deletes a message, so looking never disturbs replication.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.adapters.dynamodb import DynamoProgress
from crr.adapters.dynamodb.keys import FAILURE_PK_PREFIX
from crr.errors import StatusProbeError
from crr.models import FailureCount, QueueDepth, RuleProgress

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


# A failure count reads at most this many Scan pages (each at most 1 MB of table data).
DEFAULT_FAILURE_SCAN_PAGES = 20
# SQS publishes its CloudWatch metrics once a minute and they arrive a few minutes late.
DEFAULT_METRIC_LOOKBACK = timedelta(minutes=10)


def _probe_error(exc: ClientError, what: str) -> StatusProbeError:
    return StatusProbeError(f"{what} failed: {error_code(exc)}: {error_message(exc)}", error_code(exc))


def queue_name_from_url(queue_url: str) -> str:
    """``https://sqs.../123456789012/name`` → ``name`` (CloudWatch identifies queues by name)."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


class SqsQueueGauge:
    """QueueGauge: one GetQueueAttributes; receives nothing, so messages stay where they are."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def depth(self) -> QueueDepth:
        """Raises StatusProbeError when the queue cannot be read."""
        try:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
        except ClientError as exc:
            raise _probe_error(exc, f"GetQueueAttributes on {queue_name_from_url(self._url)}") from exc
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )


class CloudWatchBacklogAge:
    """BacklogAgeGauge from the AWS/SQS ``ApproximateAgeOfOldestMessage`` metric.

    SQS does not offer the age as a queue attribute, and finding the oldest message by receiving would
    take messages away from the function. The metric's newest datapoint in ``lookback`` is used, so the
    age shown is up to a few minutes old; None when there is no datapoint (an inactive queue, or an
    emulator such as moto that publishes no SQS metrics). One GetMetricStatistics request.
    """

    def __init__(
        self,
        client: CloudWatchClient,
        queue_name: str,
        *,
        lookback: timedelta = DEFAULT_METRIC_LOOKBACK,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._cloudwatch = client
        self._queue_name = queue_name
        self._lookback = lookback
        self._clock = clock

    def oldest_message_age_seconds(self) -> float | None:
        """Raises StatusProbeError when CloudWatch refuses (for example without
        ``cloudwatch:GetMetricStatistics``)."""
        now = self._clock()
        try:
            answer = self._cloudwatch.get_metric_statistics(
                Namespace="AWS/SQS",
                MetricName="ApproximateAgeOfOldestMessage",
                Dimensions=[{"Name": "QueueName", "Value": self._queue_name}],
                StartTime=now - self._lookback,
                EndTime=now,
                Period=60,
                Statistics=["Maximum"],
            )
        except ClientError as exc:
            raise _probe_error(exc, "CloudWatch GetMetricStatistics") from exc
        points = answer.get("Datapoints", [])
        if not points:
            return None
        newest = max(points, key=lambda point: point["Timestamp"])
        return float(newest["Maximum"])


# Where the functions publish their metrics (template.yaml: POWERTOOLS_METRICS_NAMESPACE, and
# POWERTOOLS_SERVICE_NAME = the stack's name as the `service` dimension).
METRICS_NAMESPACE = "crr"
SERVICE_DIMENSION = "service"
FAILURE_METRIC = "ReplicationFailures"


class CloudWatchFailureMetric:
    """FailureMetric: the stack's ``crr`` / ``ReplicationFailures`` (dimension ``service`` = the stack),
    summed with one GetMetricData.

    The ReplicateFunction publishes it through its log (EMF) and CloudWatch Logs extracts it, so it
    counts failures the function could not record in the rules table. It counts failed attempts (a
    message failing three deliveries counts three), not messages. The query names exactly one
    dimension set, ``service``: CloudWatch matches dimensions exactly, so the per-rule documents
    (``rule`` and ``service``) are not counted twice. Periods of a minute, summed, so the window starts
    within a minute of ``start``.
    """

    def __init__(self, client: CloudWatchClient, stack_name: str) -> None:
        self._cloudwatch = client
        self._stack = stack_name

    def failed_attempts(self, start: datetime, end: datetime) -> int:
        """Raises StatusProbeError when CloudWatch refuses (for example without ``cloudwatch:GetMetricData``)."""
        query = {
            "Id": "failures",
            "MetricStat": {
                "Metric": {
                    "Namespace": METRICS_NAMESPACE,
                    "MetricName": FAILURE_METRIC,
                    "Dimensions": [{"Name": SERVICE_DIMENSION, "Value": self._stack}],
                },
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        params: dict[str, Any] = {
            "MetricDataQueries": [query],
            "StartTime": start.replace(second=0, microsecond=0),
            "EndTime": end,
        }
        total = 0.0
        while True:
            try:
                answer = self._cloudwatch.get_metric_data(**params)
            except ClientError as exc:
                raise _probe_error(exc, "CloudWatch GetMetricData") from exc
            total += sum(sum(result.get("Values", [])) for result in answer.get("MetricDataResults", []))
            if not answer.get("NextToken"):
                return round(total)
            params["NextToken"] = answer["NextToken"]


class DynamoFailureCounter:
    """FailureCounter over the ``FAILURE#<message id>`` items of the RulesTable.

    Cost: there is no index on failure items, so this is a Scan of the whole table (rules, claims,
    ledger, progress and failures) with a filter; DynamoDB charges for what it reads before filtering:
    0.5 read request unit per 4 KB (eventually consistent), 128 per full 1 MB page, however few items
    match. ``Select=COUNT`` keeps the responses small but not cheaper. The scan stops after
    ``max_pages`` pages (20 MB by default) and then reports a lower bound (``complete=False``); a
    sparse index on failure items would turn this into a Query if it ever needs to be exact on big
    tables.
    """

    def __init__(self, client: DynamoDBClient, table_name: str, *, max_pages: int = DEFAULT_FAILURE_SCAN_PAGES) -> None:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self._db = client
        self._table = table_name
        self._max_pages = max_pages

    def count_since(self, cutoff: datetime) -> FailureCount:
        """Failure items whose ``last_failure`` is at or after ``cutoff``.

        ``last_failure`` is stored as UTC ISO 8601 text (``DynamoFailureLog``), which sorts in time
        order, so the comparison happens in the filter. Raises StatusProbeError.
        """
        params: dict[str, Any] = {
            "TableName": self._table,
            "Select": "COUNT",
            "FilterExpression": "begins_with(#pk, :failure) AND #last_failure >= :cutoff",
            "ExpressionAttributeNames": {"#pk": "pk", "#last_failure": "last_failure"},
            "ExpressionAttributeValues": {
                ":failure": {"S": FAILURE_PK_PREFIX},
                ":cutoff": {"S": cutoff.astimezone(UTC).isoformat()},
            },
        }
        count = 0
        for _ in range(self._max_pages):
            try:
                page = self._db.scan(**params)
            except ClientError as exc:
                raise _probe_error(exc, "DynamoDB Scan for failures") from exc
            count += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return FailureCount(count=count, complete=True)
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return FailureCount(count=count, complete=False)


class DynamoProgressReader:
    """ProgressSource over the ``RULE#<id>`` / ``PROGRESS`` item: one GetItem per rule."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._progress = DynamoProgress(client, table_name)

    def read(self, rule_id: str) -> RuleProgress | None:
        """None before the rule's first sync. Raises StateStoreError."""
        item = self._progress.read(rule_id)
        if not item:
            return None
        return RuleProgress(
            objects_copied=int(item.get("objects_copied", 0)),
            bytes_copied=int(item.get("bytes_copied", 0)),
            deletes_applied=int(item.get("deletes_applied", 0)),
            skipped=int(item.get("skipped", 0)),
            last_sync_at=_time(item.get("last_sync_at")),
            last_event_time=_time(item.get("last_event_time")),
        )


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
