"""ReplicateFunction: SQS batch of S3 change notifications → replicas in the destination region."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.composition import replication_message_handler
from crr.message_handling import PartialItemFailures, ReplicationMessageHandler
from crr.models import QueueMessage
from crr.observability import logger, metrics, tracer

# A batch whose every record failed is answered with every id listed, as any partial failure is:
# raising instead would skip settle() (deferred messages never handed back) and fail the invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(
    event: dict[str, Any], context: LambdaContext, message_handler: ReplicationMessageHandler | None = None
) -> PartialItemFailureResponse:
    """``message_handler`` is for tests; Lambda passes none, and the environment's is used."""
    message_handler = message_handler or replication_message_handler()

    def handle(record: SQSRecord) -> None:
        message_handler.handle(
            QueueMessage(
                message_id=record.message_id,
                body=record.body,
                receipt_handle=record.receipt_handle,
                receive_count=int(record.attributes.approximate_receive_count or 1),
                first_received_at=_first_received_at(record),
            )
        )

    with message_handler.batch(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000):
        response = process_partial_response(event=event, record_handler=handle, processor=processor, context=context)
        return cast(PartialItemFailureResponse, message_handler.settle(cast(PartialItemFailures, response)))


def _first_received_at(record: SQSRecord) -> datetime | None:
    """SQS's ApproximateFirstReceiveTimestamp (epoch milliseconds), when the event carries it."""
    stamp = record.attributes.get("ApproximateFirstReceiveTimestamp")
    return datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else None
