"""boto3 clients for the local cloud's endpoints (test credentials, cheap checksums, cached).

The local cloud serves DynamoDB (and DynamoDB Streams, whose data lives with the tables) from a
second moto process, everything else from the main one. `ROUTED_SERVICES` names the services that
go elsewhere than the main endpoint, and `endpoint_environment` spells the routing the way the AWS
SDKs and CLI read it: `AWS_ENDPOINT_URL` plus the service-specific `AWS_ENDPOINT_URL_<SERVICE ID>`,
which boto3 prefers over the global one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

LOCAL_ACCESS_KEY_ID = "testing"
LOCAL_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - moto's well-known dummy credentials

# boto3 service name -> the service-specific endpoint variable (AWS_ENDPOINT_URL_ + the service
# id, upper case, spaces as underscores), for the services the local cloud routes off the main
# endpoint. DynamoDB Streams reads the tables' own backend, so it goes wherever DynamoDB goes.
ROUTED_SERVICES: Mapping[str, str] = {
    "dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
    "dynamodbstreams": "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
}

# boto3's default request checksums cost about a third of moto's throughput (DESIGN §6).
LOCAL_CLIENT_CONFIG = Config(
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"mode": "standard", "max_attempts": 3},
    max_pool_connections=32,
)


def endpoint_environment(endpoint_url: str, service_endpoints: Mapping[str, str]) -> dict[str, str]:
    """`AWS_ENDPOINT_URL` and the service-specific variable of each routed service.

    Raises KeyError for a service in `service_endpoints` that `ROUTED_SERVICES` does not know.
    """
    environment = {"AWS_ENDPOINT_URL": endpoint_url}
    for service, url in service_endpoints.items():
        environment[ROUTED_SERVICES[service]] = url
    return environment


class ClientFactory:
    """Builds and caches one boto3 client per (service, region) against the local endpoints.

    `service_endpoints` maps the services served elsewhere than `endpoint_url` (boto3 service
    name -> endpoint). boto3 clients are thread-safe, so the cached clients may be shared across
    threads.
    """

    def __init__(
        self,
        endpoint_url: str,
        default_region: str = "us-east-1",
        service_endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.default_region = default_region
        self.service_endpoints = dict(service_endpoints or {})
        self._session = boto3.session.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
            region_name=default_region,
        )
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def endpoint_for(self, service: str) -> str:
        """The endpoint that serves `service` (boto3 service name)."""
        return self.service_endpoints.get(service, self.endpoint_url)

    def role_client(self, service: str, region: str, credentials: Mapping[str, str]) -> Any:
        """A new client for `service` in `region` signed with a role session's `credentials`
        (AccessKeyId, SecretAccessKey, SessionToken), e.g. an event source mapping's."""
        return boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region,
        ).client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_for(service),
            config=LOCAL_CLIENT_CONFIG,
        )

    def client(self, service: str, region: str | None = None) -> Any:
        """Return the cached client for `service` in `region` (default region when None)."""
        key = (service, region or self.default_region)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._session.client(
                    service,  # type: ignore[call-overload]
                    region_name=key[1],
                    endpoint_url=self.endpoint_for(service),
                    config=LOCAL_CLIENT_CONFIG,
                )
            return self._clients[key]
