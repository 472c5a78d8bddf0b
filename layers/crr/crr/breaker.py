"""The mass-delete circuit breaker: a burst of deletes stops reaching the replica until an operator says so.

Managed replication passes a ransomware-style wipe of the source straight to the replica. crr counts
each rule's deletes over a sliding window; when they reach ``count`` **and** make up at least ``percent``
of the changes applied in that window, the rule's deletes are *held*: the replica keeps the objects, each
held key is remembered, and ``crr rules resume-deletes`` releases them (through the normal replication
path) or ``--discard`` drops them.

An operator's answer covers the whole burst, not only what was held when it was given: every delete whose
event time falls in the burst's span (from one window before the trip to the answer) follows it, however
late its notification arrives. After a discard, deletes that still arrive at the burst's rate (the count
over the threshold) are discarded too; the first delete counted under the threshold ends the burst.

Cost: one DynamoDB UpdateItem per delete (it counts the delete and returns the breaker's state with the
sliding count); a held delete adds a PutItem (the held key) and a consistent GetItem (was the burst
answered meanwhile?). Copies and overwrites only dilute or inform, so they are written at most every ten
seconds per container.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field

from crr.errors import StateStoreError
from crr.models import BreakerRecord, Verdict
from crr.ports.queues import ReplicationQueue
from crr.ports.table import BreakerStore, HeldDeletes
from crr.rules import ReplicationRule

# A window is counted in this many slots: the count covers the last window plus at most one slot more,
# so it never undercounts (no burst slips through at a slot edge) and overcounts by a tenth at most.
SLOTS_PER_WINDOW = 10
# `crr status` flags a rule whose overwrites in the last window are at least this many and this many times
# its usual rate (its average per window since its first overwrite, the window itself left out).
OVERWRITE_BURST_MIN = 100
OVERWRITE_BURST_FACTOR = 10
# A decision re-read this often without settling means the table keeps changing under us: retry later.
MAX_DECISION_ATTEMPTS = 4


class DeleteDecision(StrEnum):
    APPLY = "apply"
    HOLD = "hold"
    DISCARD = "discard"


@dataclass(frozen=True)
class DeleteWindow:
    """Counts of one rule over the sliding window: deletes, all changes (deletes + copies), overwrites."""

    deletes: int
    changes: int
    overwrites: int = 0


@dataclass(frozen=True)
class BreakerSettings:
    count: int = 1000
    percent: float = 50.0
    window_seconds: int = 300

    @property
    def slot_seconds(self) -> int:
        return max(1, math.ceil(self.window_seconds / SLOTS_PER_WINDOW))

    def slot(self, moment: datetime) -> int:
        return math.floor(moment.timestamp()) // self.slot_seconds

    def window_slots(self, now: datetime) -> range:
        """The slots the sliding count adds up: every slot that overlaps the last window."""
        return range(self.slot(now - timedelta(seconds=self.window_seconds)), self.slot(now) + 1)

    def sliding(self, record: BreakerRecord, now: datetime) -> DeleteWindow:
        slots = self.window_slots(now)
        return DeleteWindow(
            deletes=sum(count for slot, count in record.deletes.items() if slot in slots),
            changes=sum(count for slot, count in record.changes.items() if slot in slots),
            overwrites=sum(count for slot, count in record.overwrites.items() if slot in slots),
        )

    def stale_slots(self, record: BreakerRecord, now: datetime) -> list[int]:
        """Slots too old to count again: removed by the next write, so the item stays a few slots long."""
        oldest = self.window_slots(now).start
        return sorted(slot for slot in record.slots() if slot < oldest)

    def trips(self, window: DeleteWindow) -> bool:
        return window.deletes >= self.count and window.deletes * 100 >= self.percent * max(window.changes, 1)

    def burst_start(self, record: BreakerRecord) -> datetime:
        """The earliest event time of the burst held since ``record.held_since``: the window that tripped it
        (but never reaching into the span an earlier answer already covered)."""
        if record.held_since is None:
            raise ValueError("only a held breaker has a burst")
        start = record.held_since - timedelta(seconds=self.window_seconds)
        if record.verdict_to is not None and record.verdict_to > start:
            start = record.verdict_to + timedelta(microseconds=1)
        return start


class DeleteBreaker:
    """Decides on each delete of a rule. Thread-safe (a batch's records are applied concurrently): the
    counts are the table's, updated atomically per delete; what this process remembers between
    requests (the last record per rule, the copies not yet written) is kept under a lock."""

    def __init__(
        self,
        store: BreakerStore,
        settings: BreakerSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self.copies_interval = 10.0
        self._unwritten: dict[str, tuple[int, int]] = {}
        self._copies_written_at: datetime | None = None
        # The record each rule's last count returned: enough to know the last answer's span without a
        # request, and which stale slots to drop.
        self._known: dict[str, BreakerRecord] = {}
        self._lock = threading.Lock()

    def decide(self, rule: ReplicationRule, key: str, event_time: datetime | None) -> DeleteDecision:
        """Whether the delete of ``key`` (made at ``event_time``) reaches the replica, is held (and
        remembered), or is discarded as part of a burst the operator discarded.

        Raises StateStoreError when the table keeps changing under the decision (the record is retried).
        """
        now = self._clock()
        with self._lock:
            known = self._known.get(rule.rule_id)
        if known is not None:
            # The burst's notifications still queued when the operator answered need no request.
            answered = known.verdict_for(event_time)
            if answered is not None:
                return _follow(answered)
        stale = self.settings.stale_slots(known, now) if known is not None else []
        slot = self.settings.slot(now)
        record = self._store.count_delete(rule.rule_id, slot, stale)
        for _ in range(MAX_DECISION_ATTEMPTS):
            self._remember(rule.rule_id, record)
            answered = record.verdict_for(event_time)
            if answered is not None:
                # An answered burst's deletes are not counted (a released one would start the new count
                # off high): this happens once per container and answer, before the container knew of it.
                self._store.count_delete(rule.rule_id, slot, (), -1)
                return _follow(answered)
            decision, after = self._judge(rule.rule_id, key, record, now)
            if decision is not None:
                return decision
            if record.held_since is not None:
                record = after  # answered while this delete was being held
            elif self._store.trip(rule.rule_id, now):
                record = replace(record, held_since=now)
            else:
                record = self._store.read(rule.rule_id)  # another container tripped it first
        raise StateStoreError(f"the delete breaker of rule {rule.rule_id} kept changing while deciding on {key!r}")

    def _remember(self, rule_id: str, record: BreakerRecord) -> None:
        with self._lock:
            self._known[rule_id] = record

    def _judge(
        self, rule_id: str, key: str, record: BreakerRecord, now: datetime
    ) -> tuple[DeleteDecision | None, BreakerRecord]:
        """The decision on ``record`` for a delete no answer covers, None when the breaker must trip first
        or changed under us; and the breaker's record as the decision left it."""
        if record.held_since is not None:
            after = self._store.hold(rule_id, key, record.held_since, now)
            if after.held_since == record.held_since:
                return DeleteDecision.HOLD, after
            self._remember(rule_id, after)
            return None, after
        if not self.settings.trips(self.settings.sliding(record, now)):
            if record.discarding:
                self._store.end_discarding(rule_id, record.verdict_to)  # the burst is over: deletes flow again
                record = replace(record, discarding=False)
                self._remember(rule_id, record)
            return DeleteDecision.APPLY, record
        # A discarded burst still arriving is discarded.
        return (DeleteDecision.DISCARD if record.discarding else None), record

    def count_copies(self, rule_id: str, copies: int, overwrites: int = 0) -> None:
        """Copies only dilute the delete percentage and overwrites only inform, so they are written every
        ``copies_interval`` seconds at most: an undercount makes the breaker hold sooner, never lose a
        delete, and it keeps the breaker's cost off the copy path (one write per ten seconds per container).
        """
        now = self._clock()
        with self._lock:
            old_copies, old_overwrites = self._unwritten.get(rule_id, (0, 0))
            self._unwritten[rule_id] = (old_copies + copies, old_overwrites + overwrites)
            if (
                self._copies_written_at is not None
                and (now - self._copies_written_at).total_seconds() < self.copies_interval
            ):
                return
            self._copies_written_at = now
            unwritten, self._unwritten = self._unwritten, {}
        for rule, (copied, overwritten) in unwritten.items():
            if copied or overwritten:
                self._store.count_copies(rule, self.settings.slot(now), copied, overwritten, now)


def _follow(verdict: Verdict) -> DeleteDecision:
    return DeleteDecision.APPLY if verdict is Verdict.RELEASED else DeleteDecision.DISCARD


def removal_notification(rule: ReplicationRule, key: str, now: datetime) -> str:
    """A queue message that asks the replicator to reconcile ``key`` (no sequencer: never fenced).

    The replicator deletes the replica only if the source still lacks the key, so a key written again
    since its delete was held is copied, not deleted.
    """
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": rule.source_region,
        "eventTime": _event_time(now),
        "eventName": "ObjectRemoved:Delete",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "crr-resume-deletes",
            "bucket": {"name": rule.source_bucket, "arn": f"arn:aws:s3:::{rule.source_bucket}"},
            "object": {"key": quote_plus(key)},
        },
    }
    return json.dumps({"Records": [record]})


