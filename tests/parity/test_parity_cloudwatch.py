"""Parity: a function's EMF log lines become CloudWatch metrics on the local cloud, as on AWS (`log_metrics`).

AWS: "Specification: Embedded metric format",
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
CloudWatch Logs extracts the metrics of every log event that is an EMF document, with no call by the
function. moto alone has no such path: metrics crr's functions publish through Powertools never
reached its CloudWatch, so every test here fails on moto alone (no datapoint ever appears).
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.cloud import LocalCloud

pytestmark = pytest.mark.integration

REGION = "us-west-1"
STACK = "parity-emf"

# A function that writes the lines it is given to its log (stdout), as Powertools' Metrics does.
HANDLER = """
def lambda_handler(event, context):
    for line in event["lines"]:
        print(line, flush=True)
    return {"written": len(event["lines"])}
"""

TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: a function that logs what it is given (EMF parity)
Resources:
  LoggingFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.11
      Timeout: 5
      CodeUri: logging/
      Handler: handler.lambda_handler
"""


@pytest.fixture(scope="module")
def log_lines(local_cloud: LocalCloud, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., None]:
    """Deploys the logging function once; call the result with documents to have it log them."""
    project: Path = tmp_path_factory.mktemp("emf-parity")
    (project / "logging").mkdir()
    (project / "logging" / "handler.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    (project / "template.yaml").write_text(TEMPLATE, encoding="utf-8")
    local_cloud.deploy(project / "template.yaml", STACK, REGION, {})

    def log(*documents: Any) -> None:
        lines = [document if isinstance(document, str) else json.dumps(document) for document in documents]
        invocation = local_cloud.invoke(f"{STACK}/LoggingFunction", {"lines": lines})
        assert invocation.ok, invocation.error

    return log


def emf(namespace: str, at: datetime, dimension_sets: list[list[str]], **members: Any) -> dict[str, Any]:
    """An EMF document with one directive: ``members`` holds its dimension values and metric values;
    every member whose value is numeric (or a list) is declared a metric of unit Count."""
    metrics = [{"Name": name, "Unit": "Count"} for name, value in members.items() if not isinstance(value, str)]
    return {
        "_aws": {
            "Timestamp": int(at.timestamp() * 1000),
            "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": dimension_sets, "Metrics": metrics}],
        },
        **members,
    }


def statistics(
    cloud: LocalCloud, namespace: str, name: str, dimensions: dict[str, str], around: datetime
) -> list[tuple[datetime, float, float]]:
    """(minute, Sum, SampleCount) of the metric with exactly these dimensions, per minute around ``around``."""
    metric = {
        "Namespace": namespace,
        "MetricName": name,
        "Dimensions": [{"Name": key, "Value": value} for key, value in dimensions.items()],
    }
    queries = [
        {"Id": stat.lower(), "MetricStat": {"Metric": metric, "Period": 60, "Stat": stat}, "ReturnData": True}
        for stat in ("Sum", "SampleCount")
    ]
    minute = around.replace(second=0, microsecond=0)  # periods start on whole minutes, as CloudWatch's do
    answer = cloud.client("cloudwatch", REGION).get_metric_data(
        MetricDataQueries=queries,
        StartTime=minute - timedelta(minutes=5),
        EndTime=minute + timedelta(minutes=5),
        ScanBy="TimestampAscending",
    )
    results = {result["Id"]: result for result in answer["MetricDataResults"]}
    return [
        (moment, total, count)
        for moment, total, count in zip(
            results["sum"]["Timestamps"], results["sum"]["Values"], results["samplecount"]["Values"], strict=True
        )
    ]


def test_an_emf_document_in_a_functions_log_becomes_one_metric_per_dimension_set(
    local_cloud: LocalCloud, log_lines: Callable[..., None], eventually: Callable[..., Any]
) -> None:
    """Each metric of a directive is published once per dimension set, with the document's timestamp;
    an array of values is that many samples."""
    # Given an EMF document two minutes old: metric Failures = [1, 2, 2] under two dimension sets
    namespace, service = f"parity-{uuid.uuid4().hex[:8]}", f"crr-{uuid.uuid4().hex[:8]}"
    at = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=2)
    document = emf(namespace, at, [["service"], ["rule", "service"]], service=service, rule="r1", Failures=[1, 2, 2])
    # When the function writes it to its log
    log_lines(document)
    # Then CloudWatch holds the metric for each dimension set, in the document's minute: Sum 5 of 3 samples
    minute = at.replace(second=0)
    per_service = eventually(
        lambda: statistics(local_cloud, namespace, "Failures", {"service": service}, at),
        timeout=15,
        what="the metric extracted from the log",
    )
    assert per_service == [(minute, 5.0, 3.0)]
    per_rule = statistics(local_cloud, namespace, "Failures", {"service": service, "rule": "r1"}, at)
    assert per_rule == [(minute, 5.0, 3.0)]


def test_log_lines_that_are_not_valid_emf_documents_yield_no_metric(
    local_cloud: LocalCloud, log_lines: Callable[..., None], eventually: Callable[..., Any]
) -> None:
    """The root must hold every member a directive names (dimensions as strings, metrics as numbers);
    a log event that is no EMF document, or breaks the rules, is kept as a log event only."""
    # Its own dimension value too: moto's GetMetricData ignores the namespace once dimensions are given.
    namespace, service, now = f"parity-{uuid.uuid4().hex[:8]}", f"crr-{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    dimension = {"service": service}
    # Given log lines: plain JSON, an EMF document naming a metric it lacks, one whose dimension is a
    # number, one whose metric is text, then a valid document for another metric (the sentinel)
    missing_metric = emf(namespace, now, [["service"]], service=service, Failures=1)
    del missing_metric["Failures"]
    numeric_dimension = emf(namespace, now, [["service"]], service=service, Failures=1)
    numeric_dimension["service"] = 7
    text_metric = emf(namespace, now, [["service"]], service=service, Failures=1)
    text_metric["Failures"] = "one"
    sentinel = emf(namespace, now, [["service"]], service=service, Sentinel=1)
    # When the function logs them in that order
    log_lines({"level": "INFO", "Failures": 1, "service": service}, missing_metric, numeric_dimension, text_metric)
    log_lines("not json at all {", sentinel)
    # Then the sentinel arrives (lines are forwarded in log order, so the others were read before it)
    # and nothing else was extracted
    eventually(lambda: statistics(local_cloud, namespace, "Sentinel", dimension, now), timeout=15, what="the sentinel")
    assert statistics(local_cloud, namespace, "Failures", dimension, now) == []
