"""Lazily built, per-region boto3 clients shared by a process (clients are thread-safe; sessions are not)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

# Standard retry mode gives in-call retries with jittered backoff for throttling and 5xx. Checksums
# only when required: the replicator sends no payloads, and they cost CPU on every call.
_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
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

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        found = self._clients.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(service, region_name=region, config=self._config)  # type: ignore[call-overload]
            return self._clients[key]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