def _event_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_milliseconds(moment: datetime) -> datetime:
    """S3 event times carry milliseconds: an answer's span ends on one, so its own notifications fall in it."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class ReleaseReport:
    rule_id: str
    released: int
    discarded: int
    was_held: bool = True

    @property
    def nothing_held(self) -> bool:
        return not self.was_held and self.released == 0 and self.discarded == 0


def _answer(
    rule: ReplicationRule, held: HeldDeletes, settings: BreakerSettings, now: datetime, verdict: Verdict
) -> tuple[bool, BreakerRecord]:
    """Record the operator's answer before touching the held keys, so no delete is held after it."""
    record = held.read(rule.rule_id)
    if record.held_since is None:
        return False, record
    span = (settings.burst_start(record), _to_milliseconds(now))
    counted = settings.window_slots(now)
    # One slot either side: the functions' clocks may differ a little from the operator's.
    reset: Iterable[int] = range(counted.start - 1, counted.stop + 1) if verdict is Verdict.RELEASED else ()
    if not held.answer(rule.rule_id, record.held_since, verdict, span, reset):
        return False, held.read(rule.rule_id)
    return True, replace(record, held_since=None, verdict=verdict, verdict_from=span[0], verdict_to=span[1])


def release_held_deletes(
    rule: ReplicationRule, held: HeldDeletes, queue: ReplicationQueue, settings: BreakerSettings, now: datetime
) -> ReleaseReport:
    """Release the burst: its held deletes are re-queued through the normal path, every other delete of the
    burst is applied when it arrives, and the count starts afresh. Nothing held: nothing changes.

    Each held key is forgotten only after its notification was sent, so a crash re-sends, never loses.
    """
    was_held, record = _answer(rule, held, settings, now, Verdict.RELEASED)
    # Keys left by an interrupted release are re-sent inside that release's span, so they are applied too.
    stamp = record.verdict_to if record.verdict is Verdict.RELEASED and record.verdict_to else _to_milliseconds(now)
    released = 0
    for sort_key, key in held.held_keys(rule.rule_id):
        queue.send(removal_notification(rule, key, stamp))
        held.forget_held(rule.rule_id, sort_key)
        released += 1
    return ReleaseReport(rule.rule_id, released=released, discarded=0, was_held=was_held)


