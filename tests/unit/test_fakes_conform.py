"""The fakes in ``tests.support.fakes`` are only as good as their likeness to the real adapters.

Three checks keep them alike:
- statically: each fake is assigned to a variable annotated with its port, so mypy (strict, in ``make lint``)
  proves it structurally implements the port;
- at run time: every public method of each port exists on its fake with the same parameters (names and
  kinds), and every Protocol in ``crr.ports`` has a fake or a stated reason for having none; each fake's
  docstring names its port, and each port's docstring names its fake;
- by behaviour: the table fakes whose adapters run under ``moto.mock_aws`` (``crr.adapters.dynamodb``: the
  key ledger, tombstones, progress, failure log, rules and backfill jobs) pass the same checks as those
  adapters: a conditional write refused when fenced, read-after-write, an absent key, a page recorded
  once with its split all or nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

import crr.ports
from crr.adapters.dynamodb import (
    DynamoBackfillJobs,
    DynamoFailureLog,
    DynamoLedger,
    DynamoProgress,
    DynamoRules,
    DynamoTombstones,
)
from crr.backfill.fanout import initial_ranges, page_record
from crr.backfill.models import BackfillJob, BackfillRange, BackfillStatus, PageCounts, PageResult, WorkKind
from crr.backfill.ranges import KeyRange
from crr.errors import BackfillJobConflictError, BackfillJobNotFoundError, LedgerConflictError, RuleNotFoundError
from crr.failures import FailureKind, FailureReason
from crr.models import LedgerEntry, ProgressDelta, QueueDepth, QueueMessage, TombstoneRecord
from crr.ports import objects, queues, services, table
from crr.ports.objects import FastCopier, Inspector, InventoryFiles, Listing, ObjectStore, PageListing, WiringProbe
from crr.ports.queues import (
    BacklogAgeGauge,
    DeadLetterQueue,
    FailedMessages,
    KeyHandOver,
    PeerNudges,
    QueueGauge,
    ReplicationQueue,
)
from crr.ports.services import BackfillExecutions, FailureMetric, LargeCopyLauncher
from crr.ports.table import (
    BackfillJobs,
    BackfillSource,
    BreakerSource,
    BreakerStore,
    FailureCounter,
    FailureLog,
    KeyLedger,
    ProgressSink,
    ProgressSource,
    RuleLookup,
    RuleReader,
    TombstoneRegistry,
)
from crr.rules import ReplicationRule
from crr.stamps import Stamp
from crr_cli.adapters.health import DynamoProgressReader
from tests.support.aws import client, create_rules_table
from tests.support.fakes import (
    FakeBackfillExecutions,
    FakeBackfillJobs,
    FakeBacklogAgeGauge,
    FakeBreakerStore,
    FakeDeadLetterQueue,
    FakeFailedMessages,
    FakeFailureCounter,
    FakeFailureLog,
    FakeFailureMetric,
    FakeFastCopier,
    FakeInventoryFiles,
    FakeKeyHandOver,
    FakeLargeCopyLauncher,
    FakeLedger,
    FakeListing,
    FakePageListing,
    FakePeerNudges,
    FakeProgress,
    FakeQueueGauge,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
    FakeTombstones,
    FakeWiringProbe,
)
from tests.support.rules import EAST, WEST, make_rule, named_rule, two_way_rules
from tests.support.synthetic import CountingCopier, DiscardingLedger, SyntheticListing

# ---- statically: mypy checks each assignment against its port ------------------------------------


def test_every_fake_is_assignable_to_its_port() -> None:
    # Given each fake built as its tests build it, When it is assigned to its port (mypy checks the
    # annotations), Then it stands in for the port: what this proves is checked by `make lint`
    s3 = FakeS3()
    object_store: ObjectStore = s3
    inspector: Inspector = s3
    page_listing: PageListing = FakePageListing(s3)
    synthetic_listing: PageListing = SyntheticListing("src", objects=10, prefixes=2)
    fast_copier: FastCopier = FakeFastCopier(s3)
    counting_copier: FastCopier = CountingCopier()
    listing: Listing = FakeListing()
    inventory_files: InventoryFiles = FakeInventoryFiles(s3)
    wiring_probe: WiringProbe = FakeWiringProbe()
    replication_queue: ReplicationQueue = FakeReplicationQueue()
    failed_messages: FailedMessages = FakeFailedMessages()
    key_hand_over: KeyHandOver = FakeKeyHandOver()
    peer_nudges: PeerNudges = FakePeerNudges(lambda bucket, key: None)
    dead_letter_queue: DeadLetterQueue = FakeDeadLetterQueue([])
    queue_gauge: QueueGauge = FakeQueueGauge(QueueDepth(visible=0, in_flight=0))
    backlog_age: BacklogAgeGauge = FakeBacklogAgeGauge()
    large_copy_launcher: LargeCopyLauncher = FakeLargeCopyLauncher()
    backfill_executions: BackfillExecutions = FakeBackfillExecutions()
    failure_metric: FailureMetric = FakeFailureMetric()
    rules = FakeRules()
    rule_lookup: RuleLookup = rules
    rule_reader: RuleReader = rules
    key_ledger: KeyLedger = FakeLedger()
    discarding_ledger: KeyLedger = DiscardingLedger()
    tombstones: TombstoneRegistry = FakeTombstones()
    progress = FakeProgress()
    progress_sink: ProgressSink = progress
    progress_source: ProgressSource = progress
    failure_log: FailureLog = FakeFailureLog()
    failure_counter: FailureCounter = FakeFailureCounter()
    breakers = FakeBreakerStore()
    breaker_store: BreakerStore = breakers
    breaker_source: BreakerSource = breakers
    jobs = FakeBackfillJobs()
    backfill_jobs: BackfillJobs = jobs
    backfill_source: BackfillSource = jobs
    assert all(
        double is not None
        for double in (
            object_store,
            inspector,
            page_listing,
            synthetic_listing,
            fast_copier,
            counting_copier,
            listing,
            inventory_files,
            wiring_probe,
            replication_queue,
            failed_messages,
            key_hand_over,
            peer_nudges,
            dead_letter_queue,
            queue_gauge,
            backlog_age,
            large_copy_launcher,
            backfill_executions,
            failure_metric,
            rule_lookup,
            rule_reader,
            key_ledger,
            discarding_ledger,
            tombstones,
            progress_sink,
            progress_source,
            failure_log,
            failure_counter,
            breaker_store,
            breaker_source,
            backfill_jobs,
            backfill_source,
        )
    )


# ---- at run time: the same methods with the same parameters ---------------------------------------

# Each port and the fake the tests use for it (the synthetic stand-ins of tests.support.synthetic too).
FAKES: list[tuple[type, type]] = [
    (ObjectStore, FakeS3),
    (Inspector, FakeS3),
    (PageListing, FakePageListing),
    (PageListing, SyntheticListing),
    (FastCopier, FakeFastCopier),
    (FastCopier, CountingCopier),
    (Listing, FakeListing),
    (InventoryFiles, FakeInventoryFiles),
    (WiringProbe, FakeWiringProbe),
    (ReplicationQueue, FakeReplicationQueue),
    (FailedMessages, FakeFailedMessages),
    (KeyHandOver, FakeKeyHandOver),
    (PeerNudges, FakePeerNudges),
    (DeadLetterQueue, FakeDeadLetterQueue),
    (QueueGauge, FakeQueueGauge),
    (BacklogAgeGauge, FakeBacklogAgeGauge),
    (LargeCopyLauncher, FakeLargeCopyLauncher),
    (BackfillExecutions, FakeBackfillExecutions),
    (FailureMetric, FakeFailureMetric),
    (RuleLookup, FakeRules),
    (RuleReader, FakeRules),
    (KeyLedger, FakeLedger),
    (KeyLedger, DiscardingLedger),
    (TombstoneRegistry, FakeTombstones),
    (ProgressSink, FakeProgress),
    (ProgressSource, FakeProgress),
    (FailureLog, FakeFailureLog),
    (FailureCounter, FakeFailureCounter),
    (BreakerStore, FakeBreakerStore),
    (BreakerSource, FakeBreakerStore),
    (BackfillJobs, FakeBackfillJobs),
    (BackfillSource, FakeBackfillJobs),
]

# Ports without an in-memory fake, and why none is needed.
WITHOUT_FAKE = {
    "MultipartUploads": "its steps are tested against SeaweedFS (tests/integration/seaweedfs)",
    "BucketDirectory": "tested over moto",
    "NotificationWiring": "tested over moto",
    "RuleStore": "only the CLI writes rules; tested over moto",
    "HeldDeletes": "only the CLI answers a burst; tested over moto",
    "KeyDirectory": "tested over moto",
}


def port_methods(port: type) -> dict[str, Callable[..., Any]]:
    """The public methods a Protocol declares, its Protocol bases' included."""
    found: dict[str, Callable[..., Any]] = {}
    for base in reversed(port.__mro__):
        if base is object or not getattr(base, "_is_protocol", False):
            continue
        found.update(
            {name: value for name, value in vars(base).items() if callable(value) and not name.startswith("_")}
        )
    return found


