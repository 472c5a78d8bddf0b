"""Property: whatever the order, duplication and concurrency of delivery, the replica converges on
the source and is never left holding an older version."""

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
KEYS = ("a", "dir/b", "c d+e")


@dataclass(frozen=True)
class UserOp:
    put: bool
    key: str
    content: int


user_ops = st.lists(
    st.builds(UserOp, put=st.booleans() | st.just(True), key=st.sampled_from(KEYS), content=st.integers(0, 3)),
    min_size=1,
    max_size=14,
)


def _scenario(
    ops: list[UserOp],
    workers: int,
    versioned: bool,
    duplicates: int,
    rng: random.Random,
    stickiness: float,
    record_concurrency: int = 1,
) -> None:
    scheduler = Interleaver(rng, stickiness)
    s3 = FakeS3(scheduler.yield_point)
    s3.create_bucket(SOURCE, "us-west-1", versioned=versioned)
    s3.create_bucket(DESTINATION, "us-east-1")
    ledger = FakeLedger(scheduler.yield_point)
    rule = make_rule(
        rule_id="r",
        source_bucket=SOURCE,
        destination_bucket=DESTINATION,
    )
    rules, progress = FakeRules(rule), FakeProgress()
    pending: list[ChangeEvent] = []
    sequencers = itertools.count(0x5A0000)
    user_done = [False]

    def user() -> None:
        # Each write yields, so replication of earlier writes races later ones.
        for op in ops:
            scheduler.yield_point()
            if op.put:
                s3.put(
                    SOURCE,
                    op.key,
                    f"{op.key}:{op.content}".encode(),
                    metadata={"content": str(op.content)},
                    tags={"t": str(op.content)},
                    content_type=f"text/v{op.content}",
                )
            else:
                s3.remove(SOURCE, op.key)
            event = ChangeEvent(
                bucket=SOURCE,
                key=op.key,
                kind=ChangeKind.CREATED if op.put else ChangeKind.REMOVED,
                event_name="ObjectCreated:Put" if op.put else "ObjectRemoved:Delete",
                event_time=s3._now(),
                sequencer=f"{next(sequencers):X}",
            )
            # At-least-once delivery: some notifications arrive more than once.
            pending.extend([event] * rng.randint(1, duplicates))
            scheduler.wake_all()
        user_done[0] = True

    def worker() -> None:
        # Unordered delivery: any pending notification may come next; a failed one comes again.
        replicator = Replicator(rules, s3, ledger, progress)
        serve_queue(
            pending,
            replicator.apply,
            lambda: user_done[0],
            scheduler,
            rng,
            CrrError,
            record_concurrency=record_concurrency,
            keys_of=lambda event: [(event.bucket, event.key)],
        )

    scheduler.run([user] + [worker for _ in range(workers)])

    assert_replica_equals_source(s3, SOURCE, DESTINATION, KEYS)


@pytest.mark.parametrize("record_concurrency", [1, 8])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=user_ops,
    workers=st.integers(1, 4),
    versioned=st.booleans(),
    duplicates=st.integers(1, 3),
    seed=st.randoms(use_true_random=False),
    stickiness=st.sampled_from([0.0, 0.6, 0.85, 0.95]),
)
def test_replica_converges_on_source_under_shuffled_duplicated_concurrent_delivery(
    record_concurrency: int,
    ops: list[UserOp],
    workers: int,
    versioned: bool,
    duplicates: int,
    seed: random.Random,
    stickiness: float,
) -> None:
    # Given a stream of puts, overwrites and deletes over a few keys,
    # When its notifications are delivered shuffled and duplicated to 1-4 concurrent workers, each
    #      applying one at a time or batches with that many records at once,
    # Then the destination equals the source (asserted inside the scenario).
    _scenario(ops, workers, versioned, duplicates, seed, stickiness, record_concurrency)
