"""A two-way pair on in-memory fakes: users change keys on both sides while workers serve both rules
with shuffled, duplicated notifications. Used by the property test and by bench/two_way.py."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from crr.errors import CrrError
from crr.events import ChangeEvent, ChangeKind
from crr.markers import sealed_origin
from crr.models import ObjectState
from crr.replication import APPLIED, Replicator
from tests.support.fakes import (
    FakeLedger,
    FakePeerNudges,
    FakeProgress,
    FakeRules,
    FakeS3,
    FakeTombstones,
    StoredVersion,
)
from tests.support.interleave import Interleaver, serve_queue
from tests.support.rules import two_way_rules

# Bucket names decide ties within one second: "west-bucket" sorts last, so it wins them.
EAST, WEST = "east-bucket", "west-bucket"
REGIONS = {EAST: "us-east-1", WEST: "us-west-1"}
KEYS = ("a", "dir/b")
START = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


class Action(StrEnum):
    """What a user does to a key besides put and delete (``UserOp.action``)."""

    WRITE = "write"  # put, or delete when ``put`` is False
    COPY = "copy"  # server-side copy of the other key on the same side (aws s3 cp), metadata copied
    COPY_REPLACE = "copy-replace"  # the same with its metadata replaced (--metadata-directive REPLACE)
    TOUCH = "touch"  # copy onto itself with one metadata value changed (rclone touch)
    TAG = "tag"  # new tags on the current version (PutObjectTagging): no new version
    SAME_BYTES = "same-bytes"  # bytes another write may have too, with metadata of its own
    EMPTY = "empty"  # a zero-byte object with metadata of its own (rclone on an empty file)


@dataclass(frozen=True)
class UserOp:
    bucket: str
    put: bool
    key: str
    pause_ms: int  # how long the user waits before this change: many land in the same second
    action: Action = Action.WRITE
    settled: bool = False  # the user waits until crr has handled every notification (replicas exist)


@dataclass(frozen=True)
class Change:
    """A user change as last-writer-wins orders it: second, then bucket name, then order on that side."""

    key: str
    second: datetime
    bucket: str
    order: int
    body: bytes | None  # None: a delete
    metadata: dict[str, str] | None = None  # the user's metadata of the version written (crr's aside)


@dataclass(frozen=True)
class Outcome:
    user_changes: int
    replicator_writes: int
    nudges: int
    s3_calls: dict[str, int]


def run_scenario(
    ops: list[UserOp],
    workers: int,
    duplicates: int,
    rng: random.Random,
    stickiness: float,
    record_concurrency: int = 1,
) -> Outcome:
    """Run the users and the workers to the end; assert both buckets hold the last writer.

    ``record_concurrency``: records a worker applies at once from a batch (1: one at a time)."""
    scheduler = Interleaver(rng, stickiness)
    now = [START]
    s3 = FakeS3(scheduler.yield_point, clock=lambda: now[0])
    for bucket, region in REGIONS.items():
        s3.create_bucket(bucket, region, versioned=True)
    ledger, tombstones = FakeLedger(scheduler.yield_point), FakeTombstones(scheduler.yield_point)
    rules = FakeRules(*two_way_rules((WEST, REGIONS[WEST]), (EAST, REGIONS[EAST])))
    pending: list[ChangeEvent] = []
    sequencers = itertools.count(0x5A0000)
    user_done = [False]

    def notify(bucket: str, key: str, sequencer: str | None, kind: ChangeKind | None = None) -> None:
        current = s3.buckets[bucket].current(key)
        kind = kind or (ChangeKind.CREATED if current else ChangeKind.REMOVED)
        event = ChangeEvent(
            bucket=bucket, key=key, kind=kind, event_name=_EVENT_NAMES[kind], event_time=now[0], sequencer=sequencer
        )
        pending.extend([event] * rng.randint(1, duplicates))  # at-least-once: some arrive twice
        scheduler.wake_all()

    # S3 notifies every write, the replicator's own included; a nudge names no sequencer. Tag changes
    # have sequencers of their own kind (here: far above the objects').
    s3.on_change = lambda bucket, key: notify(bucket, key, f"{next(sequencers):X}")
    s3.on_attributes = lambda bucket, key: notify(bucket, key, f"F{next(sequencers):X}", ChangeKind.METADATA)
    nudges = FakePeerNudges(lambda bucket, key: notify(bucket, key, None))
    changes: list[Change] = []
    tag_sets: dict[str, list[dict[str, str]]] = {key: [{}] for key in KEYS}

    def user() -> None:
        for order, op in enumerate(ops):
            scheduler.yield_point()
            while op.settled and (pending or in_flight[0]):
                scheduler.yield_point(idle=True)
            now[0] += timedelta(milliseconds=op.pause_ms)
            change = _user_change(s3, op, order, now[0], tag_sets[op.key])
            if change is not None:
                changes.append(change)
        user_done[0] = True

    replicator_writes = [0]
    in_flight = [0]

    def worker() -> None:
        replicator = Replicator(
            rules, s3, ledger, FakeProgress(), clock=lambda: now[0], tombstones=tombstones, nudges=nudges
        )

        def apply(event: ChangeEvent) -> None:
            in_flight[0] += 1
            try:
                if replicator.apply(event).outcome in APPLIED:
                    replicator_writes[0] += 1
            finally:
                in_flight[0] -= 1

        serve_queue(
            pending,
            apply,
            lambda: user_done[0],
            scheduler,
            rng,
            CrrError,
            record_concurrency=record_concurrency,
            keys_of=lambda event: [(event.bucket, event.key)],
        )

    scheduler.run([user] + [worker for _ in range(workers)])

    _assert_both_hold_the_last_writer(s3, changes, tag_sets)
    return Outcome(len(ops), replicator_writes[0], nudges.sent, dict(s3.calls))


_EVENT_NAMES = {
    ChangeKind.CREATED: "ObjectCreated:Copy",
    ChangeKind.REMOVED: "ObjectRemoved:DeleteMarkerCreated",
    ChangeKind.METADATA: "ObjectTagging:Put",
}


def _user_change(s3: FakeS3, op: UserOp, order: int, now: datetime, tag_sets: list[dict[str, str]]) -> Change | None:
    """Make ``op``'s change; the Change it is for last-writer-wins (None for a tag change, which has no
    stamp: its tag set is added to ``tag_sets``, the tags the key may end with)."""
    if op.action is Action.TAG:
        if s3.current(op.bucket, op.key) is not None:
            tags = {"order": str(order)}
            s3.set_tags(op.bucket, op.key, tags)
            tag_sets.append(tags)
        return None
    written = _act(s3, op, order)
    if written is None:
        return Change(op.key, now.replace(microsecond=0), op.bucket, order, None)
    tag_sets.append(written.tags)  # a copy brings the tags of the key it copied
    return Change(op.key, now.replace(microsecond=0), op.bucket, order, written.body, _user_metadata(written.metadata))


def _act(s3: FakeS3, op: UserOp, order: int) -> StoredVersion | None:
    """Make ``op``'s change on its side; the version written, or None for a delete. A copy of a key the
    side does not hold is a put instead."""
    other = next(key for key in KEYS if key != op.key)
    unique = f"{op.key}|{op.bucket}|{order}".encode()  # S3's conditions compare ETags: keep bodies apart
    if op.action is Action.WRITE and not op.put:
        s3.remove(op.bucket, op.key)
        return None
    copied = s3.current(op.bucket, other)
    if op.action in {Action.COPY, Action.COPY_REPLACE} and copied is not None:
        # A copy back that recreates crr's replica of this very key (its marker sealed for this key)
        # within minutes of crr writing it is the loop guard's stated limit (docs/two-way.md): the
        # whole scenario lasts seconds, so here such a copy replaces the metadata instead.
        keeps = op.action is Action.COPY and not _recreates_replica(copied, op.key)
        return s3.copy_within(op.bucket, other, op.key, metadata=None if keeps else {"order": str(order)})
    current = s3.current(op.bucket, op.key)
    if op.action is Action.TOUCH and current is not None:
        return s3.copy_within(op.bucket, op.key, op.key, metadata={**current.metadata, "mtime": str(order)})
    if op.action is Action.SAME_BYTES:
        return s3.put(op.bucket, op.key, b"same bytes", metadata={"order": str(order)})
    if op.action is Action.EMPTY:
        return s3.put(op.bucket, op.key, b"", metadata={"mtime": str(order)})
    return s3.put(op.bucket, op.key, unique, metadata={"order": str(order)})


def _recreates_replica(copied: StoredVersion, key: str) -> bool:
    as_copied = ObjectState(
        key=key,
        etag=copied.etag,
        size=len(copied.body),
        last_modified=copied.last_modified,
        metadata=copied.metadata,
        content_type=copied.content_type,
    )
    return sealed_origin(as_copied) is not None


def _assert_both_hold_the_last_writer(
    s3: FakeS3, changes: list[Change], tag_sets: dict[str, list[dict[str, str]]]
) -> None:
    for key in KEYS:
        mine = [change for change in changes if change.key == key]
        winner = max(mine, key=lambda c: (c.second, c.bucket, c.order)) if mine else None
        expected = (winner.body, winner.metadata) if winner and winner.body is not None else None
        west, east = s3.current(WEST, key), s3.current(EAST, key)
        for name, held in (("west", west), ("east", east)):
            view = (held.body, _user_metadata(held.metadata)) if held else None
            assert view == expected, f"{key!r}: {name} holds {held}, last writer is {winner}"
        if west and east:
            assert (west.tags, west.content_type) == (east.tags, east.content_type), f"{key!r}: {west} vs {east}"
            # Tags carry no stamp: they end equal on both sides, as one of the sets a user gave the key.
            assert west.tags in tag_sets[key], f"{key!r}: tags {west.tags} were never set by a user"


def _user_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in metadata.items() if not name.startswith("crr-")}
