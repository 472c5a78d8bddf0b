"""The local SQS event source: what Lambda's pollers do for an SQS event-source mapping.

Per mapping, `maximum_concurrency` threads long-poll the queue, gather up to `batch_size` messages
(waiting at most the batching window), invoke the function with Lambda's SQS event, and then:
* on success delete the batch, except the records named in `batchItemFailures` when the mapping
  has ReportBatchItemFailures (a malformed failure list fails the whole batch, as on Lambda);
* on a function error or timeout delete nothing: the messages reappear after the visibility
  timeout, and moto's redrive policy moves them to the DLQ after maxReceiveCount receives.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crr_cli.localcloud.deploy import EventSourceMapping
from crr_cli.localcloud.lambda_.executor import Invocation

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 5
LONG_POLL_S = 1  # short, so stop() returns promptly
SQS_MAX_MESSAGES = 10
ERROR_BACKOFF_S = 0.5
WINDOW_TAIL_POLL_S = 0.05  # re-poll interval in the last (sub-second) part of a batching window


def _lambda_message_attributes(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """SQS's MessageAttributes in the lowercase form Lambda puts in the event."""
    converted: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        entry: dict[str, Any] = {
            "stringListValues": list(value.get("StringListValues", [])),
            "binaryListValues": list(value.get("BinaryListValues", [])),
            "dataType": value["DataType"],
        }
        if "StringValue" in value:
            entry["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            binary = value["BinaryValue"]
            entry["binaryValue"] = binary if isinstance(binary, str) else base64.b64encode(binary).decode("ascii")
        converted[name] = entry
    return converted


def sqs_event(messages: Sequence[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Lambda's SQS event for `messages` as ReceiveMessage returned them."""
    region = queue_arn.split(":")[3]
    records = []
    for message in messages:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def failed_message_ids(payload: Any, message_ids: Sequence[str]) -> set[str] | None:
    """Ids listed in a partial batch response; None when the response is malformed (whole batch fails)."""
    if payload is None:
        return set()
    if not isinstance(payload, dict):
        return None
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


class SqsEventSourcePoller:
    """Runs one SQS event-source mapping against an invoke callable until `stop()`."""

    def __init__(
        self,
        mapping: EventSourceMapping,
        invoke: Callable[[dict[str, Any]], Invocation],
        sqs_client: Any,
        *,
        long_poll_s: int = LONG_POLL_S,
    ) -> None:
        self.mapping = mapping
        self.concurrency = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
        self._invoke = invoke
        self._sqs = sqs_client
        self._long_poll_s = long_poll_s
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.invocations = 0
        self.failed_invocations = 0
        self._counter_lock = threading.Lock()

    def start(self) -> None:
        """Start the polling threads (no-op for a disabled mapping)."""
        if not self.mapping.enabled or self._threads:
            return
        for index in range(self.concurrency):
            thread = threading.Thread(
                target=self._run, name=f"sqs-poller-{self.mapping.logical_id}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Ask the threads to stop after their current receive or batch, without waiting."""
        self._stopping.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling; waits for in-flight batches up to `timeout_s` in total."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = self._gather()
                if messages:
                    self._process(messages)
            except Exception:  # keep polling through moto hiccups, as Lambda's pollers do
                logger.exception("poller of %s failed; retrying", self.mapping.logical_id)
                self._stopping.wait(ERROR_BACKOFF_S)

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.mapping.queue_url,
            MaxNumberOfMessages=min(count, SQS_MAX_MESSAGES),
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _gather(self) -> list[dict[str, Any]]:
        """One batch: up to batch_size messages, waiting at most the batching window once one arrived."""
        batch = self._receive(self.mapping.batch_size, self._long_poll_s)
        if not batch or self.mapping.batching_window_s <= 0:
            return batch
        window_ends = time.monotonic() + self.mapping.batching_window_s
        while len(batch) < self.mapping.batch_size and not self._stopping.is_set():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            if remaining >= 1:  # SQS waits in whole seconds
                batch += self._receive(self.mapping.batch_size - len(batch), min(int(remaining), self._long_poll_s))
                continue
            more = self._receive(self.mapping.batch_size - len(batch), 0)
            if not more:
                self._stopping.wait(min(remaining, WINDOW_TAIL_POLL_S))
            batch += more
        return batch

    def _process(self, messages: list[dict[str, Any]]) -> None:
        invocation = self._invoke(sqs_event(messages, self.mapping.queue_arn))
        with self._counter_lock:
            self.invocations += 1
            self.failed_invocations += 0 if invocation.ok else 1
        if not invocation.ok:
            logger.warning(
                "%s: invocation failed (%s); %d message(s) left for redelivery",
                self.mapping.function_logical_id,
                invocation.error["errorType"] if invocation.error else "?",
                len(messages),
            )
            return
        ids = [message["MessageId"] for message in messages]
        failed: set[str] | None = set()
        if self.mapping.report_batch_item_failures:
            failed = failed_message_ids(invocation.payload, ids)
        if failed is None:
            logger.warning("%s: malformed batchItemFailures; whole batch left", self.mapping.function_logical_id)
            return
        done = [message for message in messages if message["MessageId"] not in failed]
        self._delete(done)

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_MAX_MESSAGES):
            chunk = messages[start : start + SQS_MAX_MESSAGES]
            entries = [
                {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]} for index, message in enumerate(chunk)
            ]
            response = self._sqs.delete_message_batch(QueueUrl=self.mapping.queue_url, Entries=entries)
            for failure in response.get("Failed", []):
                logger.warning("%s: delete failed: %s", self.mapping.logical_id, failure)
