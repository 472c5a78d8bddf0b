"""What one record costs: the requests ``Replicator.apply`` makes in the common cases, counted with the
fakes' request counters and compared with the table in crr.replication's docstring (so the table cannot
drift from the code), and the worst case its retry bounds allow."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import crr.replication
from crr.breaker import BreakerSettings, DeleteBreaker
from crr.errors import ReconcileContentionError
from crr.events import ChangeEvent, ChangeKind
from crr.models import BreakerRecord, CopyRequest, KeyVersion, LedgerEntry
from crr.one_way_reconciliation import SOURCE_CHANGE_ATTEMPTS
from crr.replication import LEDGER_CONFLICT_ATTEMPTS, Outcome, Replicator
from crr.two_way_reconciliation import SIDE_CHANGE_ATTEMPTS
from tests.support.fakes import (
    FakeBreakerStore,
    FakeLedger,
    FakePeerNudges,
    FakeProgress,
    FakeRules,
    FakeS3,
    FakeTombstones,
)
from tests.support.rules import DESTINATION_BUCKET, EAST, SOURCE_BUCKET, WEST, make_rule, two_way_rules

SRC, DST = SOURCE_BUCKET, DESTINATION_BUCKET
# ledger requests, delete-breaker requests, S3 requests by operation
Requests = tuple[str, str, dict[str, int]]
REGIONS = {SRC: WEST, DST: EAST}
START = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _event(bucket: str, key: str, sequencer: str, kind: ChangeKind = ChangeKind.CREATED) -> ChangeEvent:
    return ChangeEvent(
        bucket=bucket, key=key, kind=kind, event_name="ObjectCreated:Put", event_time=START, sequencer=sequencer
    )


class CountingBreakerStore(FakeBreakerStore):
    """The breaker item in memory, counting the requests the breaker makes of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def count_delete(self, rule_id: str, slot: int, stale: Iterable[int], deletes: int = 1) -> BreakerRecord:
        self.requests += 1
        return super().count_delete(rule_id, slot, stale, deletes)

    def count_copies(self, rule_id: str, slot: int, copies: int, overwrites: int, at: datetime) -> None:
        self.requests += 1


class Site:
    """A source and a destination bucket, one-way (``two_way=False``) or as a two-way pair, with every
    port counting its requests."""

    def __init__(self, *, two_way: bool) -> None:
        self.now = START
        self.s3 = FakeS3(clock=self.clock)
        for bucket, region in REGIONS.items():
            self.s3.create_bucket(bucket, region, versioned=two_way)
        self.ledger = FakeLedger()
        self.breaker_store = CountingBreakerStore()
        rules = two_way_rules((SRC, WEST), (DST, EAST)) if two_way else (make_rule(),)
        self.replicator = Replicator(
            FakeRules(*rules),
            self.s3,
            self.ledger,
            FakeProgress(),
            clock=self.clock,
            breaker=DeleteBreaker(self.breaker_store, BreakerSettings(), clock=self.clock),
            tombstones=FakeTombstones() if two_way else None,
            nudges=FakePeerNudges(lambda bucket, key: None) if two_way else None,
        )

    def clock(self) -> datetime:
        self.now += timedelta(milliseconds=1500)
        return self.now

    def start_counting(self) -> None:
        self.s3.calls.clear()
        self.ledger.reads = self.ledger.writes = 0
        self.breaker_store.requests = 0

    def counted(self) -> Requests:
        """The requests since ``start_counting``, as the docstring's table spells them."""
        ledger = ", ".join(["read"] * self.ledger.reads + ["write"] * self.ledger.writes) or "-"
        breaker = "count" if self.breaker_store.requests == 1 else str(self.breaker_store.requests or "-")
        return ledger, breaker, dict(self.s3.calls)


def _new_object(two_way: bool) -> Site:
    site = Site(two_way=two_way)
    site.s3.put(SRC, "k", b"v1")
    site.start_counting()
    assert site.replicator.apply(_event(SRC, "k", "01")).outcome is Outcome.COPIED
    return site


def _overwrite(two_way: bool) -> Site:
    site = Site(two_way=two_way)
    site.s3.put(SRC, "k", b"v1")
    site.replicator.apply(_event(SRC, "k", "01"))
    site.s3.put(SRC, "k", b"v2")
    site.start_counting()
    assert site.replicator.apply(_event(SRC, "k", "02")).outcome is Outcome.COPIED
    return site


def _delete() -> Site:
    site = Site(two_way=False)
    site.s3.put(SRC, "k", b"v1")
    site.replicator.apply(_event(SRC, "k", "01"))
    site.s3.remove(SRC, "k")
    site.start_counting()
    assert site.replicator.apply(_event(SRC, "k", "02", ChangeKind.REMOVED)).outcome is Outcome.DELETED
    return site


def _replica_echo() -> Site:
    site = Site(two_way=True)
    site.s3.put(SRC, "k", b"v1")
    site.replicator.apply(_event(SRC, "k", "01"))
    site.start_counting()
    # the notification of crr's own replica, handled by the opposite rule
    assert site.replicator.apply(_event(DST, "k", "01")).outcome is Outcome.REPLICA_OF_DESTINATION
    return site


def _duplicate() -> Site:
    site = Site(two_way=False)
    site.s3.put(SRC, "k", b"v1")
    site.replicator.apply(_event(SRC, "k", "01"))
    site.start_counting()
    assert site.replicator.apply(_event(SRC, "k", "01")).outcome is Outcome.DUPLICATE
    return site


