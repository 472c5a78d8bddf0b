"""Fault injection for the local cloud's Lambda workers: a seam of ours, not an edit of the emulator.

When a worker starts with ``CRR_LOCAL_FAULTS=<control file>``, every botocore API call made by the
function first consults the control file (JSON, re-read when it changes), which a test rewrites to
move between phases:

    {"mode": "none"}
    {"mode": "flaky", "rate": 0.1, "buckets": ["dst"], "seed": 7}       500 / 503 SlowDown / read timeouts
    {"mode": "outage", "buckets": ["dst"], "code": "AccessDenied"}     every call on those buckets fails
    {"mode": "outage", "services": ["dynamodb"], "code": "InternalServerError"}   every DynamoDB call fails
    {"mode": "hang", "services": ["dynamodb"]}      every DynamoDB request hangs until its read timeout

Calls are chosen by ``buckets`` (S3 calls whose ``Bucket`` parameter is one of them: the destination
side) or by ``services`` (every call of those services, by botocore's service name: ``dynamodb``,
``sqs``, ...), narrowed by ``"operations": ["UploadPartCopy", ...]`` to those operations, and by
``"prefixes": ["b/"]`` to calls whose ``Prefix`` parameter starts with one of them (listings).

``hang`` is a server that takes the request and never answers: each HTTP attempt waits for its read
timeout (the one the function's own code set for it, else the client's) and fails with botocore's
``ReadTimeoutError``, which the client then retries as it would on AWS. It applies to ``services``
only (a request on the wire no longer names its bucket parameter). Each injected fault is counted in
``<control file>.<pid>.counts`` so the test can report what it did.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from botocore.client import BaseClient
from botocore.endpoint import Endpoint
from botocore.exceptions import ClientError, ReadTimeoutError

FAULTS_VARIABLE = "CRR_LOCAL_FAULTS"
_TRANSIENT = (
    ("InternalError", 500, "We encountered an internal error."),
    ("SlowDown", 503, "Please reduce your request rate."),
)
_STATUS = {
    "AccessDenied": 403,
    "NoSuchBucket": 404,
    # DynamoDB's answers to a failing or overloaded service.
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "ThrottlingException": 400,
    "ProvisionedThroughputExceededException": 400,
}
# What a hung request waits when neither the call nor the client says (botocore's default).
DEFAULT_READ_TIMEOUT_SECONDS = 60.0


class _Control:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._counts_path = Path(f"{path}.{os.getpid()}.counts")
        self._mtime = -1.0
        self._settings: dict[str, Any] = {"mode": "none"}
        self._counts: dict[str, int] = {}
        self._rng = random.Random()
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            return {"mode": "none"}
        if mtime != self._mtime:
            self._settings = json.loads(self._path.read_text(encoding="utf-8"))
            self._mtime = mtime
            self._rng.seed(f"{self._settings.get('seed', 0)}-{os.getpid()}")
        return self._settings

    def fault_for(self, service: str, operation: str, params: dict[str, Any]) -> Exception | None:
        with self._lock:
            settings = self.settings()
            if settings.get("mode") == "hang" or not _targeted(settings, service, operation, params):
                return None
            if settings["mode"] == "outage":
                code = str(settings.get("code", "AccessDenied"))
                return self._count(code, _client_error(code, _STATUS.get(code, 403), "injected outage", operation))
            if self._rng.random() >= float(settings.get("rate", 0.1)):
                return None
            choice = self._rng.randrange(3)
            if choice == 2:
                return self._count("ReadTimeout", ReadTimeoutError(endpoint_url="injected://destination"))
            code, status, message = _TRANSIENT[choice]
            return self._count(code, _client_error(code, status, message, operation))

    def hangs(self, service: str) -> bool:
        """Whether a request of ``service`` now on its way to the wire should hang (mode ``hang``)."""
        with self._lock:
            settings = self.settings()
            if settings.get("mode") != "hang" or service not in settings.get("services", []):
                return False
            self._tally("Hang")
            return True

    def _count(self, kind: str, error: Exception) -> Exception:
        self._tally(kind)
        return error

    def _tally(self, kind: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._counts_path.write_text(json.dumps(self._counts), encoding="utf-8")


def _targeted(settings: dict[str, Any], service: str, operation: str, params: dict[str, Any]) -> bool:
    """Whether the settings inject faults into this call at all."""
    if settings.get("mode", "none") == "none":
        return False
    if service not in settings.get("services", []) and params.get("Bucket") not in settings.get("buckets", []):
        return False
    if "operations" in settings and operation not in settings["operations"]:
        return False
    return "prefixes" not in settings or str(params.get("Prefix", "")).startswith(tuple(settings["prefixes"]))


def _client_error(code: str, status: int, message: str, operation: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


def install_from_environment() -> bool:
    """Wrap botocore's API call in this process if ``CRR_LOCAL_FAULTS`` names a control file."""
    path = os.environ.get(FAULTS_VARIABLE)
    if not path:
        return False
    control = _Control(Path(path))
    original = BaseClient._make_api_call  # type: ignore[attr-defined]
    original_send = Endpoint._send  # type: ignore[attr-defined]

    def make_api_call(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        fault = control.fault_for(self.meta.service_model.service_name, operation_name, api_params)
        if fault is not None:
            raise fault
        return original(self, operation_name, api_params)

    def send(self: Endpoint, request: Any) -> Any:
        # Below botocore's retries and its before-send handlers, where an attempt's read timeout is final.
        if control.hangs(self._endpoint_prefix):  # type: ignore[attr-defined]
            time.sleep(_read_timeout(self, request))
            raise ReadTimeoutError(endpoint_url=str(request.url))
        return original_send(self, request)

    BaseClient._make_api_call = make_api_call  # type: ignore[attr-defined]
    Endpoint._send = send  # type: ignore[attr-defined]
    return True


def _read_timeout(endpoint: Endpoint, request: Any) -> float:
    """The read timeout this attempt would wait for: the request's own (set per attempt by a before-send
    handler, as crr's deadline does), else the client's configured one."""
    context = getattr(request, "context", None) or {}
    seconds = context.get("read_timeout")
    if seconds is None:
        timeout = getattr(endpoint.http_session, "_timeout", None)  # (connect, read), or urllib3's Timeout
        seconds = timeout[1] if isinstance(timeout, tuple) else getattr(timeout, "read_timeout", timeout)
    return float(seconds if seconds is not None else DEFAULT_READ_TIMEOUT_SECONDS)


def injected_counts(control_file: Path) -> dict[str, int]:
    """Faults injected so far by every worker using ``control_file``, by kind."""
    total: dict[str, int] = {}
    for counts in control_file.parent.glob(f"{control_file.name}.*.counts"):
        for kind, count in json.loads(counts.read_text(encoding="utf-8")).items():
            total[kind] = total.get(kind, 0) + int(count)
    return total
