"""ReplicateFunction: SQS batch of S3 change notifications → replicas in the destination region."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSEvent, SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.composition import replication_message_handler
from crr.message_handling import PartialItemFailures, ReplicationMessageHandler
from crr.models import QueueMessage
from crr.observability import logger, metrics, tracer

# Powertools' BatchProcessor hands records to its handler one at a time, and its AsyncBatchProcessor
# wants asyncio handlers (boto3 is synchronous). The message handler needs the whole batch at once, to
# group it by key and apply the groups concurrently, so it answers the partial batch response itself
# (the same ``batchItemFailures`` shape; a batch whose every record failed is answered the same way,
# as BatchProcessor(raise_on_entire_batch_failure=False) did, so deferred messages are still handed back).


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, message_handler: ReplicationMessageHandler | None = None
) -> PartialItemFailures:
    """``message_handler`` is for tests; Lambda passes none, and the environment's is used."""
    message_handler = message_handler or replication_message_handler()
    messages = [_queue_message(record) for record in SQSEvent(event).records]
    with message_handler.batch(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000):
        return message_handler.handle_batch(messages)


def _queue_message(record: SQSRecord) -> QueueMessage:
    return QueueMessage(
        message_id=record.message_id,
        body=record.body,
        receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count or 1),
        first_received_at=_first_received_at(record),
    )


def _first_received_at(record: SQSRecord) -> datetime | None:
    """SQS's ApproximateFirstReceiveTimestamp (epoch milliseconds), when the event carries it."""
    stamp = record.attributes.get("ApproximateFirstReceiveTimestamp")
    return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None
