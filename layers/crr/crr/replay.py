"""Dead letters: what is in the DLQ and why, and moving chosen ones back to the replication queue.

Replay sends a message to the replication queue *before* deleting it from the DLQ, so a crash in
between duplicates a record but never drops one; the ledger makes the duplicate harmless.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from crr.errors import MalformedEventError
from crr.events import ChangeEvent, parse_notification
from crr.models import RawDeadLetter
from crr.ports.queues import DeadLetterQueue, ReplicationQueue
from crr.ports.table import FailureLog

# Visibility held on received dead letters while a listing or replay walks the queue.
HOLD_SECONDS = 120
# A walk long-polls: a short poll asks only some of SQS's servers, and its empty reply proves nothing.
LONG_POLL_SECONDS = 2
# Empty long polls tolerated while the queue still counts visible messages (its counts lag behind).
EMPTY_POLLS_WHILE_COUNTED = 5


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message with its reason, from its own attributes or the failure log."""

    raw: RawDeadLetter
    code: str
    message: str
    attempts: int
    bucket: str | None
    keys: tuple[str, ...]
    dead_lettered_at: datetime

    def age_seconds(self, now: datetime) -> float:
        return max((now - self.dead_lettered_at).total_seconds(), 0.0)


class ReplayRequest(BaseModel):
    """Which dead letters to replay (all filters must match); the ReplayFunction's event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str | None = Field(default=None, description="error code, e.g. NoSuchBucket")
    prefix: str | None = Field(default=None, description="only messages with a key under this prefix")
    since: datetime | None = Field(default=None, description="only messages dead-lettered at or after")
    max_messages: int | None = Field(default=None, ge=1, alias="max")
    dry_run: bool = False

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.code != self.reason:
            return False
        if self.prefix is not None and not any(key.startswith(self.prefix) for key in letter.keys):
            return False
        since = self.since.replace(tzinfo=self.since.tzinfo or UTC) if self.since else None
        return since is None or letter.dead_lettered_at >= since


class ReplayReport(BaseModel):
    examined: int = 0
    matched: int = 0
    replayed: int = 0
    dry_run: bool = False
    by_reason: dict[str, int] = Field(default_factory=dict)
    complete: bool = Field(
        default=True, description="false when the queue still counted visible messages the walk could not receive"
    )


class ReasonSummary(BaseModel):
    code: str
    count: int
    oldest_age_seconds: float
    sample_keys: list[str]
    sample_message: str


class DeadLetterSummary(BaseModel):
    total: int
    oldest_age_seconds: float | None
    reasons: list[ReasonSummary]
    complete: bool = Field(
        default=True, description="false when the queue still counted visible messages the walk could not receive"
    )


def _keys_and_bucket(body: str) -> tuple[str | None, tuple[str, ...]]:
    try:
        events = [item for item in parse_notification(body) if isinstance(item, ChangeEvent)]
    except MalformedEventError:
        return None, ()
    return (events[0].bucket if events else None), tuple(event.key for event in events)


def describe(raw: RawDeadLetter, failures: FailureLog) -> DeadLetter:
    """Attach the reason: attributes set when crr dead-lettered it, else the failure log entry that
    SQS's redrive left behind (it keeps the message id), else Unknown."""
    bucket, keys = _keys_and_bucket(raw.body)
    attributes = raw.attributes
    if "crr-error-code" in attributes:
        last = attributes.get("crr-last-failure")
        return DeadLetter(
            raw,
            attributes["crr-error-code"],
            attributes.get("crr-error-message", ""),
            int(attributes.get("crr-attempts", "1")),
            bucket,
            keys,
            datetime.fromisoformat(last) if last else raw.sent_at,
        )
    record = failures.find(raw.message_id)
    if record is None:
        return DeadLetter(raw, "Unknown", "no failure was recorded for this message", 0, bucket, keys, raw.sent_at)
    return DeadLetter(
        raw, record.reason.code, record.reason.message, record.attempts, bucket, keys, record.last_failure
    )


class DeadLetters:
    def __init__(self, dlq: DeadLetterQueue, failures: FailureLog, clock: type[datetime] = datetime) -> None:
        self._dlq = dlq
        self._failures = failures
        self._clock = clock

    def _walk(self) -> tuple[list[DeadLetter], list[str], bool]:
        """Receive every visible dead letter once (holding them), newest reasons attached.

        Long polls, and ends only when a poll comes back empty *and* the queue counts no visible
        message: an empty reply alone proves nothing on SQS. Returns the letters, their receipt handles
        and whether the walk is complete (False when the queue kept counting messages that
        ``EMPTY_POLLS_WHILE_COUNTED`` polls in a row did not return).
        """
        letters: list[DeadLetter] = []
        held: list[str] = []
        seen: set[str] = set()
        empty_polls = 0
        while True:
            received = self._dlq.receive(10, HOLD_SECONDS, LONG_POLL_SECONDS)
            batch = [raw for raw in received if raw.message_id not in seen]
            if batch:
                empty_polls = 0
            elif not received and self._dlq.visible_count() == 0:
                return letters, held, True
            else:
                empty_polls += 1
                if empty_polls >= EMPTY_POLLS_WHILE_COUNTED:
                    return letters, held, False
            for raw in batch:
                seen.add(raw.message_id)
                held.append(raw.receipt_handle)
                letters.append(describe(raw, self._failures))

    def summarize(self, samples: int = 3) -> DeadLetterSummary:
        """Counts by reason, oldest age and sample keys; every message stays in the DLQ."""
        letters, held, complete = self._walk()
        try:
            now = self._clock.now(UTC)
            reasons: list[ReasonSummary] = []
            for code, count in Counter(letter.code for letter in letters).most_common():
                same = [letter for letter in letters if letter.code == code]
                reasons.append(
                    ReasonSummary(
                        code=code,
                        count=count,
                        oldest_age_seconds=max(letter.age_seconds(now) for letter in same),
                        sample_keys=[key for letter in same for key in letter.keys][:samples],
                        sample_message=same[0].message[:300],
                    )
                )
            oldest = max((letter.age_seconds(now) for letter in letters), default=None)
            return DeadLetterSummary(total=len(letters), oldest_age_seconds=oldest, reasons=reasons, complete=complete)
        finally:
            self._release(held)

    def replay(self, request: ReplayRequest, queue: ReplicationQueue) -> ReplayReport:
        """Send matching dead letters back to the replication queue, deleting each from the DLQ only
        after its send succeeded; the rest are released untouched."""
        letters, held, complete = self._walk()
        report = ReplayReport(examined=len(letters), dry_run=request.dry_run, complete=complete)
        reasons: Counter[str] = Counter()
        try:
            for letter in letters:
                if not request.matches(letter):
                    continue
                if request.max_messages is not None and report.matched >= request.max_messages:
                    break
                report.matched += 1
                reasons[letter.code] += 1
                if request.dry_run:
                    continue
                queue.send(letter.raw.body)
                self._dlq.delete(letter.raw.receipt_handle)
                held.remove(letter.raw.receipt_handle)
                report.replayed += 1
        finally:
            report.by_reason = dict(reasons)
            self._release(held)
        return report

    def _release(self, receipts: list[str]) -> None:
        for receipt in receipts:
            self._dlq.release(receipt)


def parse_replay_event(event: object) -> ReplayRequest:
    """The ReplayFunction's event: a JSON object with reason / prefix / since / max / dry_run."""
    if isinstance(event, str):
        event = json.loads(event)
    return ReplayRequest.model_validate(event or {})
