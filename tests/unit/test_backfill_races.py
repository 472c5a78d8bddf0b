"""Property: a backfill racing live writes and deletes leaves the replica equal to the source. Nothing
newer is overwritten with an older listing's version, and nothing deleted is resurrected, whatever the
interleaving of the backfill's listing, copies and ledger writes with the user and the live path."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crr.backfill.engine import BackfillEngine
from crr.backfill.reconcile import reconciler
from crr.errors import CrrError
from crr.events import ChangeEvent, ChangeKind, parse_notification
from crr.replication import Replicator
from tests.support.backfill_runner import prefix_requests, run_range
from tests.support.fakes import (
    FakeFastCopier,
    FakeLedger,
    FakePageListing,
    FakeProgress,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
    assert_replica_equals_source,
)
from tests.support.interleave import Interleaver, serve_queue
from tests.support.rules import make_rule

SOURCE, DESTINATION = "src-bucket", "dst-bucket"
KEYS = ("a", "b/1", "b/2", "c d+e", "z")
T0 = datetime(2026, 11, 25, tzinfo=UTC)
COPY_YIELDS = 4


@dataclass(frozen=True)
class UserOp:
    put: bool
    key: str
    content: int


@dataclass(frozen=True)
class Before:
    """A key as it was when the rule was created: in the source, and perhaps already (or stale) in the replica."""

    key: str
    replica: str  # "none", "same", "stale"


user_ops = st.lists(
    st.builds(UserOp, put=st.booleans(), key=st.sampled_from(KEYS), content=st.integers(1, 3)), max_size=10
)
existing = st.lists(
    st.builds(Before, key=st.sampled_from(KEYS), replica=st.sampled_from(["none", "same", "stale"])),
    unique_by=lambda before: before.key,
)


class QueueNotices(FakeReplicationQueue):
    """The replication queue as the backfill sees it: failed keys become pending changes for the live path."""

    def __init__(self, pending: list[ChangeEvent], scheduler: Interleaver) -> None:
        super().__init__()
        self.pending = pending
        self.scheduler = scheduler

    def send_batch(self, bodies: Sequence[str]) -> None:
        super().send_batch(bodies)
        for body in bodies:
            self.pending.extend(event for event in parse_notification(body) if isinstance(event, ChangeEvent))
        self.scheduler.wake_all()


def _scenario(
    before: list[Before],
    ops: list[UserOp],
    workers: int,
    page_size: int,
    versioned: bool,
    rng: random.Random,
    stickiness: float,
) -> None:
    # Stickiness lets one thread run several requests in a row while another stalls between two of its
    # own: the backfill between reading a source and writing its copy, while the user and the live path
    # write, replicate and record.
    scheduler = Interleaver(rng, stickiness)
    s3 = FakeS3(scheduler.yield_point)
    s3.create_bucket(SOURCE, "us-west-1", versioned=versioned)
    s3.create_bucket(DESTINATION, "us-east-1")
    for item in before:
        s3.put(SOURCE, item.key, f"{item.key}:0".encode(), metadata={"v": "0"}, tags={"t": "0"})
        if item.replica != "none":
            body = f"{item.key}:0" if item.replica == "same" else "stale"
            s3.put(DESTINATION, item.key, body.encode(), metadata={"v": "0"}, tags={"t": "0"})
    ledger = FakeLedger(scheduler.yield_point)
    rule = make_rule(
        rule_id="r",
        source_bucket=SOURCE,
        destination_bucket=DESTINATION,
        created_at=T0,
    )
    rules, progress = FakeRules(rule), FakeProgress()
    pending: list[ChangeEvent] = []
    sequencers = itertools.count(0x5A0000)
    done = {"user": False, "backfill": False}

    def user() -> None:
        for op in ops:
            scheduler.yield_point()
            if op.put:
                s3.put(
                    SOURCE, op.key, f"{op.key}:{op.content}".encode(), metadata={"v": str(op.content)}, tags={"t": "u"}
                )
            else:
                s3.remove(SOURCE, op.key)
            pending.append(
                ChangeEvent(
                    bucket=SOURCE,
                    key=op.key,
                    kind=ChangeKind.CREATED if op.put else ChangeKind.REMOVED,
                    event_name="ObjectCreated:Put" if op.put else "ObjectRemoved:Delete",
                    event_time=T0,
                    sequencer=f"{next(sequencers):X}",
                )
            )
            scheduler.wake_all()
        done["user"] = True

    def backfill() -> None:
        engine = BackfillEngine(
            FakePageListing(s3, scheduler.yield_point),
            FakeFastCopier(s3, scheduler.yield_point, copy_yields=COPY_YIELDS),
            ledger,
            reconciler(Replicator(rules, s3, ledger, progress)),
            QueueNotices(pending, scheduler),
            concurrency=1,
        )
        for request in prefix_requests(rule, page_size=page_size, count_pages=1):
            for _result in run_range(engine, rule, request):
                pass
        done["backfill"] = True

    def worker() -> None:
        replicator = Replicator(rules, s3, ledger, progress)
        serve_queue(pending, replicator.apply, lambda: all(done.values()), scheduler, rng, CrrError)

    scheduler.run([user, backfill] + [worker for _ in range(workers)])

    assert_replica_equals_source(s3, SOURCE, DESTINATION, KEYS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=existing,
    ops=user_ops,
    workers=st.integers(1, 3),
    page_size=st.integers(1, 3),
    versioned=st.booleans(),
    seed=st.randoms(use_true_random=False),
    stickiness=st.sampled_from([0.0, 0.6, 0.85, 0.95]),
)
def test_a_backfill_racing_live_changes_leaves_the_replica_equal_to_the_source(
    before: list[Before],
    ops: list[UserOp],
    workers: int,
    page_size: int,
    versioned: bool,
    seed: random.Random,
    stickiness: float,
) -> None:
    _scenario(before, ops, workers, page_size, versioned, seed, stickiness)
