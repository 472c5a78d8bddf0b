"""The composition root: the one place that builds the functions' domain objects from their settings
and the adapters (settings → adapters → domain objects).

What a warm Lambda container keeps between invocations (clients, the rule and ACL-mode caches, the
backfill copy pool, the live path's record pool) is cached here per process and per settings value;
``forget_warm_objects`` drops it, so a test never sees another test's warm objects.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from crr.adapters.backfill_s3 import S3FastCopier, backfill_clients
from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import (
    DynamoBackfillJobs,
    DynamoBreakerStore,
    DynamoFailureLog,
    DynamoLedger,
    DynamoProgress,
    DynamoRules,
    DynamoTombstones,
)
from crr.adapters.listing import S3Listing
from crr.adapters.notifications import ChangeRoute, S3BucketNotifications, WiringCheck
from crr.adapters.s3 import S3ObjectStore
from crr.adapters.sqs import SqsDeadLetterQueue, SqsFailedMessages, SqsKeyHandOver, SqsPeerNudges, SqsQueueSender
from crr.adapters.sqs_batch import SqsBatchSender
from crr.adapters.stepfunctions import StepFunctionsLargeCopies
from crr.backfill.engine import BackfillEngine
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillSteps
from crr.breaker import BreakerSettings, DeleteBreaker
from crr.failures import Backoff
from crr.key_ordered_batch import record_runner
from crr.large_copy import LargeCopier, LargeObjectSettings
from crr.message_handling import ReplicationMessageHandler
from crr.notification_wiring_check import WiringReport, WiringWatchSettings, check_wiring
from crr.replay import DeadLetters, ReplayReport, ReplayRequest
from crr.replication import Replicator
from crr.settings import FunctionSettings


@cache
def _clients() -> ClientFactory:
    return ClientFactory()


@cache
def _replicator_for(settings: FunctionSettings) -> Replicator:
    # Cached per settings value, so warm invocations reuse clients and the rule and ACL-mode caches,
    # and a changed environment (a new deployment) builds fresh ones.
    clients = _clients()
    dynamodb = clients.client("dynamodb", settings.region)
    return Replicator(
        rules=DynamoRules(dynamodb, settings.rules_table_name, cache_seconds=settings.rule_cache_seconds),
        objects=S3ObjectStore(clients),
        ledger=DynamoLedger(dynamodb, settings.rules_table_name),
        progress=DynamoProgress(dynamodb, settings.rules_table_name),
        progress_interval=settings.progress_flush_seconds,
        breaker=DeleteBreaker(DynamoBreakerStore(dynamodb, settings.rules_table_name), breaker_settings(settings)),
        tombstones=DynamoTombstones(
            lambda region: clients.client("dynamodb", region), settings.region, settings.rules_table_name
        ),
        nudges=SqsPeerNudges(lambda region: clients.client("sqs", region)),
        large_objects=large_object_settings(settings),
        large_copies=(
            StepFunctionsLargeCopies(
                clients.client("stepfunctions", settings.region), settings.large_copy_state_machine_arn
            )
            if settings.large_copy_state_machine_arn
            else None
        ),
    )


@cache
def _message_handler_for(settings: FunctionSettings) -> ReplicationMessageHandler:
    clients = _clients()
    dynamodb = clients.client("dynamodb", settings.region)
    replicator = _replicator_for(settings)
    failed_messages = SqsFailedMessages(
        clients.client("sqs", settings.region), settings.replication_queue_url, settings.dead_letter_queue_url
    )
    return ReplicationMessageHandler(
        replicator,
        DynamoFailureLog(dynamodb, settings.rules_table_name),
        failed_messages,
        Backoff(base_seconds=settings.retry_base_seconds),
        max_receive_count=settings.max_receive_count,
        runner=record_runner(settings.record_concurrency),
    )


def forget_warm_objects() -> None:
    """Drop every object kept warm in this process; the next invocation builds fresh ones. (A dropped
    backfill engine's idle copy threads exit once the engine is garbage collected.)"""
    for factory in (_clients, _replicator_for, _message_handler_for, _backfill_steps_for):
        factory.cache_clear()


def replication_message_handler() -> ReplicationMessageHandler:
    """The queue-message handler for the current environment. Raises ConfigurationError if it is incomplete."""
    return _message_handler_for(FunctionSettings.from_environment())


def dead_letters(clients: ClientFactory, region: str, table: str, dlq_url: str) -> DeadLetters:
    """The DLQ with the failure log that explains it (used by the ReplayFunction and the CLI)."""
    return DeadLetters(
        SqsDeadLetterQueue(clients.client("sqs", region), dlq_url),
        DynamoFailureLog(clients.client("dynamodb", region), table),
    )


def replay_dead_letters(request: ReplayRequest) -> ReplayReport:
    """Replay for the current environment. Raises ConfigurationError if it is incomplete."""
    settings = FunctionSettings.from_environment()
    clients = _clients()
    letters = dead_letters(clients, settings.region, settings.rules_table_name, settings.dead_letter_queue_url)
    return letters.replay(
        request, SqsQueueSender(clients.client("sqs", settings.region), settings.replication_queue_url)
    )


def breaker_settings(settings: FunctionSettings) -> BreakerSettings:
    return BreakerSettings(
        count=settings.delete_breaker_count,
        percent=settings.delete_breaker_percent,
        window_seconds=settings.delete_breaker_window_seconds,
    )


def large_object_settings(settings: FunctionSettings) -> LargeObjectSettings:
    return LargeObjectSettings(
        multipart_threshold=settings.multipart_threshold_bytes,
        preferred_part=settings.part_size_bytes,
        copy_bytes_per_second=settings.copy_bytes_per_second,
    )


def large_copier(function_seconds: float) -> LargeCopier:
    """The large-copy workflow's steps for the current environment; a batch is planned to take at most
    half of ``function_seconds`` (the function's time). Raises ConfigurationError if it is incomplete."""
    settings = FunctionSettings.from_environment()
    clients = _clients()
    return LargeCopier(
        S3ObjectStore(clients).uploads,
        S3ObjectStore(clients),
        SqsKeyHandOver(
            clients.client("sqs", settings.region), settings.replication_queue_url, settings.dead_letter_queue_url
        ),
        DynamoProgress(clients.client("dynamodb", settings.region), settings.rules_table_name),
        batch_bytes=large_object_settings(settings).batch_bytes(function_seconds),
    )


@cache
def _backfill_steps_for(settings: FunctionSettings) -> BackfillSteps:
    clients = backfill_clients()
    dynamodb = _clients().client("dynamodb", settings.region)
    replicator = _replicator_for(settings)
    engine = BackfillEngine(
        S3Listing(clients),
        S3FastCopier(clients, S3ObjectStore(clients)),
        DynamoLedger(dynamodb, settings.rules_table_name),
        reconciler(replicator),
        SqsBatchSender(_clients().client("sqs", settings.region), settings.replication_queue_url),
        concurrency=settings.backfill_concurrency,
        sse_kms_sources=settings.sse_kms_sources,
    )
    return BackfillSteps(
        engine,
        DynamoBackfillJobs(dynamodb, settings.rules_table_name),
        DynamoRules(dynamodb, settings.rules_table_name, cache_seconds=settings.rule_cache_seconds),
        live_scope=replicator.invocation_scope,
        copy_share=settings.backfill_concurrency,
        copy_bytes_per_second=settings.copy_bytes_per_second,
        max_workers=settings.backfill_max_ranges,
    )


def backfill_steps() -> BackfillSteps:
    """The backfill workflow's steps for the current environment (kept warm: clients and the copy pool).
    Raises ConfigurationError if the environment is incomplete."""
    return _backfill_steps_for(FunctionSettings.from_environment())


def watch_wiring(now: datetime) -> WiringReport:
    """The wiring check of every rule, for the current environment (the WiringWatchFunction's).

    Raises ConfigurationError when the environment is incomplete, StateStoreError when the rules
    cannot be read.
    """
    settings = WiringWatchSettings.from_environment()
    clients = _clients()
    rules = DynamoRules(clients.client("dynamodb", settings.region), settings.rules_table_name, cache_seconds=0)
    notifications = S3BucketNotifications(clients, ChangeRoute(settings.change_route), settings.source_changes_rule_arn)
    return check_wiring(rules, WiringCheck(notifications, settings.replication_queue_arn), now)
