"""What CloudWatch Logs does with a Lambda function's log: metrics from embedded metric format (EMF).

On AWS, whatever a function writes to stdout or stderr becomes log events in CloudWatch Logs, and
CloudWatch Logs turns every log event that is an EMF document into CloudWatch metrics: no call by
the function, no permission of its role, nothing the function's other dependencies (its table) can
break. crr's functions publish all their metrics that way (Powertools Metrics), and `crr status`,
the alarms and the dashboard read them back. moto has no such path (its Lambda runs nothing without
Docker, and its Logs extracts nothing), so locally those metrics never existed.

`LogMetrics` closes that: it follows the function logs the local Lambda executor writes and, like
CloudWatch Logs, puts each valid EMF document's metrics into the main moto process's CloudWatch
(PutMetricData in the function's region, as the local cloud's administrator: the function's role
is not involved, as on AWS). It reads the logs a few times a second, so metrics arrive a fraction of
a second after the line is written (on AWS: typically within a minute or two).

Specification: "Specification: Embedded metric format",
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
What it takes from it:
- a log event is an EMF document when it is one JSON object whose ``_aws`` member holds
  ``Timestamp`` (milliseconds since the epoch) and ``CloudWatchMetrics``, an array of metric
  directives; other log events stay plain log events;
- a directive names a ``Namespace``, ``Dimensions`` (an array of dimension sets, each an array of
  member names, at most 30) and ``Metrics`` (at most 100 definitions: ``Name``, optional ``Unit``
  and ``StorageResolution``);
- every name a directive references is a member of the root: a dimension's value is a string, a
  metric's value a number or an array of at most 100 numbers (each one a sample);
- each metric is published once per dimension set, with that set's dimensions and the document's
  timestamp; a document breaking these rules yields no metric at all (CloudWatch Logs counts it as
  an EMF validation error and keeps the event).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Limits of the specification, and of PutMetricData (datums per request).
MAX_DIMENSIONS_PER_SET = 30
MAX_METRICS_PER_DIRECTIVE = 100
MAX_VALUES_PER_METRIC = 100
MAX_DATUMS_PER_REQUEST = 1000
STORAGE_RESOLUTIONS = (1, 60)
POLL_INTERVAL_S = 0.2

# put(region, namespace, metric data): one PutMetricData request.
PutMetricData = Callable[[str, str, list[dict[str, Any]]], None]

_log = logging.getLogger(__name__)


class InvalidEmfError(ValueError):
    """The log event looks like an EMF document but breaks the specification: no metric comes of it."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _samples(name: str, value: object) -> list[float]:
    values = value if isinstance(value, list) else [value]
    numbers = [float(item) for item in values if isinstance(item, int | float) and _is_number(item)]
    if not numbers or len(numbers) != len(values) or len(numbers) > MAX_VALUES_PER_METRIC:
        raise InvalidEmfError(f"metric {name!r} is not a number or an array of 1-{MAX_VALUES_PER_METRIC} numbers")
    return numbers


def _dimension_sets(root: Mapping[str, Any], directive: Mapping[str, Any]) -> list[list[dict[str, str]]]:
    sets = directive.get("Dimensions")
    if not isinstance(sets, list) or not all(isinstance(names, list) for names in sets):
        raise InvalidEmfError("Dimensions is not an array of dimension sets")
    resolved: list[list[dict[str, str]]] = []
    for names in sets:
        if len(names) > MAX_DIMENSIONS_PER_SET:
            raise InvalidEmfError(f"a dimension set has more than {MAX_DIMENSIONS_PER_SET} dimensions")
        dimensions = []
        for name in names:
            if not isinstance(name, str) or not isinstance(root.get(name), str):
                raise InvalidEmfError(f"dimension {name!r} does not name a string member of the document")
            dimensions.append({"Name": name, "Value": root[name]})
        resolved.append(dimensions)
    # A directive without dimension sets publishes its metrics without dimensions.
    return resolved or [[]]


def _datum(root: Mapping[str, Any], definition: object, timestamp: datetime) -> dict[str, Any]:
    if not isinstance(definition, Mapping) or not isinstance(definition.get("Name"), str):
        raise InvalidEmfError("a metric definition has no Name")
    name = definition["Name"]
    if name not in root:
        raise InvalidEmfError(f"metric {name!r} is not a member of the document")
    # PutMetricData wants each distinct value once, with how often it occurred.
    counts = Counter(_samples(name, root[name]))
    datum: dict[str, Any] = {
        "MetricName": name,
        "Timestamp": timestamp,
        "Values": list(counts),
        "Counts": [float(count) for count in counts.values()],
    }
    if "Unit" in definition:
        if not isinstance(definition["Unit"], str):
            raise InvalidEmfError(f"metric {name!r} has a Unit that is not a string")
        datum["Unit"] = definition["Unit"]
    if "StorageResolution" in definition:
        if definition["StorageResolution"] not in STORAGE_RESOLUTIONS:
            raise InvalidEmfError(f"metric {name!r} has a StorageResolution other than 1 or 60")
        datum["StorageResolution"] = definition["StorageResolution"]
    return datum