def _stale() -> Site:
    site = Site(two_way=False)
    site.s3.put(SRC, "k", b"v1")
    site.replicator.apply(_event(SRC, "k", "02"))
    site.start_counting()
    assert site.replicator.apply(_event(SRC, "k", "01")).outcome is Outcome.STALE
    return site


CASES = {
    "new object, one-way": lambda: _new_object(two_way=False),
    "overwrite, one-way": lambda: _overwrite(two_way=False),
    "delete, one-way": _delete,
    "duplicate (fenced)": _duplicate,
    "older sequencer (stale)": _stale,
    "new object, two-way": lambda: _new_object(two_way=True),
    "overwrite, two-way": lambda: _overwrite(two_way=True),
    "replica echo, two-way": _replica_echo,
}


def documented_requests() -> dict[str, Requests]:
    """The table of requests per record in crr.replication's docstring, by case."""
    doc = crr.replication.__doc__ or ""
    lines = doc[doc.index("Requests per record") :].splitlines()
    table = {}
    for line in lines[lines.index("") + 2 :]:  # after the blank line and the column header
        if not line.strip():
            break
        case, ledger, breaker, s3 = re.split(r"\s{2,}", line.strip())
        table[case] = (ledger, breaker, _operations(s3))
    return table


def _operations(column: str) -> dict[str, int]:
    """``HeadObject x2, CopyObject`` as counts by operation ("-": none)."""
    counts = {}
    for entry in column.split(", ") if column != "-" else []:
        name, _, times = entry.partition(" x")
        counts[name] = int(times or 1)
    return counts


@pytest.mark.parametrize("case", list(CASES))
def test_each_common_case_makes_the_requests_the_docstring_states(case: str) -> None:
    # Given the table of requests per record in crr.replication's docstring
    documented = documented_requests()
    # When the case is applied with every port counting
    site = CASES[case]()
    # Then it made exactly the requests the table states for it
    assert site.counted() == documented[case]


def test_the_docstring_states_no_case_the_tests_do_not_count() -> None:
    assert set(documented_requests()) == set(CASES)


class SourceOverwrittenBeforeEachCopy(FakeS3):
    """A source a user overwrites between crr's HEAD and its copy, on all but every ``of``-th copy."""

    def __init__(self, of: int) -> None:
        super().__init__()
        self.of = of
        self.copies = 0

    def copy_version(self, request: CopyRequest) -> KeyVersion:
        self.copies += 1
        if self.copies % self.of:
            self.put(SRC, request.state.key, f"write {self.copies}".encode())
        return super().copy_version(request)


class LedgerWrittenBeforeEachRecord(FakeLedger):
    """A ledger another worker writes the key's entry to right before each of crr's conditional writes."""

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        found = self.entries.get((rule_id, key))
        self.entries[(rule_id, key)] = replace(entry, revision=(found.revision if found else 0) + 1)
        super().record(rule_id, key, entry, expected_revision)


def test_the_worst_case_of_one_record_is_the_product_of_the_two_bounds_then_the_queue_retries() -> None:
    # Given a source overwritten between HEAD and copy on two of every three copies (the inner bound's
    # worst case that still copies), and a ledger another worker writes before each of crr's writes
    s3 = SourceOverwrittenBeforeEachCopy(of=SOURCE_CHANGE_ATTEMPTS)
    for bucket, region in REGIONS.items():
        s3.create_bucket(bucket, region)
    s3.put(SRC, "k", b"v1")
    ledger = LedgerWrittenBeforeEachRecord()
    replicator = Replicator(FakeRules(make_rule()), s3, ledger, FakeProgress())
    # When one record of the key is applied
    with pytest.raises(ReconcileContentionError):
        replicator.apply(_event(SRC, "k", "01"))
    # Then it gave up after 3 reconciles of 3 copy attempts each: 9 HEADs and 9 copies, 3 ledger writes
    worst = LEDGER_CONFLICT_ATTEMPTS * SOURCE_CHANGE_ATTEMPTS
    assert (LEDGER_CONFLICT_ATTEMPTS, SOURCE_CHANGE_ATTEMPTS) == (3, 3)
    assert s3.calls == {"HeadObject": worst, "CopyObject": worst}
    assert ledger.writes == LEDGER_CONFLICT_ATTEMPTS
    assert ledger.reads == 1 + LEDGER_CONFLICT_ATTEMPTS  # the fence's read, and one after each conflict


def test_a_two_way_key_whose_replica_keeps_changing_is_compared_at_most_side_change_attempts_times() -> None:
    # Given a two-way pair whose destination a user rewrites between crr's read of it and each copy
    site = Site(two_way=True)
    site.s3.put(DST, "k", b"old")
    site.s3.put(SRC, "k", b"new")
    original = site.s3.copy_version
    writes = iter(range(1, 100))

    def copy_after_a_users_write(request: CopyRequest) -> KeyVersion:
        # (stamped an hour back, so the source's change stays the later one and crr copies again)
        now, site.now = site.now, START - timedelta(hours=1)
        site.s3.put(DST, "k", f"user write {next(writes)}".encode())
        site.now = now
        return original(request)

    site.s3.copy_version = copy_after_a_users_write  # type: ignore[method-assign]
    site.start_counting()
    # When the source's change is applied
    with pytest.raises(ReconcileContentionError):
        site.replicator.apply(_event(SRC, "k", "01"))
    # Then each comparison read both sides and tried one conditional copy, SIDE_CHANGE_ATTEMPTS times,
    # and no ledger write was attempted (the outer bound never came into play)
    assert site.s3.calls == {"HeadObject": 2 * SIDE_CHANGE_ATTEMPTS, "CopyObject": SIDE_CHANGE_ATTEMPTS}
    assert site.ledger.writes == 0
