"""The mass-delete breaker: a burst of deletes is held, not applied, until released or discarded; the
operator's answer covers the whole burst; the count slides, so no burst slips through at a window edge.

The breaker runs on its real DynamoDB store (moto), so what is tested is what the functions do."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crr.adapters.dynamodb import DynamoBreakerStore, DynamoRules
from crr.breaker import (
    BreakerSettings,
    DeleteBreaker,
    DeleteDecision,
    discard_held_deletes,
    release_held_deletes,
    removal_notification,
)
from crr.events import ChangeEvent, ChangeKind, parse_notification
from crr.replication import Outcome, Replicator
from crr.rules import ReplicationRule
from tests.support.aws import client, create_rules_table
from tests.support.fakes import FakeBreakerStore, FakeLedger, FakeProgress, FakeReplicationQueue, FakeS3
from tests.support.rules import make_rule
from tests.unit.test_replication import DST, SRC

TABLE = "rules"
WINDOW = 300
# A window edge of the old fixed windows (epoch seconds divisible by 300), so tests can straddle one.
EDGE = datetime(2026, 11, 25, 12, 5, tzinfo=UTC)
NOW = EDGE + timedelta(seconds=30)


class World:
    """A rule in DynamoDB (moto), a replicator with a breaker on the real store, and a clock to move."""

    def __init__(self, db: Any, count: int, percent: float = 50.0) -> None:
        self.now = NOW
        self.s3 = FakeS3()
        self.s3.create_bucket(SRC, "us-west-1")
        self.s3.create_bucket(DST, "us-east-1")
        self.rules = DynamoRules(db, TABLE, cache_seconds=0)
        self.rules.create(make_rule())
        self.store = DynamoBreakerStore(db, TABLE)
        self.settings = BreakerSettings(count=count, percent=percent, window_seconds=WINDOW)
        self.replicator = self.container()

    def clock(self) -> datetime:
        return self.now

    def container(self) -> Replicator:
        """A function container: its own breaker (and whatever it has cached), the shared table."""
        breaker = DeleteBreaker(self.store, self.settings, clock=self.clock)
        return Replicator(self.rules, self.s3, FakeLedger(), FakeProgress(), breaker=breaker, clock=self.clock)

    @property
    def rule(self) -> ReplicationRule:
        return self.rules.get("r1")

    def deletes(
        self, keys: list[str], made_at: datetime | None = None, replicator: Replicator | None = None
    ) -> list[Outcome]:
        """The keys exist in the replica and were deleted at the source at ``made_at`` (default: now);
        their notifications are applied now."""
        for key in keys:
            self.s3.put(DST, key, b"x")
        return [
            (replicator or self.replicator).apply(removal(key, made_at or self.now, index)).outcome
            for index, key in enumerate(keys)
        ]

    def held(self) -> list[str]:
        return sorted(key for _, key in self.store.held_keys("r1"))

    def release(self, queue: FakeReplicationQueue | None = None) -> int:
        return release_held_deletes(
            self.rule, self.store, queue or FakeReplicationQueue(), self.settings, self.now
        ).released

    def discard(self) -> int:
        return discard_held_deletes(self.rule, self.store, self.settings, self.now).discarded


def removal(key: str, made_at: datetime, index: int = 0) -> ChangeEvent:
    return ChangeEvent(
        bucket=SRC,
        key=key,
        kind=ChangeKind.REMOVED,
        event_name="ObjectRemoved:Delete",
        event_time=made_at,
        sequencer=f"{index + 1:04X}",
    )


@pytest.fixture
def db(aws: None) -> Any:
    dynamodb = client("dynamodb", "us-west-1")
    create_rules_table(dynamodb, TABLE)
    return dynamodb


@pytest.fixture
def world(db: Any) -> Callable[..., World]:
    return lambda count, percent=50.0: World(db, count, percent)


def keys(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:03d}" for index in range(count)]


def test_a_burst_of_deletes_trips_the_breaker_and_the_rest_are_held(world: Callable[..., World]) -> None:
    # Given a breaker of 3 deletes per window
    w = world(3)
    burst = keys("k", 6)
    # When six deletes arrive
    outcomes = w.deletes(burst)
    # Then two are applied, the third trips the breaker, and it and the rest are held
    assert outcomes == [Outcome.DELETED] * 2 + [Outcome.DELETE_HELD] * 4
    assert w.rule.deletes_held
    assert w.held() == burst[2:]
    assert w.s3.keys(DST) == set(burst[2:])


def test_deletes_among_many_copies_do_not_trip_it(world: Callable[..., World]) -> None:
    # Given 3 deletes per window at 50 %, and 10 copies applied in the window
    w = world(3, percent=50)
    for key in keys("copy", 10):
        w.s3.put(SRC, key, b"new")
        w.replicator.apply(removal(key, w.now).model_copy(update={"kind": ChangeKind.CREATED}))
    w.replicator.flush_progress()
    # When four deletes arrive (4 of 14 changes, under half)
    outcomes = w.deletes(keys("d", 4))
    # Then all are applied
    assert outcomes == [Outcome.DELETED] * 4
    assert not w.rule.deletes_held


def test_two_bursts_just_under_the_threshold_across_a_window_edge_trip_it(world: Callable[..., World]) -> None:
    # Given a threshold of 100 deletes per 300 s
    w = world(100)
    # When 95 deletes arrive 8 s before a window edge and 95 more 9 s after it
    w.now = EDGE - timedelta(seconds=8)
    first = w.deletes(keys("a", 95))
    w.now = EDGE + timedelta(seconds=9)
    second = w.deletes(keys("b", 95))
    # Then 190 deletes in 17 s are one burst: the 100th trips the breaker and the rest are held
    outcomes = first + second
    assert outcomes.count(Outcome.DELETED) == 99
    assert outcomes.count(Outcome.DELETE_HELD) == 91
    assert len(w.held()) == 91


def test_the_count_slides_so_deletes_spread_over_more_than_a_window_flow(world: Callable[..., World]) -> None:
    # Given a threshold of 10 deletes per 300 s
    w = world(10)
    # When 9 deletes arrive, then 9 more 400 s later, then 9 more 400 s after that
    outcomes = []
    for round_ in range(3):
        w.now = NOW + timedelta(seconds=400 * round_)
        outcomes += w.deletes(keys(f"r{round_}-", 9))
    # Then no window ever held 10: all are applied
    assert outcomes == [Outcome.DELETED] * 27
    assert not w.rule.deletes_held


def test_resuming_a_breaker_that_holds_nothing_changes_nothing(world: Callable[..., World]) -> None:
    # Given a closed breaker of 100 deletes per window, and an operator resuming it anyway
    w = world(100)
    report = release_held_deletes(w.rule, w.store, FakeReplicationQueue(), w.settings, w.now)
    assert report.released == 0
    # When a burst of 150 deletes follows
    outcomes = w.deletes(keys("k", 150))
    # Then the breaker still trips at the 100th
    assert outcomes.count(Outcome.DELETED) == 99
    assert outcomes.count(Outcome.DELETE_HELD) == 51


def test_releasing_requeues_held_deletes_through_the_normal_path_and_counts_afresh(
    world: Callable[..., World],
) -> None:
    # Given a breaker of 2 per window, tripped by the second of three deletes
    w = world(2)
    assert w.deletes(["a", "b", "c"]) == [Outcome.DELETED] + [Outcome.DELETE_HELD] * 2
    queue = FakeReplicationQueue()
    # When the held deletes are released
    assert w.release(queue) == 2
    # Then each is a removal notification for its key, the held list is empty, the breaker closed
    assert w.held() == []
    events = [event for body in queue.bodies for event in parse_notification(body)]
    assert sorted(event.key for event in events) == ["b", "c"]  # type: ignore[union-attr]
    assert not w.rule.deletes_held
    # And applying them (as the queue would) deletes the replicas despite the burst
    w.now += timedelta(seconds=5)
    assert [w.replicator.apply(event).outcome for event in events] == [Outcome.DELETED] * 2  # type: ignore[arg-type]
    assert w.s3.keys(DST) == set()
    # And the count starts afresh: the next delete is the first of a new count, the one after trips
    w.now += timedelta(seconds=5)
    assert w.deletes(["d", "e"]) == [Outcome.DELETED, Outcome.DELETE_HELD]


def test_a_container_that_saw_the_breaker_held_applies_released_deletes(world: Callable[..., World]) -> None:
    # Given a container that last saw the breaker held, and a release made meanwhile
    w = world(1)
    other = w.container()
    w.deletes(["a", "b"], replicator=other)
    queue = FakeReplicationQueue()
    w.release(queue)
    # When a released delete reaches that container, Then it is applied, not held again
    [event] = parse_notification(queue.bodies[0])
    assert other.apply(event).outcome is Outcome.DELETED  # type: ignore[arg-type]
    assert w.held() == []


def test_a_held_delete_of_a_key_written_again_since_is_not_applied_on_release(world: Callable[..., World]) -> None:
    w = world(1)
    w.deletes(["a"])
    w.s3.put(SRC, "a", b"back")  # the user restored it
    queue = FakeReplicationQueue()
    w.release(queue)
    [event] = parse_notification(queue.bodies[0])
    assert w.replicator.apply(event).outcome is Outcome.COPIED  # type: ignore[arg-type]
    replica = w.s3.current(DST, "a")
    assert replica is not None
    assert replica.body == b"back"


def test_discarding_forgets_held_deletes_and_keeps_the_replicas(world: Callable[..., World]) -> None:
    w = world(1)
    w.deletes(["a", "b"])
    assert w.discard() == 2
    assert (w.held(), w.rule.deletes_held) == ([], False)
    assert w.s3.keys(DST) == {"a", "b"}


def test_a_discard_also_discards_the_burst_s_deletes_still_queued(world: Callable[..., World]) -> None:
    # Given a burst made over 20 s, of which the breaker (3 per window) held some, then discarded
    w = world(3)
    made = [NOW - timedelta(seconds=20) + timedelta(seconds=index) for index in range(20)]
    w.deletes(keys("k", 5), made_at=made[0])
    w.now = NOW + timedelta(seconds=1)
    w.discard()
    # When the rest of the burst's notifications arrive, long after the old two-window suspension
    outcomes = []
    for offset, made_at in zip((5, 120, 700), made[5:], strict=False):
        w.now = NOW + timedelta(seconds=offset)
        outcomes += w.deletes([f"late{offset}"], made_at=made_at)
    # Then none reaches the replica, none is held, and a later, deliberate delete replicates
    assert outcomes == [Outcome.DELETE_DISCARDED] * 3
    assert w.held() == []
    assert {"late5", "late120", "late700"} <= w.s3.keys(DST)
    assert w.deletes(["deliberate"]) == [Outcome.DELETED]


def test_a_burst_still_arriving_after_the_discard_is_discarded_until_its_rate_falls(
    world: Callable[..., World],
) -> None:
    # Given a breaker of 5 per 300 s that tripped, and a discard
    w = world(5)
    w.deletes(keys("k", 8))
    w.now += timedelta(seconds=10)
    w.discard()
    # When the wipe goes on after the discard (deletes made after it, at the burst's rate)
    w.now += timedelta(seconds=10)
    after = w.deletes(keys("after", 10))
    # Then they are discarded, and nothing is held
    assert after == [Outcome.DELETE_DISCARDED] * 10
    assert w.held() == []
    # When the wipe stops and a window passes, Then deliberate deletes replicate again
    w.now += timedelta(seconds=WINDOW + 60)
    assert w.deletes(["x", "y"]) == [Outcome.DELETED] * 2
    # And a new burst is held again (the discard is over)
    assert w.deletes(keys("new", 4)) == [Outcome.DELETED] * 2 + [Outcome.DELETE_HELD] * 2


@pytest.mark.parametrize("before", ["hold", "read"], ids=["before-the-held-key", "before-the-re-read"])
def test_a_discard_that_races_a_hold_leaves_no_held_delete(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch, before: str
) -> None:
    # Given a tripped breaker, and a container deciding to hold a delete of the burst
    w = world(1)
    w.deletes(["a", "b"])
    original = getattr(DynamoBreakerStore, before)

    def discard_first(store: DynamoBreakerStore, *args: Any) -> Any:
        monkeypatch.setattr(DynamoBreakerStore, before, original)
        w.discard()  # the operator's discard lands while the delete is being held
        return original(store, *args)

    monkeypatch.setattr(DynamoBreakerStore, before, discard_first)
    # When that delete is decided, Then it is discarded and no held key is left behind
    assert w.deletes(["c"]) == [Outcome.DELETE_DISCARDED]
    assert w.held() == []


def test_the_removal_notification_is_a_real_s3_record() -> None:
    rule: ReplicationRule = make_rule()
    document = json.loads(removal_notification(rule, "a b+c", NOW))
    assert document["Records"][0]["s3"]["object"]["key"] == "a+b%2Bc"
    [event] = parse_notification(json.dumps(document))
    assert event.key == "a b+c"  # type: ignore[union-attr]


def test_copies_reach_the_count_at_most_every_ten_seconds(world: Callable[..., World]) -> None:
    # Given a breaker whose clock we move
    w = world(1000)
    breaker = DeleteBreaker(w.store, w.settings, clock=w.clock)
    written = []
    # When copies are counted at 0 s, 3 s and 11 s
    for seconds, copies in ((0, 5), (3, 7), (11, 1)):
        w.now = NOW + timedelta(seconds=seconds)
        breaker.count_copies("r1", copies)
        written.append(w.settings.sliding(w.store.read("r1"), w.now).changes)
    # Then the first write carries 5, nothing is written at 3 s, and at 11 s the 8 held back since
    assert written == [5, 5, 13]
    assert w.settings.sliding(w.store.read("r1"), w.now).deletes == 0


def test_old_slots_are_dropped_so_the_breaker_item_stays_small(world: Callable[..., World]) -> None:
    # Given deletes counted once a minute for an hour
    w = world(1000)
    for minute in range(60):
        w.now = NOW + timedelta(minutes=minute)
        w.deletes([f"k{minute}"])
    # Then the item holds the slots of about one window, not of the hour
    assert len(w.store.read("r1").slots()) <= 12


@settings(max_examples=150, deadline=None)
@example(count=2, window=10, gaps=[0.05, 0.97])  # two deletes 9.7 s apart, the first early in its slot
@example(count=2, window=10, gaps=[0.98, 0.04])  # two deletes 0.4 s apart, across a fixed window's edge
@given(
    count=st.integers(min_value=1, max_value=12),
    window=st.integers(min_value=10, max_value=600),
    gaps=st.lists(st.floats(min_value=0, max_value=1.2), min_size=1, max_size=60),
)
def test_no_window_long_span_ever_applies_as_many_deletes_as_the_threshold(
    count: int, window: int, gaps: list[float]
) -> None:
    # Given a breaker of `count` deletes per `window` seconds (any share of the changes)
    clock = [NOW]
    breaker = DeleteBreaker(
        FakeBreakerStore(), BreakerSettings(count=count, percent=0, window_seconds=window), clock=lambda: clock[0]
    )
    rule = make_rule()
    applied: list[datetime] = []
    # When deletes arrive with any gaps between them (in windows)
    for index, gap in enumerate(gaps):
        clock[0] += timedelta(seconds=gap * window)
        if breaker.decide(rule, f"k{index}", clock[0]) is DeleteDecision.APPLY:
            applied.append(clock[0])
    # Then no span of one window holds `count` applied deletes (fixed windows let up to 2 x count - 2)
    for first, moment in enumerate(applied):
        within = [later for later in applied[first:] if (later - moment).total_seconds() < window]
        assert len(within) < count


def test_the_breaker_s_dynamodb_requests_per_delete_are_bounded(world: Callable[..., World]) -> None:
    # Given a breaker of 3 per window whose store counts its own DynamoDB requests
    w = world(3)
    db = client("dynamodb", "us-west-1")
    calls: list[str] = []
    db.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    w.store = DynamoBreakerStore(db, TABLE)
    w.replicator = w.container()

    def cost(keys: list[str], made_at: datetime | None = None) -> list[str]:
        calls.clear()
        w.deletes(keys, made_at)
        return list(calls)

    # Then a delete that replicates costs one UpdateItem (the count, which returns the state)
    assert cost(["a"]) == ["UpdateItem"]
    assert cost(["b"]) == ["UpdateItem"]
    # And the delete that trips it: the count, the trip (breaker item and the rule's mirror), the held key
    assert cost(["c"]) == ["UpdateItem", "UpdateItem", "UpdateItem", "PutItem", "GetItem"]
    # And a held delete: the count, the held key and the re-read
    assert cost(["d"]) == ["UpdateItem", "PutItem", "GetItem"]
    # And once the burst is discarded, its late deletes cost one count and its undo the first time...
    w.discard()
    assert cost(["e"], made_at=NOW) == ["UpdateItem", "UpdateItem"]
    # ...and nothing after that
    assert cost(["f", "g"], made_at=NOW) == []