def parameters(method: Callable[..., Any]) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values() if p.name != "self"]


def all_ports() -> dict[str, type]:
    modules = (objects, queues, services, table)
    return {
        name: value
        for module in modules
        for name, value in vars(module).items()
        if inspect.isclass(value) and getattr(value, "_is_protocol", False) and value.__module__ == module.__name__
    }


@pytest.mark.parametrize(("port", "fake"), FAKES, ids=[f"{port.__name__}-{fake.__name__}" for port, fake in FAKES])
def test_a_fake_has_every_method_of_its_port_with_the_same_parameters(port: type, fake: type) -> None:
    # Given a port and its fake, When their methods are compared
    methods = port_methods(port)
    assert methods, f"{port.__name__} declares no method"
    for name, declared in methods.items():
        # Then each method of the port is on the fake, taking the same parameters in the same way
        assert callable(getattr(fake, name, None)), f"{fake.__name__} lacks {port.__name__}.{name}"
        assert parameters(getattr(fake, name)) == parameters(declared), f"{fake.__name__}.{name}"


def test_every_port_has_a_fake_or_a_reason_for_none() -> None:
    # Given every Protocol in crr.ports, Then each has a fake above or is listed with why it needs none
    faked = {port.__name__ for port, _ in FAKES}
    assert set(all_ports()) == faked | set(WITHOUT_FAKE)
    assert not faked & set(WITHOUT_FAKE)


