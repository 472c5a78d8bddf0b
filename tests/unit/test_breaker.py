"""The mass-delete breaker: a burst of deletes is held, not applied, until released or discarded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from crr.breaker import (
    BreakerSettings,
    BreakerState,
    DeleteBreaker,
    DeleteWindow,
    discard_held_deletes,
    release_held_deletes,
)
from crr.events import parse_notification
from crr.replication import Outcome, Replicator
from crr.rules import ReplicationRule
from tests.support.fakes import FakeLedger, FakeProgress, FakeRules, FakeS3
from tests.unit.test_replication import DST, SRC, change, make_rule

NOW = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


class FakeBreakerStore:
    """BreakerStore and HeldDeletes in memory; tripping updates the rule the replicator sees."""

    def __init__(self, rules: FakeRules) -> None:
        self.rules = rules
        self.windows: dict[tuple[str, datetime], DeleteWindow] = {}
        self.held: dict[str, str] = {}
        self.current = BreakerState(deletes_held=False, suspended_until=None)  # the table's truth

    def count_delete(self, rule_id: str, window_start: datetime) -> DeleteWindow:
        old = self.windows.get((rule_id, window_start), DeleteWindow(0, 0))
        self.windows[(rule_id, window_start)] = DeleteWindow(old.deletes + 1, old.changes + 1)
        return self.windows[(rule_id, window_start)]

    def state(self, rule_id: str) -> BreakerState:
        return self.current

    def count_copies(self, rule_id: str, window_start: datetime, copies: int) -> None:
        old = self.windows.get((rule_id, window_start), DeleteWindow(0, 0))
        self.windows[(rule_id, window_start)] = DeleteWindow(old.deletes, old.changes + copies)

    def _update(self, **fields: object) -> None:
        """Write the rule: the table's truth, and (as a fresh cache would) the rule the replicator sees."""
        rule = self.rules.rules[SRC].model_copy(update=fields)
        self.current = BreakerState(rule.deletes_held, rule.breaker_suspended_until)
        self.rules.rules[SRC] = rule

    def trip(self, rule_id: str, at: datetime) -> None:
        self._update(deletes_held=True, deletes_held_since=at)

    def hold(self, rule_id: str, key: str, at: datetime) -> None:
        self.held[f"HELD#{key}"] = key

    def held_keys(self, rule_id: str) -> Iterator[tuple[str, str]]:
        yield from list(self.held.items())

    def forget_held(self, rule_id: str, sort_key: str) -> None:
        del self.held[sort_key]

    def release(self, rule_id: str, suspended_until: datetime | None) -> None:
        self._update(deletes_held=False, deletes_held_since=None, breaker_suspended_until=suspended_until)


class Queue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, body: str) -> None:
        self.sent.append(body)


def world(count: int = 3, percent: float = 50.0) -> tuple[FakeS3, FakeRules, FakeBreakerStore, Replicator]:
    s3 = FakeS3()
    s3.create_bucket(SRC, "us-west-1")
    s3.create_bucket(DST, "us-east-1")
    rules = FakeRules(make_rule())
    store = FakeBreakerStore(rules)
    breaker = DeleteBreaker(store, BreakerSettings(count=count, percent=percent, window_seconds=300), clock=lambda: NOW)
    replicator = Replicator(rules, s3, FakeLedger(), FakeProgress(), breaker=breaker, clock=lambda: NOW)
    return s3, rules, store, replicator


def delete_burst(s3: FakeS3, replicator: Replicator, keys: list[str]) -> list[Outcome]:
    """The keys exist in the replica and are deleted at the source; their removals are applied."""
    for key in keys:
        s3.put(DST, key, b"x")
    return [replicator.apply(change(key, f"{index + 1:02X}")).outcome for index, key in enumerate(keys)]


def test_a_burst_of_deletes_trips_the_breaker_and_the_rest_are_held() -> None:
    # Given a breaker of 3 deletes per window
    s3, rules, store, replicator = world(count=3)
    keys = [f"k{index}" for index in range(6)]
    # When six deletes arrive
    outcomes = delete_burst(s3, replicator, keys)
    # Then two are applied, the third trips the breaker, and it and the rest are held
    assert outcomes == [Outcome.DELETED] * 2 + [Outcome.DELETE_HELD] * 4
    assert rules.rules[SRC].deletes_held
    assert sorted(store.held.values()) == keys[2:]
    assert s3.keys(DST) == set(keys[2:])


def test_deletes_among_many_copies_do_not_trip_it() -> None:
    # Given 3 deletes per window at 50 %, and 10 copies counted in the window
    s3, rules, store, replicator = world(count=3, percent=50)
    store.count_copies("r1", BreakerSettings().window_start(NOW), 10)
    # When four deletes arrive (4 of 14 changes, under half)
    outcomes = delete_burst(s3, replicator, ["a", "b", "c", "d"])
    # Then all are applied
    assert outcomes == [Outcome.DELETED] * 4
    assert not rules.rules[SRC].deletes_held


