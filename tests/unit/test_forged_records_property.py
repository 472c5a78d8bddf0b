"""Property: records nobody wrote (forged sequencers, versions and kinds) and replays of old records,
mixed in any order with the real notifications of a user's changes, never leave the replica different
from the source (issue 15.3: a forged sequencer must not fence real changes out)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crr.errors import CrrError
from crr.events import ChangeEvent, ChangeKind
from crr.replication import Replicator
from tests.support.fakes import FakeLedger, FakeProgress, FakeRules, FakeS3, assert_replica_equals_source
from tests.support.interleave import Interleaver, serve_queue
from tests.support.rules import make_rule

SOURCE, DESTINATION = "src-bucket", "dst-bucket"
KEYS = ("a", "dir/b")
# Sequencers a forger might pick: the highest there is, one just above the real ones, and a low one.
FORGED_SEQUENCERS = ("FFFFFFFFFFFFFFFFFF", "5A00FF", "01")


@dataclass(frozen=True)
class UserOp:
    action: str  # put, delete, tag
    key: str


@dataclass(frozen=True)
class Hostile:
    key: str
    sequencer: str
    kind: ChangeKind
    names_real_version: bool  # the forger read the current version id (or ETag) and names it
    replay: bool  # instead: an old real record of the key sent again


user_ops = st.lists(
    st.builds(UserOp, action=st.sampled_from(["put", "put", "delete", "tag"]), key=st.sampled_from(KEYS)),
    min_size=1,
    max_size=10,
)
hostile_records = st.lists(
    st.builds(
        Hostile,
        key=st.sampled_from(KEYS),
        sequencer=st.sampled_from(FORGED_SEQUENCERS),
        kind=st.sampled_from(list(ChangeKind)),
        names_real_version=st.booleans(),
        replay=st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


class _World:
    """A one-way rule on FakeS3; a user whose changes S3 notifies, and a forger, share one queue."""

    def __init__(self, versioned: bool, rng: random.Random, record_concurrency: int = 1) -> None:
        self.scheduler = Interleaver(rng, 0.6)
        self.rng = rng
        self.versioned = versioned
        self.s3 = FakeS3(self.scheduler.yield_point)
        self.s3.create_bucket(SOURCE, "us-west-1", versioned=versioned)
        self.s3.create_bucket(DESTINATION, "us-east-1")
        self.s3.on_attributes = lambda bucket, key: None  # the user's tag records are sent by ``notify``
        self.rule = make_rule(
            rule_id="r",
            source_bucket=SOURCE,
            destination_bucket=DESTINATION,
        )
        self.ledger = FakeLedger(self.scheduler.yield_point)
        self.pending: list[ChangeEvent] = []
        self.sent: list[ChangeEvent] = []
        self.sequencers = itertools.count(0x5A0000)
        self.senders = 2
        self.record_concurrency = record_concurrency

    def deliver(self, event: ChangeEvent) -> None:
        self.pending.append(event)
        self.scheduler.wake_all()

    def notify(self, key: str, kind: ChangeKind, name: str) -> None:
        """S3's record of a change just made: its sequencer, and the version and ETag it names."""
        current = self.s3.current(SOURCE, key)
        created = current is not None and kind is ChangeKind.CREATED
        event = ChangeEvent(
            bucket=SOURCE,
            key=key,
            kind=kind,
            event_name=name,
            event_time=self.s3._now(),
            sequencer=f"{next(self.sequencers):X}",
            version_id=current.version_id if created and self.versioned and current else None,
            etag=current.etag if created and current else None,
        )
        self.sent.append(event)
        self.deliver(event)

    def forge(self, record: Hostile) -> ChangeEvent:
        earlier = [event for event in self.sent if event.key == record.key]
        if record.replay and earlier:
            return self.rng.choice(earlier)
        named = self.s3.current(SOURCE, record.key) if record.names_real_version else None
        version = (named.version_id if named else "forged-version") if self.versioned else None
        return ChangeEvent(
            bucket=SOURCE,
            key=record.key,
            kind=record.kind,
            event_name="ObjectCreated:Put",
            event_time=self.s3._now(),
            sequencer=record.sequencer,
            version_id=version,
            etag=named.etag if named else '"0123456789abcdef0123456789abcdef"',
        )

    def user(self, ops: list[UserOp]) -> None:
        for order, op in enumerate(ops):
            self.scheduler.yield_point()
            if op.action == "put":
                body = f"{op.key}:{order}".encode()
                self.s3.put(SOURCE, op.key, body, metadata={"n": str(order)}, tags={"t": "0"})
                self.notify(op.key, ChangeKind.CREATED, "ObjectCreated:Put")
            elif op.action == "delete":
                self.s3.remove(SOURCE, op.key)
                self.notify(op.key, ChangeKind.REMOVED, "ObjectRemoved:Delete")
            elif self.s3.current(SOURCE, op.key) is not None:
                self.s3.set_tags(SOURCE, op.key, {"t": str(order)})
                self.notify(op.key, ChangeKind.METADATA, "ObjectTagging:Put")
        self.senders -= 1

    def forger(self, hostile: list[Hostile]) -> None:
        for record in hostile:
            self.scheduler.yield_point()
            self.deliver(self.forge(record))
        self.senders -= 1

    def worker(self) -> None:
        replicator = Replicator(FakeRules(self.rule), self.s3, self.ledger, FakeProgress())
        serve_queue(
            self.pending,
            replicator.apply,
            lambda: self.senders == 0,
            self.scheduler,
            self.rng,
            CrrError,
            record_concurrency=self.record_concurrency,
            keys_of=lambda event: [(event.bucket, event.key)],
        )


@pytest.mark.parametrize("record_concurrency", [1, 8])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=user_ops,
    hostile=hostile_records,
    versioned=st.booleans(),
    workers=st.integers(1, 3),
    seed=st.randoms(use_true_random=False),
)
def test_forged_and_replayed_records_never_leave_the_replica_different_from_the_source(
    record_concurrency: int,
    ops: list[UserOp],
    hostile: list[Hostile],
    versioned: bool,
    workers: int,
    seed: random.Random,
) -> None:
    # Given a user putting, deleting and tagging keys, each change notified as S3 would,
    # When forged records (the highest sequencer, bogus or real versions, any kind) and replays of old
    #      records are sent to the same queue, in any order, handled by 1-3 concurrent workers (one
    #      record at a time, or batches with that many records at once),
    # Then the replica equals the source: bytes, metadata, tags and content type
    world = _World(versioned, seed, record_concurrency)
    world.scheduler.run(
        [lambda: world.user(ops), lambda: world.forger(hostile)] + [world.worker for _ in range(workers)]
    )
    assert_replica_equals_source(world.s3, SOURCE, DESTINATION, KEYS)