@pytest.mark.parametrize(("port", "fake"), FAKES, ids=[f"{port.__name__}-{fake.__name__}" for port, fake in FAKES])
def test_a_fake_and_its_port_name_each_other(port: type, fake: type) -> None:
    # Then the fake's docstring says which port it implements, and the port's which fake stands in for it
    assert f"``{port.__name__}``" in (fake.__doc__ or "") or f".{port.__name__}``" in (fake.__doc__ or "")
    assert fake.__name__ in (port.__doc__ or ""), f"{port.__name__}'s docstring does not name {fake.__name__}"


def test_the_ports_package_says_where_the_fakes_are() -> None:
    assert "tests.support.fakes" in (crr.ports.__doc__ or "")


# ---- by behaviour: the table fakes against their DynamoDB adapters on moto ----------------------

TABLE = "rules"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Rules(RuleLookup, RuleReader, Protocol):
    """The rules as the replicator and the status read them (DynamoRules and FakeRules are both)."""


@dataclass
class Table:
    """The table's repositories as replication uses them, over one backend (the fakes or moto)."""

    ledger: KeyLedger
    tombstones_of: Callable[[ReplicationRule], TombstoneRegistry]
    progress_sink: ProgressSink
    progress_source: ProgressSource
    failure_log: FailureLog
    rules_of: Callable[..., Rules]
    backfill_jobs: BackfillJobs


def clock_from(start: datetime) -> Callable[[], datetime]:
    """A clock one second later at each reading."""
    ticks = iter(range(1_000_000))
    return lambda: start + timedelta(seconds=next(ticks))


def fake_table() -> Table:
    tombstones = FakeTombstones()  # every rule's records in one store, as the fakes' two-way tests share it
    progress = FakeProgress()
    return Table(
        ledger=FakeLedger(),
        tombstones_of=lambda rule: tombstones,
        progress_sink=progress,
        progress_source=progress,
        failure_log=FakeFailureLog(clock=clock_from(T0)),
        rules_of=FakeRules,
        backfill_jobs=FakeBackfillJobs(clock=lambda: T0),
    )


