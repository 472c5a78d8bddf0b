"""SendMessageBatch to the replication queue: the backfill hands it the keys it failed to copy (the live
path retries them), and `crr verify --repair` its repairs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from crr.adapters.clients import error_code, error_message
from crr.adapters.sqs import QueueError
from crr.ports.queues import MAX_BODIES_PER_BATCH

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import BatchResultErrorEntryTypeDef, SendMessageBatchRequestEntryTypeDef


# Entries SQS fails on its side (throttling, internal errors) are resent this many times in all.
SEND_ATTEMPTS = 4


class SqsBatchSender:
    """``crr.ports.queues.ReplicationQueue``: up to 10 bodies per SendMessageBatch, resending entries that SQS
    failed on its side (a batch can succeed in part)."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        attempts: int = SEND_ATTEMPTS,
        backoff_seconds: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sqs = client
        self._url = queue_url
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep

    def send(self, body: str) -> None:
        """One body, as a batch of one."""
        self.send_batch([body])

    def send_batch(self, bodies: Sequence[str]) -> None:
        """Raises QueueError when the request fails, an entry is refused as invalid (sender fault), or
        entries still fail after the last attempt. Raises ValueError for more than 10 bodies."""
        if len(bodies) > MAX_BODIES_PER_BATCH:
            raise ValueError(f"SendMessageBatch takes at most {MAX_BODIES_PER_BATCH} messages, got {len(bodies)}")
        if not bodies:
            return
        pending = {str(index): body for index, body in enumerate(bodies)}
        failed: list[BatchResultErrorEntryTypeDef] = []
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            failed = self._send(pending)
            refused = [entry for entry in failed if entry.get("SenderFault")]
            if refused:
                raise QueueError(
                    f"SendMessageBatch refused {len(refused)} message(s): {refused[0].get('Message', '')}",
                    str(refused[0].get("Code", "Unknown")),
                )
            pending = {entry["Id"]: pending[entry["Id"]] for entry in failed}
            if not pending:
                return
        raise QueueError(
            f"SendMessageBatch left {len(pending)} of {len(bodies)} message(s) unsent after {self._attempts} "
            f"attempts: {failed[0].get('Message', '')}",
            str(failed[0].get("Code", "Unknown")),
        )

    def _send(self, pending: dict[str, str]) -> list[BatchResultErrorEntryTypeDef]:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": entry_id, "MessageBody": body} for entry_id, body in pending.items()
        ]
        try:
            answer = self._sqs.send_message_batch(QueueUrl=self._url, Entries=entries)
        except ClientError as exc:
            raise QueueError(
                f"SendMessageBatch to the replication queue failed: {error_code(exc)}: {error_message(exc)}",
                error_code(exc),
            ) from exc
        return list(answer.get("Failed", []))
