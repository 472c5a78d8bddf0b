"""The local cloud's EMF extraction (`log_metrics`): which log lines become which PutMetricData, no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crr_cli.localcloud.lambda_.log_metrics import InvalidEmfError, LogMetrics, metric_data

# What Powertools Metrics writes for crr (see tests/unit/test_handler.py): one document, two dimension sets.
POWERTOOLS_DOCUMENT = {
    "_aws": {
        "Timestamp": 1764065730130,
        "CloudWatchMetrics": [
            {
                "Namespace": "crr",
                "Dimensions": [["service"], ["rule", "service"]],
                "Metrics": [{"Name": "ReplicationFailures", "Unit": "Count"}, {"Name": "BytesReplicated"}],
            }
        ],
    },
    "service": "crr-dev",
    "rule": "photos",
    "ReplicationFailures": [1.0, 1.0, 2.0],
    "BytesReplicated": 512,
    "message": "anything else the document carries is ignored",
}


def test_a_document_gives_each_metric_once_per_dimension_set_with_its_timestamp() -> None:
    # When the metrics of a Powertools document are extracted
    [(namespace, data)] = metric_data(POWERTOOLS_DOCUMENT)
    # Then each metric comes once per dimension set, at the document's time, values counted
    at = datetime.fromtimestamp(1764065730.130, UTC)
    assert namespace == "crr"
    assert [(datum["MetricName"], datum["Dimensions"]) for datum in data] == [
        ("ReplicationFailures", [{"Name": "service", "Value": "crr-dev"}]),
        ("BytesReplicated", [{"Name": "service", "Value": "crr-dev"}]),
        ("ReplicationFailures", [{"Name": "rule", "Value": "photos"}, {"Name": "service", "Value": "crr-dev"}]),
        ("BytesReplicated", [{"Name": "rule", "Value": "photos"}, {"Name": "service", "Value": "crr-dev"}]),
    ]
    failures = data[0]
    assert (failures["Values"], failures["Counts"], failures["Unit"], failures["Timestamp"]) == (
        [1.0, 2.0],
        [2.0, 1.0],
        "Count",
        at,
    )
    assert "Unit" not in data[1]


def test_a_log_event_that_is_no_emf_document_gives_nothing() -> None:
    assert metric_data({"level": "INFO", "message": "change reconciled", "ReplicationFailures": 1}) == []
    assert metric_data(["not", "an", "object"]) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["_aws"].pop("Timestamp"),
        lambda d: d["_aws"].update(CloudWatchMetrics={}),
        lambda d: d.pop("ReplicationFailures"),
        lambda d: d.update(ReplicationFailures="one"),
        lambda d: d.update(ReplicationFailures=[1.0] * 101),
        lambda d: d.update(ReplicationFailures=True),
        lambda d: d.update(service=7),
        lambda d: d["_aws"]["CloudWatchMetrics"][0].pop("Namespace"),
        lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(StorageResolution=5),
        lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Dimensions=[[f"d{n}" for n in range(31)]]),
    ],
)
def test_a_document_breaking_the_specification_gives_no_metric(breakage: Any) -> None:
    document = json.loads(json.dumps(POWERTOOLS_DOCUMENT))
    breakage(document)
    with pytest.raises(InvalidEmfError):
        metric_data(document)


def test_the_follower_reads_only_new_whole_lines_of_each_log(tmp_path: Path) -> None:
    # Given a log with an old document, followed from now on
    log = tmp_path / "stack-Function.log"
    log.write_text(json.dumps(POWERTOOLS_DOCUMENT) + "\n", encoding="utf-8")
    put: list[tuple[str, str, int]] = []
    follower = LogMetrics(lambda region, namespace, data: put.append((region, namespace, len(data))))
    follower.follow(log, "us-west-1")
    # When a plain line, a whole document and half of another are appended
    line = json.dumps(POWERTOOLS_DOCUMENT).encode()
    with log.open("ab") as stream:
        stream.write(b"START RequestId: 1\n" + line + b"\n" + line[:40])
    # Then only the whole new document is put (4 metrics: 2 names x 2 dimension sets)
    assert follower.poll() == 1
    assert put == [("us-west-1", "crr", 4)]
    # When the rest of the half line arrives, Then it is put too, once
    with log.open("ab") as stream:
        stream.write(line[40:] + b"\n")
    assert follower.poll() == 1
    assert follower.poll() == 0
    assert len(put) == 2
