"""ReplicateFunction: SQS batch of S3 change notifications → replicas in the destination region."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from crr.observability import logger, metrics, tracer
from crr.runtime import replication_service

processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    service = replication_service()

    def apply(record: SQSRecord) -> None:
        service.apply_message(record.body, record.message_id)

    with service.batch():
        return process_partial_response(event=event, record_handler=apply, processor=processor, context=context)
