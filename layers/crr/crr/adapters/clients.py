"""Lazily built, per-region boto3 clients shared by a process (clients are thread-safe; sessions are not)."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from crr import deadline

if TYPE_CHECKING:
    # Dev-only stubs (pyproject's dev extras): the layer ships boto3 alone, so these never load at run time.
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

# The invocation's deadline cuts it per attempt (_bounded_by_the_deadline).
READ_TIMEOUT_SECONDS = 60.0
# Standard retry mode gives in-call retries with jittered backoff for throttling and 5xx. Checksums
# only when required: the replicator sends no payloads, and they cost CPU on every call.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=READ_TIMEOUT_SECONDS,
    max_pool_connections=50,
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
)


class ClientFactory:
    """Hands out one client per (service, region); endpoint and credentials come from the environment
    (``AWS_ENDPOINT_URL`` points everything at LocalStack or the embedded local cloud)."""

    def __init__(self, session: boto3.session.Session | None = None, config: Config = _CONFIG) -> None:
        self._session = session or boto3.session.Session()
        self._config = config
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    # One overload per service crr calls, so mypy checks every request's parameters and answer's use;
    # a service not listed here is a type error until its stubs are added to pyproject's dev extras.
    @overload
    def client(self, service: Literal["s3"], region: str) -> S3Client: ...
    @overload
    def client(self, service: Literal["dynamodb"], region: str) -> DynamoDBClient: ...
    @overload
    def client(self, service: Literal["sqs"], region: str) -> SQSClient: ...
    @overload
    def client(self, service: Literal["stepfunctions"], region: str) -> SFNClient: ...
    @overload
    def client(self, service: Literal["cloudwatch"], region: str) -> CloudWatchClient: ...
    @overload
    def client(self, service: Literal["kms"], region: str) -> KMSClient: ...
    @overload
    def client(self, service: Literal["events"], region: str) -> EventBridgeClient: ...
    @overload
    def client(self, service: Literal["cloudformation"], region: str) -> CloudFormationClient: ...
    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        found = self._clients.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._clients:
                client = self._session.client(service, region_name=region, config=self._config)  # type: ignore[call-overload]
                client.meta.events.register("before-send", _bounded_by_the_deadline)
                self._clients[key] = client
            return self._clients[key]


# An attempt with less time than this is not sent: it could not get an answer anyway.
MIN_CALL_SECONDS = 0.05


def _bounded_by_the_deadline(request: Any, event_name: str = "", **_: Any) -> None:
    """Before each attempt (retries included): cut its read timeout to the time the invocation has
    left, or refuse it (OutOfTimeError) when there is none, so a hung call fails in time for the
    failure to be recorded instead of being killed with the invocation."""
    seconds = deadline.seconds_for_a_call()
    if seconds == math.inf:
        return
    if seconds < MIN_CALL_SECONDS:
        operation = event_name.rpartition(".")[2] or "an AWS call"
        raise deadline.OutOfTimeError(f"no time left in this invocation for {operation} ({seconds:.2f}s)")
    context = getattr(request, "context", None)
    if context is not None:
        context["read_timeout"] = min(float(context.get("read_timeout") or READ_TIMEOUT_SECONDS), seconds)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