def metric_data(document: object) -> list[tuple[str, list[dict[str, Any]]]]:
    """The metrics CloudWatch extracts from one log event: ``(namespace, MetricData)`` per directive.

    Returns [] for a log event that is not an EMF document (no ``_aws`` member). Raises
    InvalidEmfError for one that breaks the specification (no metric comes of it).
    """
    if not isinstance(document, Mapping) or "_aws" not in document:
        return []
    metadata = document["_aws"]
    if not isinstance(metadata, Mapping):
        raise InvalidEmfError("_aws is not an object")
    if not _is_number(metadata.get("Timestamp")):
        raise InvalidEmfError("_aws.Timestamp is not a number of milliseconds")
    directives = metadata.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        raise InvalidEmfError("_aws.CloudWatchMetrics is not an array")
    timestamp = datetime.fromtimestamp(metadata["Timestamp"] / 1000, UTC)
    extracted: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in directives:
        if not isinstance(directive, Mapping) or not isinstance(directive.get("Namespace"), str):
            raise InvalidEmfError("a metric directive has no Namespace")
        definitions = directive.get("Metrics")
        if not isinstance(definitions, list) or len(definitions) > MAX_METRICS_PER_DIRECTIVE:
            raise InvalidEmfError(f"Metrics is not an array of at most {MAX_METRICS_PER_DIRECTIVE} definitions")
        datums = [_datum(document, definition, timestamp) for definition in definitions]
        data = [
            {**datum, "Dimensions": dimensions}
            for dimensions in _dimension_sets(document, directive)
            for datum in datums
        ]
        extracted.append((directive["Namespace"], data))
    return extracted


def metrics_of_line(line: bytes) -> list[tuple[str, list[dict[str, Any]]]]:
    """``metric_data`` of one log line; [] for anything that is not a valid EMF document."""
    if b'"_aws"' not in line:  # the cheap test first: most lines are plain logs
        return []
    try:
        return metric_data(json.loads(line))
    except json.JSONDecodeError:
        return []  # not one JSON object: a plain log event
    except InvalidEmfError as error:
        _log.warning("EMF document rejected, no metric extracted: %s", error)
        return []


@dataclass
class _FollowedLog:
    region: str
    offset: int
    partial: bytes = b""


class LogMetrics:
    """Follows function logs and puts the metrics of their EMF documents into CloudWatch."""

    def __init__(self, put: PutMetricData, interval: float = POLL_INTERVAL_S) -> None:
        self._put = put
        self._interval = interval
        self._logs: dict[Path, _FollowedLog] = {}
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.documents = 0  # EMF documents whose metrics were put, for tests and curiosity

    def follow(self, log_path: Path, region: str) -> None:
        """Extract metrics from what is appended to ``log_path`` from now on (a function in ``region``).
        A log followed already keeps its place (a redeployed function writes on where it was)."""
        with self._lock:
            if log_path not in self._logs:
                offset = log_path.stat().st_size if log_path.exists() else 0
                self._logs[log_path] = _FollowedLog(region, offset)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-metrics", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following after one last read, so lines written before now are not lost."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.poll()

    def poll(self) -> int:
        """Read what was appended to every followed log since the last read; returns the number of EMF
        documents whose metrics were put."""
        with self._poll_lock:
            with self._lock:
                followed = list(self._logs.items())
            forwarded = 0
            for path, log in followed:
                for line in self._new_lines(path, log):
                    extracted = metrics_of_line(line)
                    if extracted and self._put_all(log.region, extracted):
                        forwarded += 1
            self.documents += forwarded
            return forwarded

    @staticmethod
    def _new_lines(path: Path, log: _FollowedLog) -> list[bytes]:
        try:
            with path.open("rb") as stream:
                stream.seek(log.offset)
                chunk = stream.read()
        except FileNotFoundError:
            return []
        log.offset += len(chunk)
        *lines, log.partial = (log.partial + chunk).split(b"\n")  # the last piece waits for its newline
        return lines

    def _put_all(self, region: str, extracted: list[tuple[str, list[dict[str, Any]]]]) -> bool:
        try:
            for namespace, data in extracted:
                for start in range(0, len(data), MAX_DATUMS_PER_REQUEST):
                    self._put(region, namespace, data[start : start + MAX_DATUMS_PER_REQUEST])
        except Exception as error:  # noqa: BLE001 - one refused document must not stop the follower
            _log.warning("EMF metrics could not be put into CloudWatch: %s", error)
            return False
        return True