def discard_held_deletes(
    rule: ReplicationRule, held: HeldDeletes, settings: BreakerSettings, now: datetime
) -> ReleaseReport:
    """Discard the burst: the replica keeps what it deleted. The held deletes are forgotten, deletes of the
    burst that arrive later are discarded too, and so are deletes arriving while the count stays over the
    threshold; the first delete counted under it replicates again. Nothing held: nothing changes."""
    was_held, _ = _answer(rule, held, settings, now, Verdict.DISCARDED)
    discarded = 0
    for sort_key, _key in held.held_keys(rule.rule_id):
        held.forget_held(rule.rule_id, sort_key)
        discarded += 1
    return ReleaseReport(rule.rule_id, released=0, discarded=discarded, was_held=was_held)


class BreakerState(StrEnum):
    CLOSED = "closed"
    HOLDING = "holding"  # deletes are held until an operator answers
    DISCARDING = "discarding"  # a discarded burst is still arriving at its rate


class BreakerHealth(BaseModel):
    """The breaker of one rule as ``crr status`` shows it."""

    model_config = ConfigDict(frozen=True)

    state: BreakerState
    held_since: datetime | None
    held_deletes: int = Field(description="held keys waiting for crr rules resume-deletes")
    window_seconds: int
    deletes_in_window: int = Field(description="deletes counted over the sliding window")
    overwrites_in_window: int = Field(description="copies over keys already replicated, over the window")
    usual_overwrites_per_window: float = Field(description="average per window since the first overwrite")
    overwrite_burst: bool = Field(description="overwrites far above their usual rate (in-place encryption?)")


