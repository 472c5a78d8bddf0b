"""The mass-delete circuit breaker: a burst of deletes stops reaching the replica until an operator says so.

Managed replication passes a ransomware-style wipe of the source straight to the replica. crr counts
each rule's replicated deletes per window; when they reach ``count`` **and** make up at least
``percent`` of the changes applied in that window, the rule's deletes are *held*: the replica keeps the
objects, each held key is remembered, and ``crr rules resume-deletes`` releases them (through the normal
replication path) or ``--discard`` drops them. Cost: one more DynamoDB write per replicated delete; a
copy costs nothing more (copies are counted by the progress flush, at most once a second).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import quote_plus

from crr.rules import ReplicationRule


@dataclass(frozen=True)
class DeleteWindow:
    """Counts of one rule in one window: replicated deletes, and all applied changes (deletes + copies)."""

    deletes: int
    changes: int


@dataclass(frozen=True)
class BreakerSettings:
    count: int = 1000
    percent: float = 50.0
    window_seconds: int = 300

    def window_start(self, now: datetime) -> datetime:
        epoch = int(now.timestamp())
        return datetime.fromtimestamp(epoch - epoch % self.window_seconds, UTC)

    def trips(self, window: DeleteWindow) -> bool:
        return window.deletes >= self.count and window.deletes * 100 >= self.percent * max(window.changes, 1)


@dataclass(frozen=True)
class BreakerState:
    deletes_held: bool
    suspended_until: datetime | None


class BreakerStore(Protocol):
    def state(self, rule_id: str) -> BreakerState:
        """The rule's breaker fields read now (rules are cached by the function; this is not)."""
        ...

    def count_delete(self, rule_id: str, window_start: datetime) -> DeleteWindow:
        """Add one delete (and one change) to the window; returns the window's counts after it."""
        ...

    def count_copies(self, rule_id: str, window_start: datetime, copies: int) -> None: ...

    def trip(self, rule_id: str, at: datetime) -> None:
        """Mark the rule's deletes held (visible to ``crr status`` and every function container)."""
        ...

    def hold(self, rule_id: str, key: str, at: datetime) -> None: ...


class DeleteBreaker:
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
        self._unwritten: dict[str, int] = {}
        self._copies_written_at: datetime | None = None

    def admit(self, rule: ReplicationRule, key: str) -> bool:
        """True when the delete of ``key`` may reach the replica; False when it is held (and remembered).

        ``rule`` may come from a cache that predates a trip, a release or a discard, so whenever the
        answer would be "hold" it is decided on the rule's state read now.
        """
        now = self._clock()
        if _suspended(rule.breaker_suspended_until, now):
            return True
        held = rule.deletes_held
        if held:
            state = self._store.state(rule.rule_id)
            if _suspended(state.suspended_until, now):
                return True
            held = state.deletes_held
        if not held:
            if not self.settings.trips(self._store.count_delete(rule.rule_id, self.settings.window_start(now))):
                return True
            state = self._store.state(rule.rule_id)
            if _suspended(state.suspended_until, now):
                return True
            if not state.deletes_held:
                self._store.trip(rule.rule_id, now)
        self._store.hold(rule.rule_id, key, now)
        return False

    def count_copies(self, rule_id: str, copies: int) -> None:
        """Copies only dilute the delete percentage, so they are written every ``copies_interval``
        seconds at most: an undercount makes the breaker hold sooner, never lose a delete, and it keeps
        the breaker's cost off the copy path (one write per ten seconds, not per progress flush)."""
        self._unwritten[rule_id] = self._unwritten.get(rule_id, 0) + copies
        now = self._clock()
        if (
            self._copies_written_at is not None
            and (now - self._copies_written_at).total_seconds() < self.copies_interval
        ):
            return
        self._copies_written_at = now
        unwritten, self._unwritten = self._unwritten, {}
        for rule, count in unwritten.items():
            if count:
                self._store.count_copies(rule, self.settings.window_start(now), count)


def _suspended(until: datetime | None, now: datetime) -> bool:
    return until is not None and now < until


def removal_notification(rule: ReplicationRule, key: str, now: datetime) -> str:
    """A queue message that asks the replicator to reconcile ``key`` (no sequencer: never fenced).

    The replicator deletes the replica only if the source still lacks the key, so a key written again
    since its delete was held is copied, not deleted.
    """
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": rule.source_region,
        "eventTime": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventName": "ObjectRemoved:Delete",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "crr-resume-deletes",
            "bucket": {"name": rule.source_bucket, "arn": f"arn:aws:s3:::{rule.source_bucket}"},
            "object": {"key": quote_plus(key)},
        },
    }
    return json.dumps({"Records": [record]})


def suspension_end(settings: BreakerSettings, now: datetime) -> datetime:
    """Released deletes must not trip the breaker again: it stays open for one more window."""
    return now + timedelta(seconds=2 * settings.window_seconds)


class HeldDeletes(Protocol):
    def held_keys(self, rule_id: str) -> Iterator[tuple[str, str]]: ...
    def forget_held(self, rule_id: str, sort_key: str) -> None: ...
    def release(self, rule_id: str, suspended_until: datetime | None) -> None: ...


class NotificationSender(Protocol):
    def send(self, body: str) -> None: ...


@dataclass(frozen=True)
class ReleaseReport:
    rule_id: str
    released: int
    discarded: int


def release_held_deletes(
    rule: ReplicationRule, held: HeldDeletes, queue: NotificationSender, settings: BreakerSettings, now: datetime
) -> ReleaseReport:
    """Re-queue every held delete of ``rule`` through the normal path and close the breaker.

    The breaker is suspended first (for two windows), so the released deletes are not held again; each
    held key is forgotten only after its notification was sent, so a crash re-sends, never loses.
    """
    held.release(rule.rule_id, suspension_end(settings, now))
    released = 0
    for sort_key, key in held.held_keys(rule.rule_id):
        queue.send(removal_notification(rule, key, now))
        held.forget_held(rule.rule_id, sort_key)
        released += 1
    return ReleaseReport(rule.rule_id, released=released, discarded=0)


def discard_held_deletes(
    rule: ReplicationRule, held: HeldDeletes, settings: BreakerSettings, now: datetime
) -> ReleaseReport:
    """Forget every held delete (the replica keeps those objects) and close the breaker.

    Like a release, it suspends the breaker for two windows: the window that tripped it still counts
    the burst, and would otherwise hold the very next delete.
    """
    discarded = 0
    for sort_key, _ in held.held_keys(rule.rule_id):
        held.forget_held(rule.rule_id, sort_key)
        discarded += 1
    held.release(rule.rule_id, suspension_end(settings, now))
    return ReleaseReport(rule.rule_id, released=0, discarded=discarded)
