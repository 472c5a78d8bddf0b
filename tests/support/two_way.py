"""A two-way pair on in-memory fakes: users change keys on both sides while workers serve both rules
with shuffled, duplicated notifications. Used by the property test and by bench/two_way.py."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crr.errors import CrrError
from crr.events import ChangeEvent, ChangeKind
from crr.replication import APPLIED, Replicator
from crr.rules import PeerRule, ReplicationRule
from tests.support.fakes import FakeLedger, FakeNudges, FakeProgress, FakeRules, FakeS3, FakeTombstones
from tests.support.interleave import Interleaver, serve_queue

# Bucket names decide ties within one second: "west-bucket" sorts last, so it wins them.
EAST, WEST = "east-bucket", "west-bucket"
REGIONS = {EAST: "us-east-1", WEST: "us-west-1"}
KEYS = ("a", "dir/b")
START = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class UserOp:
    bucket: str
    put: bool
    key: str
    pause_ms: int  # how long the user waits before this change: many land in the same second


def _pair() -> tuple[ReplicationRule, ReplicationRule]:
    def rule(source: str, destination: str) -> ReplicationRule:
        return ReplicationRule.create(
            rule_id=f"{source}-to-{destination}",
            source_bucket=source,
            source_region=REGIONS[source],
            destination_bucket=destination,
            destination_region=REGIONS[destination],
            peer=PeerRule(
                rule_id=f"{destination}-to-{source}",
                rules_table=f"table-{REGIONS[destination]}",
                queue_url=f"https://sqs.{REGIONS[destination]}.amazonaws.com/123456789012/crr",
            ),
        )

    return rule(WEST, EAST), rule(EAST, WEST)


@dataclass(frozen=True)
class Change:
    """A user change as last-writer-wins orders it: second, then bucket name, then order on that side."""

    key: str
    second: datetime
    bucket: str
    order: int
    body: bytes | None  # None: a delete


@dataclass(frozen=True)
class Outcome:
    user_changes: int
    replicator_writes: int
    nudges: int
    s3_calls: dict[str, int]


def run_scenario(ops: list[UserOp], workers: int, duplicates: int, rng: random.Random, stickiness: float) -> Outcome:
    """Run the users and the workers to the end; assert both buckets hold the last writer."""
    scheduler = Interleaver(rng, stickiness)
    now = [START]
    s3 = FakeS3(scheduler.yield_point, clock=lambda: now[0])
    for bucket, region in REGIONS.items():
        s3.create_bucket(bucket, region, versioned=True)
    ledger, tombstones = FakeLedger(scheduler.yield_point), FakeTombstones(scheduler.yield_point)
    rules = FakeRules(*_pair())
    pending: list[ChangeEvent] = []
    sequencers = itertools.count(0x5A0000)
    user_done = [False]

    def notify(bucket: str, key: str, sequencer: str | None) -> None:
        current = s3.buckets[bucket].current(key)
        event = ChangeEvent(
            bucket=bucket,
            key=key,
            kind=ChangeKind.CREATED if current else ChangeKind.REMOVED,
            event_name="ObjectCreated:Copy" if current else "ObjectRemoved:DeleteMarkerCreated",
            event_time=now[0],
            sequencer=sequencer,
        )
        pending.extend([event] * rng.randint(1, duplicates))  # at-least-once: some arrive twice
        scheduler.wake_all()

    # S3 notifies every write, the replicator's own included; a nudge names no sequencer.
    s3.on_change = lambda bucket, key: notify(bucket, key, f"{next(sequencers):X}")
    nudges = FakeNudges(lambda bucket, key: notify(bucket, key, None))
    changes: list[Change] = []

    def user() -> None:
        for order, op in enumerate(ops):
            scheduler.yield_point()
            now[0] += timedelta(milliseconds=op.pause_ms)
            body = f"{op.key}|{op.bucket}|{order}".encode()  # unique: S3's conditions compare ETags
            if op.put:
                s3.put(op.bucket, op.key, body, metadata={"order": str(order)})
            else:
                s3.remove(op.bucket, op.key)
            second = now[0].replace(microsecond=0)
            changes.append(Change(op.key, second, op.bucket, order, body if op.put else None))
        user_done[0] = True

    replicator_writes = [0]

    def worker() -> None:
        replicator = Replicator(
            rules, s3, ledger, FakeProgress(), clock=lambda: now[0], tombstones=tombstones, nudges=nudges
        )

        def apply(event: ChangeEvent) -> None:
            if replicator.apply(event).outcome in APPLIED:
                replicator_writes[0] += 1

        serve_queue(pending, apply, lambda: user_done[0], scheduler, rng, CrrError)

    scheduler.run([user] + [worker for _ in range(workers)])

    _assert_both_hold_the_last_writer(s3, changes)
    return Outcome(len(ops), replicator_writes[0], nudges.sent, dict(s3.calls))


def _assert_both_hold_the_last_writer(s3: FakeS3, changes: list[Change]) -> None:
    for key in KEYS:
        mine = [change for change in changes if change.key == key]
        winner = max(mine, key=lambda c: (c.second, c.bucket, c.order)) if mine else None
        expected = winner.body if winner else None
        west, east = s3.current(WEST, key), s3.current(EAST, key)
        assert (west.body if west else None) == expected, f"{key!r}: west holds {west}, last writer is {winner}"
        assert (east.body if east else None) == expected, f"{key!r}: east holds {east}, last writer is {winner}"
        if west and east:
            assert _user_metadata(west.metadata) == _user_metadata(east.metadata)


def _user_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in metadata.items() if not name.startswith("crr-")}