def dynamodb_table() -> Table:
    db = client("dynamodb", WEST)
    create_rules_table(db, TABLE)
    # two_way_rules names each half's table after its region: the peer's records are read from there
    for region in (WEST, EAST):
        create_rules_table(client("dynamodb", region), f"table-{region}")

    def tombstones_of(rule: ReplicationRule) -> TombstoneRegistry:
        region = rule.source_region
        return DynamoTombstones(lambda name: client("dynamodb", name), region, f"table-{region}")

    def rules_of(*rules: ReplicationRule) -> DynamoRules:
        store = DynamoRules(db, TABLE, cache_seconds=0)
        for rule in rules:
            store.create(rule)
        return store

    return Table(
        ledger=DynamoLedger(db, TABLE),
        tombstones_of=tombstones_of,
        progress_sink=DynamoProgress(db, TABLE),
        progress_source=DynamoProgressReader(db, TABLE),
        failure_log=DynamoFailureLog(db, TABLE, clock=clock_from(T0)),
        rules_of=rules_of,
        backfill_jobs=DynamoBackfillJobs(db, TABLE, clock=lambda: T0),
    )


@pytest.fixture(params=["fake", "dynamodb"])
def backend(request: pytest.FixtureRequest) -> Iterator[Table]:
    if request.param == "fake":
        yield fake_table()
        return
    request.getfixturevalue("aws")  # in-process moto, for the adapters only
    yield dynamodb_table()


def entry(revision: int, etag: str) -> LedgerEntry:
    return LedgerEntry(
        revision=revision,
        sequencer=f"{revision:016X}",
        etag=etag,
        deleted=False,
        applied_at=T0 + timedelta(seconds=revision),
        version_id=f"v{revision}",
        source_modified=T0,
        replica_etag=f'"replica-{revision}"',
    )


def test_the_ledger_reads_none_for_a_key_never_recorded(backend: Table) -> None:
    assert backend.ledger.read("r1", "never") is None
    assert backend.ledger.read_many("r1", ["never", "either"]) == {}


def test_the_ledger_reads_back_what_it_recorded(backend: Table) -> None:
    # Given a first entry recorded where there was none, and a second on top of its revision
    backend.ledger.record("r1", "k", entry(1, '"a"'), expected_revision=None)
    backend.ledger.record("r1", "k", entry(2, '"b"'), expected_revision=1)
    backend.ledger.record("r1", "other", entry(1, '"c"'), expected_revision=None)
    # Then a read sees the latest entry as written, one key at a time or many at once
    assert backend.ledger.read("r1", "k") == entry(2, '"b"')
    assert backend.ledger.read_many("r1", ["k", "other", "absent"]) == {"k": entry(2, '"b"'), "other": entry(1, '"c"')}
    # And another rule's ledger is apart
    assert backend.ledger.read("r2", "k") is None


@pytest.mark.parametrize(
    ("stored", "expected"),
    [(None, 1), (1, None), (2, 1)],
    ids=["a revision expected where none is", "none expected where one is", "a stale revision expected"],
)
def test_a_fenced_ledger_write_is_refused_and_changes_nothing(
    backend: Table, stored: int | None, expected: int | None
) -> None:
    # Given a key whose ledger holds revision `stored` (or nothing)
    if stored is not None:
        for revision in range(1, stored + 1):
            backend.ledger.record("r1", "k", entry(revision, '"a"'), expected_revision=revision - 1 or None)
    before = backend.ledger.read("r1", "k")
    # When a writer expects another revision, Then its write is refused and the entry is as it was
    with pytest.raises(LedgerConflictError):
        backend.ledger.record("r1", "k", entry(9, '"z"'), expected_revision=expected)
    assert backend.ledger.read("r1", "k") == before


def stamp(seconds: int, origin: str = "west-bucket") -> Stamp:
    return Stamp.of(T0 + timedelta(seconds=seconds), origin, f"v{seconds}")


def test_tombstones_read_none_for_a_key_without_a_record(backend: Table) -> None:
    rule = make_rule()
    assert backend.tombstones_of(rule).read(rule.rule_id, "never") is None
    # And a one-way rule has no peer whose records to read
    assert backend.tombstones_of(rule).read_peer(rule, "never") is None


def test_a_tombstone_goes_from_intended_to_settled(backend: Table) -> None:
    rule = make_rule()
    tombstones = backend.tombstones_of(rule)
    # When a delete is intended, Then the record says what it stands for and which version it removes
    tombstones.intend(rule.rule_id, "k", stamp(1), T0, "v7")
    assert tombstones.read(rule.rule_id, "k") == TombstoneRecord(None, None, stamp(1), T0, "v7")
    # When it is settled, Then the record names the marker and the delete, and nothing is pending
    tombstones.settle(rule.rule_id, "k", "marker-1", stamp(1))
    assert tombstones.read(rule.rule_id, "k") == TombstoneRecord("marker-1", stamp(1))
    # When another delete is intended without a target and then withdrawn, Then only the pending part goes
    tombstones.intend(rule.rule_id, "k", stamp(5), T0, None)
    assert tombstones.read(rule.rule_id, "k") == TombstoneRecord("marker-1", stamp(1), stamp(5), T0, None)
    tombstones.withdraw(rule.rule_id, "k")
    assert tombstones.read(rule.rule_id, "k") == TombstoneRecord("marker-1", stamp(1))


