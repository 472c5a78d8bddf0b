"""Wiring for the functions: settings → adapters → domain objects, kept warm per process."""

from __future__ import annotations

from functools import cache

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoLedger, DynamoProgress, DynamoRules
from crr.adapters.s3 import S3ObjectStore
from crr.replication import Replicator
from crr.service import ReplicationService
from crr.settings import FunctionSettings


@cache
def _clients() -> ClientFactory:
    return ClientFactory()


@cache
def _service_for(settings: FunctionSettings) -> ReplicationService:
    # Cached per settings value, so warm invocations reuse clients and the rule and ACL-mode caches,
    # and a changed environment (a new deployment) builds fresh ones.
    clients = _clients()
    dynamodb = clients.client("dynamodb", settings.region)
    replicator = Replicator(
        rules=DynamoRules(dynamodb, settings.rules_table_name, cache_seconds=settings.rule_cache_seconds),
        objects=S3ObjectStore(clients),
        ledger=DynamoLedger(dynamodb, settings.rules_table_name),
        progress=DynamoProgress(dynamodb, settings.rules_table_name),
        progress_interval=settings.progress_flush_seconds,
    )
    return ReplicationService(replicator)


def replication_service() -> ReplicationService:
    """The service for the current environment. Raises ConfigurationError if it is incomplete."""
    return _service_for(FunctionSettings.from_environment())