def breaker_health(record: BreakerRecord, settings: BreakerSettings, held_deletes: int, now: datetime) -> BreakerHealth:
    window = settings.sliding(record, now)
    if record.held:
        state = BreakerState.HOLDING
    elif record.discarding and settings.trips(window):
        state = BreakerState.DISCARDING
    else:
        state = BreakerState.CLOSED
    usual = 0.0
    if record.overwrites_since is not None:
        # The counted span includes the current window's slot overlap; leave the window out of "usual".
        earlier = (now - record.overwrites_since).total_seconds() / settings.window_seconds - 1
        usual = max(record.overwrites_total - window.overwrites, 0) / max(earlier, 1.0)
    burst = window.overwrites >= max(OVERWRITE_BURST_MIN, OVERWRITE_BURST_FACTOR * usual)
    return BreakerHealth(
        state=state,
        held_since=record.held_since,
        held_deletes=held_deletes,
        window_seconds=settings.window_seconds,
        deletes_in_window=window.deletes,
        overwrites_in_window=window.overwrites,
        usual_overwrites_per_window=round(usual, 2),
        overwrite_burst=burst,
    )


def breaker_lines(rule_id: str, health: BreakerHealth) -> list[str]:
    """What ``crr status`` prints under its table for a breaker that needs a person's eye (else nothing)."""
    window = f"the last {health.window_seconds} s"
    lines = []
    if health.state is BreakerState.HOLDING:
        lines.append(
            f"rule {rule_id}: deletes HELD by the mass-delete breaker ({health.held_deletes} held, "
            f"{health.deletes_in_window} deletes in {window}): crr rules resume-deletes {rule_id} [--discard]"
        )
    elif health.state is BreakerState.DISCARDING:
        lines.append(
            f"rule {rule_id}: discarding the rest of a discarded burst ({health.deletes_in_window} deletes in "
            f"{window}); deletes replicate again once it is over"
        )
    if health.overwrite_burst:
        lines.append(
            f"rule {rule_id}: OVERWRITES JUMPED: {health.overwrites_in_window} in {window}, usually "
            f"{health.usual_overwrites_per_window:g}; if the source is being encrypted in place, pause the rule "
            f"(crr rules pause {rule_id})"
        )
    return lines