def test_withdrawing_what_was_never_intended_leaves_an_empty_record(backend: Table) -> None:
    # DynamoDB's UpdateItem creates the item even when it only removes attributes; the fake does too
    rule = make_rule()
    backend.tombstones_of(rule).withdraw(rule.rule_id, "k")
    assert backend.tombstones_of(rule).read(rule.rule_id, "k") == TombstoneRecord(None, None)


def test_a_two_way_rule_reads_the_tombstones_its_peer_wrote(backend: Table) -> None:
    # Given a two-way pair whose east half settled a marker it made in the west bucket
    west_to_east, east_to_west = two_way_rules(("west-bucket", WEST), ("east-bucket", EAST))
    backend.tombstones_of(east_to_west).settle(east_to_west.rule_id, "k", "marker-9", stamp(3, "east-bucket"))
    # Then the west half reads it as its peer's record, not as its own
    assert backend.tombstones_of(west_to_east).read_peer(west_to_east, "k") == TombstoneRecord(
        "marker-9", stamp(3, "east-bucket")
    )
    assert backend.tombstones_of(west_to_east).read(west_to_east.rule_id, "k") is None


def test_progress_is_none_before_the_first_batch_then_the_sum_of_the_batches(backend: Table) -> None:
    assert backend.progress_source.read("r1") is None
    # When two batches add their counters, the second without a newer event time
    first = ProgressDelta(objects_copied=2, bytes_copied=2048, deletes_applied=1, skipped=0, latest_event_time=T0)
    second = ProgressDelta(objects_copied=1, bytes_copied=10, deletes_applied=0, skipped=4)
    backend.progress_sink.add("r1", first, applied_at=T0 + timedelta(seconds=1))
    backend.progress_sink.add("r1", second, applied_at=T0 + timedelta(seconds=2))
    # Then the counters are summed, the sync time is the last batch's, and the event time the last one given
    progress = backend.progress_source.read("r1")
    assert progress is not None
    assert (progress.objects_copied, progress.bytes_copied, progress.deletes_applied, progress.skipped) == (
        3,
        2058,
        1,
        4,
    )
    assert (progress.last_sync_at, progress.last_event_time) == (T0 + timedelta(seconds=2), T0)
    assert backend.progress_source.read("r2") is None


def test_the_failure_log_counts_attempts_per_message_and_keeps_the_latest_reason(backend: Table) -> None:
    message = QueueMessage(message_id="m-1", body="{}", receipt_handle="r-1", receive_count=1)
    assert backend.failure_log.find("m-1") is None
    # When a message fails twice, for two reasons
    backend.failure_log.record(
        message, FailureReason(FailureKind.TRANSIENT, "SlowDown", "slow"), rule_id="r1", bucket="b", key="k"
    )
    second = backend.failure_log.record(
        message, FailureReason(FailureKind.PERMANENT, "AccessDenied", "no"), rule_id="r1", bucket=None, key="k"
    )
    # Then its record counts both, keeps when it first failed, and says why it failed last
    assert (second.attempts, second.reason.code, second.reason.kind) == (2, "AccessDenied", FailureKind.PERMANENT)
    assert (second.first_failure, second.last_failure) == (T0, T0 + timedelta(seconds=1))
    assert (second.rule_id, second.key) == ("r1", "k")
    assert backend.failure_log.find("m-1") == second
    assert backend.failure_log.find("m-2") is None


def test_rules_are_found_by_source_bucket_and_by_id(backend: Table) -> None:
    # Given two rules
    photos, logs = named_rule("photos"), named_rule("logs")
    rules = backend.rules_of(photos, logs)
    # Then a source bucket finds its rule, and a bucket no rule reads from finds none
    assert rules.rule_for_source("photos-src") == photos
    assert rules.rule_for_source("photos-dst") is None
    # And the rules read by id and all at once, sorted by id; an unknown id is an error
    assert rules.get("logs") == logs
    assert rules.list() == [logs, photos]
    with pytest.raises(RuleNotFoundError):
        rules.get("unknown")