def test_releasing_requeues_held_deletes_through_the_normal_path_and_suspends_the_breaker() -> None:
    # Given a tripped breaker holding three deletes
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a", "b", "c"])
    queue = Queue()
    # When they are released
    report = release_held_deletes(rules.rules[SRC], store, queue, BreakerSettings(window_seconds=300), NOW)
    # Then each is a removal notification for its key, the held list is empty, the breaker suspended
    assert report.released == 3
    assert store.held == {}
    keys = [event.key for body in queue.sent for event in parse_notification(body)]  # type: ignore[union-attr]
    assert sorted(keys) == ["a", "b", "c"]
    assert rules.rules[SRC].breaker_suspended_until == NOW + timedelta(seconds=600)
    # And applying them (as the queue would) deletes the replicas despite the burst
    for body in queue.sent:
        [event] = parse_notification(body)
        assert replicator.apply(event).outcome is Outcome.DELETED  # type: ignore[arg-type]
    assert s3.keys(DST) == set()


def test_a_function_with_a_stale_cached_rule_still_honours_a_release() -> None:
    # Given a tripped breaker whose release the replicator's cached rule has not seen yet
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a", "b"])
    stale = rules.rules[SRC]
    release_held_deletes(stale, store, Queue(), BreakerSettings(), NOW)
    rules.rules[SRC] = stale  # the cache still says "held", without the suspension
    # When a released delete arrives, Then it is applied, not held again
    assert delete_burst(s3, replicator, ["c"]) == [Outcome.DELETED]


def test_a_held_delete_of_a_key_written_again_since_is_not_applied_on_release() -> None:
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a"])
    s3.put(SRC, "a", b"back")  # the user restored it
    queue = Queue()
    release_held_deletes(rules.rules[SRC], store, queue, BreakerSettings(), NOW)
    [event] = parse_notification(queue.sent[0])
    assert replicator.apply(event).outcome is Outcome.COPIED  # type: ignore[arg-type]
    replica = s3.current(DST, "a")
    assert replica is not None
    assert replica.body == b"back"


def test_discarding_forgets_held_deletes_and_keeps_the_replicas() -> None:
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a", "b"])
    report = discard_held_deletes(rules.rules[SRC], store, BreakerSettings(), NOW)
    assert (report.discarded, store.held, rules.rules[SRC].deletes_held) == (2, {}, False)
    assert rules.rules[SRC].breaker_suspended_until == NOW + timedelta(seconds=600)
    assert s3.keys(DST) == {"a", "b"}


def test_the_removal_notification_is_a_real_s3_record() -> None:
    rule: ReplicationRule = make_rule()
    from crr.breaker import removal_notification

    document = json.loads(removal_notification(rule, "a b+c", NOW))
    assert document["Records"][0]["s3"]["object"]["key"] == "a+b%2Bc"
    [event] = parse_notification(json.dumps(document))
    assert event.key == "a b+c"  # type: ignore[union-attr]


def test_copies_reach_the_window_at_most_every_ten_seconds() -> None:
    # Given a breaker whose clock we move
    rules = FakeRules(make_rule())
    store = FakeBreakerStore(rules)
    now = [NOW]
    breaker = DeleteBreaker(store, BreakerSettings(window_seconds=300), clock=lambda: now[0])
    window = BreakerSettings(window_seconds=300).window_start(NOW)
    written = []
    # When copies are counted at 0 s, 3 s and 11 s
    for seconds, copies in ((0, 5), (3, 7), (11, 1)):
        now[0] = NOW + timedelta(seconds=seconds)
        breaker.count_copies("r1", copies)
        written.append(store.windows[("r1", window)].changes)
    # Then the first write carries 5, nothing is written at 3 s, and at 11 s the 8 held back since
    assert written == [5, 5, 13]
    assert store.windows[("r1", window)].deletes == 0


def test_after_a_discard_new_deletes_flow_again() -> None:
    # Given a tripped breaker whose held deletes were discarded
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a", "b"])
    discard_held_deletes(rules.rules[SRC], store, BreakerSettings(window_seconds=300), NOW)
    # When a new delete arrives in the same window (whose counter is still over the threshold),
    # Then it is applied, not held again
    assert delete_burst(s3, replicator, ["c"]) == [Outcome.DELETED]
    assert not rules.rules[SRC].deletes_held


def test_a_function_with_a_stale_cached_rule_does_not_re_trip_after_a_discard() -> None:
    # Given a discard the replicator's cached rule has not seen ("held")
    s3, rules, store, replicator = world(count=1)
    delete_burst(s3, replicator, ["a", "b"])
    stale = rules.rules[SRC]
    discard_held_deletes(stale, store, BreakerSettings(window_seconds=300), NOW)
    rules.rules[SRC] = stale
    # When a delete arrives, Then it is applied and the breaker stays closed
    assert delete_burst(s3, replicator, ["c"]) == [Outcome.DELETED]
    assert not store.current.deletes_held


def test_a_stale_held_cache_counts_afresh_once_the_breaker_was_closed() -> None:
    # Given a cached rule saying "held", while the table says closed with no suspension left
    s3, rules, store, replicator = world(count=3)
    rules.rules[SRC] = rules.rules[SRC].model_copy(update={"deletes_held": True})
    store.current = BreakerState(deletes_held=False, suspended_until=NOW - timedelta(seconds=1))
    # When a delete arrives, Then it is counted in a quiet window and applied, not held
    assert delete_burst(s3, replicator, ["a"]) == [Outcome.DELETED]
    assert store.held == {}
