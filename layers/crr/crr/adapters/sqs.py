"""SQS for failure handling: delay a failed record's next delivery, dead-letter a hopeless one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.errors import CrrError
from crr.events import LARGE_COPY_CONFIGURATION_ID, NUDGE_CONFIGURATION_ID, change_notice
from crr.failures import FailureReason, FailureRecord
from crr.models import CopyRequest, QueueMessage, RawDeadLetter
from crr.rules import ReplicationRule

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, SendMessageBatchRequestEntryTypeDef


# Message attributes carrying a dead-lettered message's reason (``crr dlq list`` reads them).
REASON_ATTRIBUTES = (
    "crr-error-code",
    "crr-error-kind",
    "crr-error-message",
    "crr-rule",
    "crr-bucket",
    "crr-key",
    "crr-attempts",
    "crr-first-failure",
    "crr-last-failure",
    "crr-original-message-id",
)


# SQS's message limit (1 MiB) less room for the reason attributes.
DEAD_LETTER_BODY_BYTES = 1024 * 1024 - 16 * 1024
TRUNCATED_BODY_BYTES = 64 * 1024


class QueueError(CrrError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def reason_attributes(record: FailureRecord) -> dict[str, MessageAttributeValueTypeDef]:
    values = {
        "crr-error-code": record.reason.code,
        "crr-error-kind": record.reason.kind.value,
        "crr-error-message": record.reason.message[:1000] or "-",
        "crr-rule": record.rule_id,
        "crr-bucket": record.bucket,
        "crr-key": record.key,
        "crr-attempts": str(record.attempts),
        "crr-first-failure": record.first_failure.isoformat(),
        "crr-last-failure": record.last_failure.isoformat(),
        "crr-original-message-id": record.message_id,
    }
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items() if value}


class SqsFailedMessages:
    def __init__(self, client: SQSClient, queue_url: str, dead_letter_queue_url: str) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._dlq_url = dead_letter_queue_url

    def retry_later(self, message: QueueMessage, delay_seconds: int) -> None:
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=delay_seconds
            )
        except ClientError as exc:
            # The record still fails and comes back after the queue's own visibility timeout.
            raise QueueError(f"ChangeMessageVisibility failed: {error_message(exc)}", error_code(exc)) from exc

    def hand_back(self, message: QueueMessage, bodies: list[str]) -> None:
        """SendMessageBatch in requests of at most 10 messages and HAND_BACK_REQUEST_BYTES; entries SQS
        failed on its side are sent once more."""
        for batch in _batches(bodies):
            pending = {str(index): body for index, body in enumerate(batch)}
            for _ in range(2):
                entries: list[SendMessageBatchRequestEntryTypeDef] = [
                    {"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()
                ]
                try:
                    answer = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
                except ClientError as exc:
                    raise QueueError(
                        f"handing records of {message.message_id} back failed: {error_message(exc)}", error_code(exc)
                    ) from exc
                pending = {entry["Id"]: pending[entry["Id"]] for entry in answer.get("Failed", [])}
                if not pending:
                    break
            if pending:
                raise QueueError(
                    f"handing records of {message.message_id} back left {len(pending)} message(s) unsent",
                    "HandBackIncomplete",
                )

    def dead_letter(self, message: QueueMessage, record: FailureRecord) -> None:
        body, attributes = message.body, reason_attributes(record)
        if len(body.encode("utf-8")) > DEAD_LETTER_BODY_BYTES:
            # Nothing that large can be replayed anyway; keep its start and the reason for the operator.
            body = body.encode("utf-8")[:TRUNCATED_BODY_BYTES].decode("utf-8", errors="ignore")
            attributes["crr-body-truncated"] = {"DataType": "String", "StringValue": str(len(message.body))}
        try:
            self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=body, MessageAttributes=attributes)
        except ClientError as exc:
            raise QueueError(f"SendMessage to the DLQ failed: {error_message(exc)}", error_code(exc)) from exc


# SendMessageBatch: at most 10 entries, and (conservatively, SQS's former limit) 256 KiB in all.
HAND_BACK_ENTRIES = 10
HAND_BACK_REQUEST_BYTES = 256 * 1024


def _batches(bodies: list[str]) -> list[list[str]]:
    batches: list[list[str]] = []
    size = 0
    for body in bodies:
        length = len(body.encode("utf-8"))
        if not batches or len(batches[-1]) >= HAND_BACK_ENTRIES or size + length > HAND_BACK_REQUEST_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(body)
        size += length
    return batches


class SqsDeadLetterQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def receive(self, max_messages: int, hold_seconds: int, wait_seconds: int) -> list[RawDeadLetter]:
        try:
            answer = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=max_messages,
                VisibilityTimeout=hold_seconds,
                WaitTimeSeconds=wait_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp"],
            )
        except ClientError as exc:
            raise QueueError(f"ReceiveMessage from the DLQ failed: {error_message(exc)}", error_code(exc)) from exc
        return [
            RawDeadLetter(
                message_id=message["MessageId"],
                receipt_handle=message["ReceiptHandle"],
                body=message["Body"],
                sent_at=datetime.fromtimestamp(int(message["Attributes"]["SentTimestamp"]) / 1000, UTC),
                attributes={
                    name: value.get("StringValue", "") for name, value in message.get("MessageAttributes", {}).items()
                },
            )
            for message in answer.get("Messages", [])
        ]

    def visible_count(self) -> int:
        try:
            answer = self._sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["ApproximateNumberOfMessages"])
        except ClientError as exc:
            raise QueueError(f"GetQueueAttributes of the DLQ failed: {error_message(exc)}", error_code(exc)) from exc
        return int(answer["Attributes"]["ApproximateNumberOfMessages"])

    def delete(self, receipt_handle: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            raise QueueError(f"DeleteMessage from the DLQ failed: {error_message(exc)}", error_code(exc)) from exc

    def release(self, receipt_handle: str) -> None:
        try:
            self._sqs.change_message_visibility(QueueUrl=self._url, ReceiptHandle=receipt_handle, VisibilityTimeout=0)
        except ClientError:
            return  # it becomes visible again when the hold expires anyway


class SqsPeerNudges:
    """PeerNudges over SQS: an S3-shaped change notice for the destination key, sent to the peer rule's
    queue in the destination region (the peer reconciles it like any record without a sequencer)."""

    def __init__(
        self, client_for: Callable[[str], SQSClient], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ):
        self._client_for = client_for
        self._clock = clock

    def nudge(self, rule: ReplicationRule, key: str) -> None:
        if rule.peer is None:
            return
        body = change_notice(
            rule.destination_bucket,
            rule.destination_region,
            key,
            configuration_id=NUDGE_CONFIGURATION_ID,
            at=self._clock(),
        )
        try:
            self._client_for(rule.destination_region).send_message(QueueUrl=rule.peer.queue_url, MessageBody=body)
        except ClientError as exc:
            raise QueueError(
                f"SendMessage to the peer queue of rule {rule.peer.rule_id} failed: {error_message(exc)}",
                error_code(exc),
            ) from exc


class SqsQueueSender:
    """``crr.ports.queues.ReplicationQueue`` by SendMessage: the DLQ replay and the breaker's release."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def send(self, body: str) -> None:
        try:
            self._sqs.send_message(QueueUrl=self._url, MessageBody=body)
        except ClientError as exc:
            raise QueueError(
                f"SendMessage to the replication queue failed: {error_message(exc)}", error_code(exc)
            ) from exc

    def send_batch(self, bodies: Sequence[str]) -> None:
        """One SendMessage per body (``SqsBatchSender`` sends ten in one request)."""
        for body in bodies:
            self.send(body)