# ---- backfill jobs and their ranges ----------------------------------------------------------------

EXECUTION = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r1"
WORKER = f"{EXECUTION}#0"


def planned(jobs: BackfillJobs, *pieces: KeyRange, workers: int = 2) -> BackfillJob:
    job = BackfillJob.start(make_rule(), at=T0, workers=workers)
    jobs.create(job)
    return jobs.add_ranges(job.rule_id, job.job_id, initial_ranges(job.rule_id, job.job_id, pieces))


def page_of(job: BackfillJob, item: BackfillRange, sequence: int, **fields: Any) -> PageResult:
    values: dict[str, Any] = {
        "job_id": job.job_id,
        "rule_id": job.rule_id,
        "plan": job.plan,
        "range_id": item.range_id,
        "sequence": sequence,
        "prefix": item.prefix,
        "after": item.after,
        "until": item.until,
        "counts": PageCounts(listed=10, copied=7, skipped=3, bytes_listed=100, bytes_copied=70),
        "cursor": f"{item.prefix}k{sequence * 10:03d}",
        "done": False,
        "count_cursor": f"{item.prefix}k{sequence * 10 + 30:03d}",
        "count_complete": False,
        "counted": 10 if sequence > 1 else 40,
        "counted_bytes": 100,
        "elapsed_seconds": 1.5,
    }
    return PageResult(**{**values, **fields})


def test_a_job_starts_without_ranges_and_its_first_ranges_are_stored_once(backend: Table) -> None:
    jobs = backend.backfill_jobs
    job = BackfillJob.start(make_rule(), at=T0)
    jobs.create(job)
    with pytest.raises(BackfillJobConflictError):
        jobs.create(job)
    assert (jobs.get("r1", job.job_id), jobs.latest("r1"), jobs.ranges("r1", job.job_id)) == (job, job, [])
    # When its first ranges are added, twice (a retried plan), the second time other ones
    first = initial_ranges("r1", job.job_id, [KeyRange("a/"), KeyRange("b/", None, "b/m"), KeyRange("b/", "b/m")])
    stored = jobs.add_ranges("r1", job.job_id, first)
    again = jobs.add_ranges("r1", job.job_id, initial_ranges("r1", job.job_id, [KeyRange("")]))
    # Then the first ones are kept, and the job counts them open and uncounted
    assert jobs.ranges("r1", job.job_id) == first
    assert stored == again
    assert (stored.ranges_made, stored.ranges_open, stored.ranges_uncounted, stored.planned) == (3, 3, 3, True)
    # And the job is still the rule's latest, its ranges beside it in the table
    assert jobs.latest("r1") == stored
    with pytest.raises(BackfillJobNotFoundError):
        jobs.get("r1", "nope")


def test_a_range_is_claimed_by_one_worker_and_taken_over_only_from_the_claim_expected(backend: Table) -> None:
    jobs = backend.backfill_jobs
    job = planned(backend.backfill_jobs, KeyRange("a/"))
    [item] = jobs.ranges("r1", job.job_id)
    taken = jobs.claim("r1", job.job_id, item.range_id, WORKER, None)
    assert taken is not None
    assert taken.claim == WORKER
    # A second worker expecting it free loses; one expecting this claim (a stale one) takes it over
    assert jobs.claim("r1", job.job_id, item.range_id, f"{EXECUTION}#1", None) is None
    newer = "arn:aws:states:us-west-1:1:execution:crr-backfill:j-r2#0"
    assert jobs.claim("r1", job.job_id, item.range_id, newer, WORKER) is not None
    # A release drops only the releasing worker's claims
    assert jobs.release("r1", job.job_id, WORKER) == 0
    assert jobs.release("r1", job.job_id, newer) == 1
    assert jobs.ranges("r1", job.job_id)[0].claim is None


