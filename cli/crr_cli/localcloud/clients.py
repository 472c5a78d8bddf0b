"""boto3 clients for the local cloud's endpoint (test credentials, cheap checksums, cached)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

LOCAL_ACCESS_KEY_ID = "testing"
LOCAL_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - moto's well-known dummy credentials

# boto3's default request checksums cost about a third of moto's throughput (DESIGN §6).
LOCAL_CLIENT_CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=32,
)


class ClientFactory:
    """Builds and caches one boto3 client per (service, region) against one endpoint.

    boto3 clients are thread-safe, so the cached clients may be shared across threads.
    """

    def __init__(self, endpoint_url: str, default_region: str = "us-east-1") -> None:
        self.endpoint_url = endpoint_url
        self.default_region = default_region
        self._session = boto3.session.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            region_name=default_region,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, region: str | None = None) -> Any:
        """Return the cached client for `service` in `region` (default region when None)."""
        key = (service, region or self.default_region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(
                    service,  # type: ignore[call-overload]
                    region_name=key[1],
                    endpoint_url=self.endpoint_url,
                    config=LOCAL_CLIENT_CONFIG,
                )
            return self._clients[key]