class SqsKeyHandOver:
    """KeyHandOver over SQS: a change notice for the source key, to the replication queue (the live path
    reconciles it) or to the dead-letter queue with the failure's reason attributes (replayable)."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        dead_letter_queue_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._dlq_url = dead_letter_queue_url
        self._clock = clock

    def _notice(self, request: CopyRequest) -> str:
        return change_notice(
            request.source_bucket,
            request.source_region,
            request.state.key,
            configuration_id=LARGE_COPY_CONFIGURATION_ID,
            at=self._clock(),
        )

    def reconcile(self, request: CopyRequest, why: str) -> None:
        try:
            self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=self._notice(request))
        except ClientError as exc:
            raise QueueError(
                f"SendMessage to the replication queue failed ({why}): {error_message(exc)}", error_code(exc)
            ) from exc

    def dead_letter(self, rule_id: str, request: CopyRequest, reason: FailureReason, attempt_id: str) -> None:
        now = self._clock()
        record = FailureRecord(
            message_id=attempt_id,
            reason=reason,
            attempts=1,
            first_failure=now,
            last_failure=now,
            rule_id=rule_id,
            bucket=request.source_bucket,
            key=request.state.key,
        )
        try:
            self._sqs.send_message(
                QueueUrl=self._dlq_url, MessageBody=self._notice(request), MessageAttributes=reason_attributes(record)
            )
        except ClientError as exc:
            raise QueueError(f"SendMessage to the DLQ failed: {error_message(exc)}", error_code(exc)) from exc