def test_a_page_is_recorded_once_in_its_range_and_its_job(backend: Table) -> None:
    jobs = backend.backfill_jobs
    job = planned(jobs, KeyRange("a/"), workers=1)  # one range open, one worker: 2 wanted, no split asked
    [item] = jobs.ranges("r1", job.job_id)
    jobs.claim("r1", job.job_id, item.range_id, WORKER, None)
    first = page_record(page_of(job, item, 1), WORKER, ranges_open=2, workers=1, at=T0)
    recorded = jobs.record_page(first)
    # A retried step: the same page again changes nothing and answers the range as recorded
    assert jobs.record_page(first) == recorded
    second = jobs.record_page(page_record(page_of(job, item, 2), WORKER, ranges_open=2, workers=1, at=T0))
    assert (second.pages, second.cursor, second.count_cursor, second.totals.listed, second.counted) == (
        2,
        "a/k020",
        "a/k050",
        20,
        50,
    )
    stored = jobs.get("r1", job.job_id)
    assert (stored.pages, stored.totals.copied, stored.counted, stored.active_seconds) == (2, 14, 50, 3.0)
    # A page out of order is refused; one from a worker that does not hold the range is not recorded,
    # and answers the range as it is (its claim names the holder); neither changes anything
    with pytest.raises(BackfillJobConflictError):
        jobs.record_page(page_record(page_of(job, item, 4), WORKER, ranges_open=2, workers=1, at=T0))
    other = f"{EXECUTION}#9"
    assert jobs.record_page(page_record(page_of(job, item, 3), other, ranges_open=2, workers=1, at=T0)) == second
    assert jobs.get("r1", job.job_id) == stored


def test_a_split_lands_with_its_page_and_the_last_page_lets_the_job_succeed(backend: Table) -> None:
    jobs = backend.backfill_jobs
    job = planned(jobs, KeyRange("a/"), workers=2)
    [item] = jobs.ranges("r1", job.job_id)
    jobs.claim("r1", job.job_id, item.range_id, WORKER, None)
    # When a page with keys known ahead is recorded while the job wants more ranges
    ahead = ["a/k020", "a/k030", "a/k040", "a/k050"]
    page = page_record(page_of(job, item, 1, ahead=ahead), WORKER, ranges_open=1, workers=2, at=T0)
    assert len(page.new_ranges) == 3
    jobs.record_page(page)
    # Then the range now ends at the first boundary and three pieces joined it, in one write
    ranges = jobs.ranges("r1", job.job_id)
    assert sorted((item.after, item.until) for item in ranges if item.after is not None) == [
        ("a/k020", "a/k030"),
        ("a/k030", "a/k040"),
        ("a/k040", None),
    ]
    stored = jobs.get("r1", job.job_id)
    assert (stored.ranges_made, stored.ranges_open) == (4, 4)
    assert stored.ranges_uncounted == sum(not item.count_complete for item in ranges)
    with pytest.raises(BackfillJobConflictError):
        jobs.mark_succeeded("r1", job.job_id, T0)
    # When every range's last page is recorded, Then the job is done and may succeed (once)
    for piece in jobs.ranges("r1", job.job_id):
        claimed = jobs.claim("r1", job.job_id, piece.range_id, WORKER, piece.claim)
        assert claimed is not None
        last = page_of(job, claimed, claimed.pages + 1, until=claimed.until, after=claimed.after, done=True)
        last = last.model_copy(update={"count_complete": True, "count_completed": not claimed.count_complete})
        jobs.record_page(page_record(last, WORKER, ranges_open=4, workers=2, at=T0))
    done = jobs.get("r1", job.job_id)
    assert (done.done, done.ranges_open, done.ranges_uncounted) == (True, 0, 0)
    finished = jobs.mark_succeeded("r1", job.job_id, T0 + timedelta(hours=1))
    assert finished.status is BackfillStatus.SUCCEEDED
    assert jobs.mark_succeeded("r1", job.job_id, T0 + timedelta(hours=2)) == finished


def test_a_range_done_is_gone_from_the_open_ranges_and_its_retried_final_page_counts_once(backend: Table) -> None:
    # Given a job of two ranges, a worker holding the first
    jobs = backend.backfill_jobs
    job = planned(jobs, KeyRange("a/"), KeyRange("b/"), workers=2)
    first, second = jobs.ranges("r1", job.job_id)
    jobs.claim("r1", job.job_id, first.range_id, WORKER, None)
    # When the first range's final page is recorded, then again (a retried step)
    last = page_of(job, first, 1, done=True).model_copy(update={"count_complete": True, "count_completed": True})
    final = page_record(last, WORKER, ranges_open=2, workers=2, at=T0)
    recorded = jobs.record_page(final)
    after_first = jobs.get("r1", job.job_id)
    retried = jobs.record_page(final)
    # Then it answers the range done, both times, as its final page left it
    assert (recorded.done, recorded.pages, recorded.claim, recorded.cursor) == (True, 1, WORKER, "a/k010")
    assert retried == recorded
    # And the range is no longer stored: the job's ranges are the open one only, and it cannot be claimed
    assert jobs.ranges("r1", job.job_id) == [second]
    assert jobs.ranges("r1", job.job_id, open_only=True) == [second]
    assert jobs.claim("r1", job.job_id, first.range_id, f"{EXECUTION}#1", WORKER) is None
    # And the job counted its page once, and the range closed
    stored = jobs.get("r1", job.job_id)
    assert stored == after_first
    assert (stored.pages, stored.totals.copied, stored.ranges_made, stored.ranges_open) == (1, 7, 2, 1)


def test_a_failed_job_keeps_the_pages_of_steps_still_in_flight_until_a_resume_takes_their_ranges(
    backend: Table,
) -> None:
    # Given a job whose worker holds a range, and the job marked failed (another worker's page failed)
    jobs = backend.backfill_jobs
    job = planned(jobs, KeyRange("a/"), workers=1)
    [item] = jobs.ranges("r1", job.job_id)
    jobs.claim("r1", job.job_id, item.range_id, WORKER, None)
    failed = jobs.mark_failed("r1", job.job_id, "ListObjectsV2 on bf-src failed: AccessDenied", T0)
    assert (failed.status, failed.failure_reason) == (
        BackfillStatus.FAILED,
        "ListObjectsV2 on bf-src failed: AccessDenied",
    )
    # When the worker's step, in flight meanwhile, records its page
    first = page_record(page_of(job, item, 1), WORKER, ranges_open=1, workers=1, at=T0)
    # Then it lands (its copies were made), and the job counts it
    assert jobs.record_page(first).pages == 1
    assert jobs.get("r1", job.job_id).pages == 1
    # When the job is resumed and a worker of the new execution takes the stale claim
    resumed = jobs.set_execution("r1", job.job_id, "arn:exec:r2", T0, workers=5)
    assert (resumed.status, resumed.execution_arn, resumed.failure_reason, resumed.workers) == (
        BackfillStatus.RUNNING,
        "arn:exec:r2",
        None,
        5,
    )
    taken = jobs.claim("r1", job.job_id, item.range_id, "arn:exec:r2#0", WORKER)
    assert taken is not None
    # Then a later page of the old worker no longer lands: the range is the new worker's
    late = page_record(page_of(job, taken, 2), WORKER, ranges_open=1, workers=1, at=T0)
    assert jobs.record_page(late).pages == 1
    assert jobs.get("r1", job.job_id).pages == 1


def test_an_inventory_job_keeps_its_report_and_each_data_file_its_row(backend: Table) -> None:
    # Given a job from an S3 Inventory report, one work item per data file, never split
    jobs = backend.backfill_jobs
    job = BackfillJob.start(make_rule(), at=T0, workers=4, inventory="s3://reports/inv/manifest.json")
    jobs.create(job)
    files = [
        BackfillRange(rule_id="r1", job_id=job.job_id, range_id=f"{index:04d}", kind=WorkKind.INVENTORY, file=key)
        for index, key in enumerate(["inv/data/a.csv.gz", "inv/data/b.csv.gz"])
    ]
    stored = jobs.add_ranges("r1", job.job_id, files)
    item = files[0]
    jobs.claim("r1", job.job_id, item.range_id, WORKER, None)
    # When a step of the first file is recorded (its count made as it was first read)
    step = page_of(job, item, 1, kind=WorkKind.INVENTORY, file=item.file, row=2500, cursor=None, count_cursor=None)
    recorded = jobs.record_page(
        page_record(
            step.model_copy(update={"count_complete": True, "count_completed": True}),
            WORKER,
            ranges_open=2,
            workers=4,
            at=T0,
        )
    )
    # Then the job names its report, the file stands at its row with its count complete, and nothing was split
    assert jobs.get("r1", job.job_id).inventory == "s3://reports/inv/manifest.json"
    assert (recorded.kind, recorded.file, recorded.row, recorded.count_complete) == (
        WorkKind.INVENTORY,
        "inv/data/a.csv.gz",
        2500,
        True,
    )
    after = jobs.get("r1", job.job_id)
    assert (stored.ranges_made, after.ranges_made, after.ranges_open, after.ranges_uncounted) == (2, 2, 2, 1)
    request = recorded.request(job.ref, page_size=1000, count_pages=4, probe=True, inventory=after.inventory)
    assert (request.inventory, request.file, request.row) == (after.inventory, "inv/data/a.csv.gz", 2500)
