"""The backfill engine on in-memory fakes: pages, prefixes, skips, races with the live path, failures,
resume, counting ahead."""

from __future__ import annotations

import json
import threading
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from crr.backfill.engine import BACKFILL_CONFIGURATION_ID, BackfillEngine
from crr.backfill.models import (
    BackfillJob,
    BackfillStatus,
    ObjectOutcome,
    PageCounts,
    PageRequest,
    PageResult,
    listing_prefixes,
    plan_digest,
)
from crr.backfill.pages import MAX_PROBES, PageLister
from crr.backfill.ranges import KeyRange
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillPageRefusedError, BackfillSteps
from crr.errors import (
    AccessDeniedError,
    BackfillPageError,
    BackfillRefusedError,
    StateStoreError,
    StorageError,
)
from crr.events import ChangeEvent, ChangeKind, parse_notification
from crr.models import LedgerEntry
from crr.replication import Replicator
from crr.rules import PeerRule, ReplicationRule, RuleStatus
from tests.support import rules
from tests.support.backfill_runner import prefix_requests, run_fanned_out, run_range
from tests.support.fakes import (
    FakeBackfillJobs,
    FakeFastCopier,
    FakeLedger,
    FakePageListing,
    FakeProgress,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
)
from tests.support.synthetic import CountingCopier, DiscardingLedger, SyntheticListing

SRC, DST = "src-bucket", "dst-bucket"
WEST, EAST = "us-west-1", "us-east-1"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# this module's rules were created before its objects' cutoff
make_rule = partial(rules.make_rule, rule_id="r", created_at=T0)


@dataclass
class World:
    """Two buckets, the live path (a real Replicator over the fakes) and a backfill engine sharing its ledger."""

    rule: ReplicationRule
    s3: FakeS3 = field(default_factory=FakeS3)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    notices: FakeReplicationQueue = field(default_factory=FakeReplicationQueue)
    reconciled: list[str] = field(default_factory=list)
    sequencer: int = 0x100

    def __post_init__(self) -> None:
        self.s3.create_bucket(SRC, WEST, versioned=True)
        self.s3.create_bucket(DST, EAST)
        self.listing = FakePageListing(self.s3)
        self.copier = FakeFastCopier(self.s3)
        self.replicator = Replicator(FakeRules(self.rule), self.s3, self.ledger, FakeProgress())
        live = reconciler(self.replicator, clock=lambda: T0)

        def reconcile(rule: ReplicationRule, key: str):  # type: ignore[no-untyped-def]
            self.reconciled.append(key)
            return live(rule, key)

        self.engine = BackfillEngine(
            self.listing, self.copier, self.ledger, reconcile, self.notices, concurrency=4, clock=lambda: T0
        )

    # what users and the live path do
    def put(self, key: str, body: bytes | None = None, *, bucket: str = SRC) -> None:
        self.s3.put(bucket, key, body if body is not None else key.encode(), metadata={"m": key}, tags={"t": "1"})

    def live(self, key: str, *, removed: bool = False) -> None:
        """The live path handling the notification of a change the user just made."""
        self.sequencer += 1
        self.replicator.apply(
            ChangeEvent(
                bucket=SRC,
                key=key,
                kind=ChangeKind.REMOVED if removed else ChangeKind.CREATED,
                event_name="ObjectRemoved:Delete" if removed else "ObjectCreated:Put",
                event_time=T0,
                sequencer=f"{self.sequencer:X}",
            )
        )

    def request(self, page_size: int = 1000, count_pages: int = 4) -> PageRequest:
        """The first page of a range over the rule's first prefix."""
        return prefix_requests(self.rule, page_size=page_size, count_pages=count_pages)[0]

    def run(self, page_size: int = 1000, count_pages: int = 4) -> list[PageResult]:
        """Every page of one range per prefix, prefix after prefix (the engine alone, nothing split)."""
        requests = prefix_requests(self.rule, page_size=page_size, count_pages=count_pages)
        return [result for request in requests for result in run_range(self.engine, self.rule, request)]

    def steps(self, jobs: FakeBackfillJobs, engine: BackfillEngine | None = None) -> BackfillSteps:
        return BackfillSteps(engine or self.engine, jobs, FakeRules(self.rule), clock=lambda: T0)

    def body(self, key: str, bucket: str = DST) -> bytes | None:
        found = self.s3.current(bucket, key)
        return None if found is None else found.body


def totals(results: list[PageResult]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for result in results:
        for name, value in result.counts.model_dump().items():
            summed[name] = summed.get(name, 0) + value
    return summed


# ---- pages and prefixes ------------------------------------------------------------------------


def test_a_multi_page_bucket_is_copied_page_by_page_with_metadata_and_tags() -> None:
    # Given 23 objects and pages of 5 keys
    world = World(make_rule())
    keys = [f"k{index:02d}" for index in range(23)]
    for key in keys:
        world.put(key)
    # When the whole job runs
    results = world.run(page_size=5)
    # Then five pages copied every object once, with its metadata and tags, and the last page says done
    assert [result.counts.listed for result in results] == [5, 5, 5, 5, 3]
    assert [result.done for result in results] == [False, False, False, False, True]
    assert sorted(world.copier.copied) == keys
    assert world.s3.keys(DST) == set(keys)
    replica = world.s3.current(DST, "k07")
    assert replica is not None
    assert (replica.metadata, replica.tags) == ({"m": "k07"}, {"t": "1"})
    assert totals(results)["bytes_copied"] == sum(len(key) for key in keys)
    # And every copy has its ledger entry, "no entry yet" then written once, with the replica's own ETag
    source = world.s3.current(SRC, "k07")
    assert source is not None
    assert world.ledger.entries[("r", "k07")] == LedgerEntry(
        1, None, source.etag, False, T0, source_modified=source.last_modified, replica_etag=replica.etag
    )


def test_each_page_lists_the_source_once_and_the_destination_over_the_same_range() -> None:
    world = World(make_rule())
    for index in range(12):
        world.put(f"k{index:02d}")
    world.run(page_size=4, count_pages=0)
    source = [request for request in world.listing.requests if request[0] == SRC]
    destination = [request for request in world.listing.requests if request[0] == DST]
    # Then the source is listed after the previous page's last key, and the destination from the same key
    assert [request[2] for request in source] == [None, "k03", "k07"]
    assert [request[2] for request in destination] == [None, "k03", "k07"]


def test_only_keys_under_the_prefixes_are_copied_and_each_once() -> None:
    # Given keys inside and outside two prefixes
    world = World(make_rule("logs/", "data/"))
    inside = [f"logs/{n}" for n in range(4)] + [f"data/{n}" for n in range(3)]
    for key in [*inside, "other/1", "log", "datum"]:
        world.put(key)
    # When copied in pages of 2
    results = world.run(page_size=2)
    # Then exactly the prefixed keys are copied, once each
    assert sorted(world.copier.copied) == sorted(inside)
    assert totals(results)["listed"] == len(inside)


def test_overlapping_prefixes_are_listed_once() -> None:
    # A rule's own validation refuses overlapping prefixes; the listing plan drops them all the same
    assert listing_prefixes(["logs/2026/", "logs/", "data", "data/x", "logs/"]) == ("data", "logs/")
    assert listing_prefixes([]) == ("",)
    # Given a rule that slipped past validation with overlapping prefixes
    rule = ReplicationRule.model_construct(**{**make_rule("logs/").model_dump(), "prefixes": ("logs/", "logs/a/")})
    world = World(rule)
    for key in ["logs/a/1", "logs/a/2", "logs/b"]:
        world.put(key)
    # When copied
    results = world.run(page_size=2)
    # Then no key is listed twice
    assert totals(results)["listed"] == 3
    assert sorted(world.copier.copied) == ["logs/a/1", "logs/a/2", "logs/b"]


def test_a_page_lists_within_its_range_and_stops_at_its_upper_bound() -> None:
    # Given keys a0..a9 and a range (a2, a6] of them
    world = World(make_rule())
    for n in range(10):
        world.put(f"a{n}")
    request = world.request(page_size=3, count_pages=0).model_copy(update={"after": "a2", "until": "a6"})
    # When the range is copied in pages of 3
    results = list(run_range(world.engine, world.rule, request))
    # Then exactly its keys were copied, the listing started after its lower bound, and the last page
    # ended the range without one more request
    assert sorted(world.copier.copied) == ["a3", "a4", "a5", "a6"]
    assert [(result.counts.listed, result.cursor, result.done) for result in results] == [
        (3, "a5", False),
        (1, "a6", True),
    ]
    assert [request[2] for request in world.listing.requests if request[0] == SRC] == ["a2", "a5"]


def test_an_empty_bucket_is_done_in_one_step() -> None:
    world = World(make_rule())
    [result] = world.run()
    assert (result.done, result.counts.listed, result.count_complete, result.cursor) == (True, 0, True, None)


# ---- skipping ----------------------------------------------------------------------------------


def test_objects_already_identical_at_the_destination_are_skipped() -> None:
    # Given two objects already replicated and one that differs at the destination
    world = World(make_rule())
    for key in ["same-1", "same-2", "differs", "missing"]:
        world.put(key)
    world.put("same-1", bucket=DST)
    world.put("same-2", bucket=DST)
    world.put("differs", b"older bytes", bucket=DST)
    # When copied
    [result] = world.run()
    # Then the identical ones cost no copy
    assert result.counts.model_dump() == {
        "listed": 4,
        "copied": 2,
        "skipped": 2,
        "superseded": 0,
        "failed": 0,
        "bytes_listed": 6 + 6 + 7 + 7,
        "bytes_copied": 7 + 7,
    }
    assert sorted(world.copier.copied) == ["differs", "missing"]
    assert world.body("differs") == b"differs"


def test_each_object_counts_once_under_its_outcome_and_the_counters_are_named_by_it() -> None:
    # Given a page with one object of each outcome: already replicated, new, overwritten after the
    # listing, and one whose copy is throttled
    world = World(make_rule())
    for key in ["copied", "failed", "skipped", "superseded"]:
        world.put(key)
    world.put("skipped", bucket=DST)
    world.copier.before_read["superseded"] = lambda key: world.put(key, b"newer")
    world.copier.failures["failed"] = StorageError("CopyObject", DST, "failed", "SlowDown", "throttled")
    # When the page is copied
    [result] = world.run()
    # Then every outcome has its counter, named by the outcome, and each object counts under one
    assert {field.value for field in ObjectOutcome} <= set(PageCounts.model_fields)
    assert {outcome: result.counts.of(outcome) for outcome in ObjectOutcome} == dict.fromkeys(ObjectOutcome, 1)
    assert result.counts.listed == sum(result.counts.of(outcome) for outcome in ObjectOutcome)
    # And only the failed key went to the replication queue
    queued = [event for body in world.notices.bodies for event in parse_notification(body)]
    assert [event.key for event in queued] == ["failed"]  # type: ignore[union-attr]


def test_the_destination_is_listed_on_until_it_passes_the_pages_last_key() -> None:
    # Given a destination with many extra keys inside the page's range
    world = World(make_rule())
    world.put("a")
    world.put("z")
    for index in range(2500):
        world.put(f"m{index:05d}", bucket=DST)
    world.put("z", bucket=DST)
    # When the page is copied
    [result] = world.run()
    # Then the destination was listed until it passed "z", and "z" was found identical
    assert world.listing.count(DST) == 3
    assert (result.counts.copied, result.counts.skipped) == (1, 1)


# ---- racing the live path ------------------------------------------------------------------------


def test_an_object_overwritten_after_listing_is_not_copied_but_superseded() -> None:
    # Given an object that the user overwrites after the listing, and the live path replicates
    world = World(make_rule())
    world.put("k", b"v1")

    def user_overwrites(key: str) -> None:
        world.put(key, b"v2")
        world.live(key)

    world.copier.before_read["k"] = user_overwrites
    # When the backfill copies the page
    [result] = world.run()
    # Then its pinned copy was refused, and the replica holds the newer write
    assert (result.counts.superseded, result.counts.copied) == (1, 0)
    assert world.body("k") == b"v2"


def test_an_object_deleted_after_listing_is_not_resurrected() -> None:
    world = World(make_rule())
    world.put("k", b"v1")

    def user_deletes(key: str) -> None:
        world.s3.remove(SRC, key)
        world.live(key, removed=True)

    world.copier.before_read["k"] = user_deletes
    [result] = world.run()
    assert result.counts.superseded == 1
    assert world.body("k") is None


def test_a_copy_that_lands_after_a_newer_live_copy_is_reconciled() -> None:
    # Given the user overwrites the object while the backfill's copy of the old version is in flight,
    # and the live path copies the new version before the old copy lands
    world = World(make_rule())
    world.put("k", b"v1")

    def user_overwrites(key: str) -> None:
        world.put(key, b"v2")
        world.live(key)
        assert world.body(key) == b"v2"

    world.copier.before_write["k"] = user_overwrites
    # When the backfill's copy lands (v1 over v2) and it records the key
    [result] = world.run()
    # Then its ledger write found the live path's entry, and reconciling put v2 back
    assert world.reconciled == ["k"]
    assert world.body("k") == b"v2"
    assert result.counts.copied == 1


def test_a_copy_that_lands_after_a_live_delete_is_undone() -> None:
    world = World(make_rule())
    world.put("k", b"v1")

    def user_deletes(key: str) -> None:
        world.s3.remove(SRC, key)
        world.live(key, removed=True)
        assert world.body(key) is None

    world.copier.before_write["k"] = user_deletes
    [result] = world.run()
    # Then the resurrected replica was deleted again
    assert world.body("k") is None
    assert world.reconciled == ["k"]
    assert result.counts.superseded == 1


def test_a_live_write_between_the_copy_and_the_ledger_write_wins() -> None:
    # Given the user overwrites the object after the backfill's copy landed, and the live path applies it
    # before the backfill records the key
    world = World(make_rule())
    world.put("k", b"v1")

    def user_overwrites(key: str) -> None:
        world.put(key, b"v2")
        world.live(key)

    world.ledger.before_record["k"] = user_overwrites
    world.run()
    # Then the backfill's record conflicts, and the replica ends at v2
    assert world.body("k") == b"v2"
    assert world.reconciled == ["k"]


def test_when_the_backfill_records_first_the_live_path_reconciles_again() -> None:
    # Given the user overwrites the object while the backfill's copy of v1 is in flight, and the live path
    # copies v2 but has not recorded it yet when the backfill's v1 copy lands and the backfill records
    world = World(make_rule())
    world.put("k", b"v1")
    live_copied, backfill_recorded = threading.Event(), threading.Event()

    def live_waits_before_recording(_key: str) -> None:
        live_copied.set()
        assert backfill_recorded.wait(timeout=10)

    live = threading.Thread(target=world.live, args=("k",))

    def user_overwrites(key: str) -> None:
        world.put(key, b"v2")
        world.ledger.before_record[key] = live_waits_before_recording
        live.start()
        assert live_copied.wait(timeout=10)
        assert world.body(key) == b"v2"

    world.copier.before_write["k"] = user_overwrites
    [result] = world.run()
    assert world.body("k") == b"v1"  # for now the older copy is on top, and the backfill's entry landed first
    # When the live path goes on to record
    backfill_recorded.set()
    live.join(timeout=10)
    # Then its conditional write failed, it reconciled again, and the replica holds v2
    assert world.body("k") == b"v2"
    assert world.ledger.entries[("r", "k")].revision == 2
    assert (result.counts.copied, world.reconciled) == (1, [])


def test_sse_kms_replicas_whose_etags_differ_are_not_copied_again_by_the_next_run() -> None:
    # Given SSE-KMS buckets (every write gets an ETag of its own), one key replicated by the live path
    #       and the others by a first backfill run
    world = World(make_rule())
    world.s3.buckets[SRC].sse_kms = world.s3.buckets[DST].sse_kms = True
    for key in ("live", "k1", "k2"):
        world.put(key)
    world.live("live")
    world.run()
    assert world.s3.current(SRC, "k1").etag != world.s3.current(DST, "k1").etag  # type: ignore[union-attr]
    # (the ledger knows each replica by the ETag its copy answered, fast path and live path alike)
    for key in ("live", "k1", "k2"):
        assert world.ledger.entries[("r", key)].replica_etag == world.s3.current(DST, key).etag  # type: ignore[union-attr]
    copies_before = (world.copier.calls, world.s3.calls.get("CopyObject", 0))
    # When the backfill runs again
    results = world.run()
    # Then nothing is copied again: the ledger says crr applied exactly these source writes
    assert totals(results)["skipped"] == 3
    assert (world.copier.calls, world.s3.calls.get("CopyObject", 0)) == copies_before
    # And a key overwritten since (same ETag scheme, new write) is copied
    world.put("k1", b"new")
    assert totals(world.run())["copied"] == 1
    assert world.body("k1") == b"new"


# ---- the full path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "through_live"),
    [
        ({"replica_kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/replica"}, ["a", "b"]),
        # Equal bytes written on both sides are two changes for a two-way rule (their metadata may
        # differ): only the live path's comparison of stamps decides, unless the ledger says it did.
        (
            {"peer": PeerRule(rule_id="back", rules_table="table-east", queue_url="https://sqs.example/q")},
            ["a", "b", "done"],
        ),
    ],
    ids=["replica-kms-key", "two-way"],
)
def test_a_rule_the_fast_path_cannot_serve_copies_through_the_live_path(
    extra: dict[str, Any], through_live: list[str]
) -> None:
    # Given a rule whose replicas need encryption or the replica marker
    world = World(make_rule(**extra))
    world.put("a")
    world.put("b")
    world.put("done")
    world.put("done", bucket=DST)
    # When copied (the two-way reconcile is stood in for: its registry is not this test's subject)
    copied: list[str] = []

    def live(rule: ReplicationRule, key: str):  # type: ignore[no-untyped-def]
        copied.append(key)
        return reconciler(Replicator(FakeRules(make_rule()), world.s3, world.ledger, FakeProgress()))(rule, key)

    engine = BackfillEngine(world.listing, world.copier, world.ledger, live, world.notices, concurrency=1)
    result = engine.copy_page(world.rule, world.request())
    # Then no fast copy was made: each object went through HEAD + marked copy, and identical ones were skipped
    assert world.copier.calls == 0
    assert sorted(copied) == through_live
    assert (result.counts.copied, result.counts.skipped) == (len(through_live), 3 - len(through_live))
    replica = world.s3.current(DST, "a")
    assert replica is not None
    assert replica.metadata["crr-origin-bucket"] == SRC


def test_sse_kms_sources_send_every_rule_through_the_live_path() -> None:
    world = World(make_rule())
    world.put("a")
    engine = BackfillEngine(
        world.listing, world.copier, world.ledger, reconciler(world.replicator), world.notices, sse_kms_sources=True
    )
    result = engine.copy_page(world.rule, world.request())
    assert (world.copier.calls, result.counts.copied) == (0, 1)


def test_an_object_uploaded_in_parts_goes_through_the_live_path() -> None:
    # Given a listing that shows a multipart ETag
    world = World(make_rule())
    world.put("parts")
    world.put("plain")

    class MultipartListing(FakePageListing):
        def list_page(self, bucket, region, prefix, *, start_after, max_keys):  # type: ignore[no-untyped-def]
            page = super().list_page(bucket, region, prefix, start_after=start_after, max_keys=max_keys)
            for index, entry in enumerate(page.entries):
                if entry.key == "parts" and bucket == SRC:
                    page.entries[index] = type(entry)(entry.key, entry.size, entry.etag + "-3")
            return page

    engine = BackfillEngine(
        MultipartListing(world.s3), world.copier, world.ledger, reconciler(world.replicator), world.notices
    )
    result = engine.copy_page(world.rule, world.request())
    # Then only the plain object took the one-request path; both were copied
    assert world.copier.copied == ["plain"]
    assert result.counts.copied == 2


# ---- failures ------------------------------------------------------------------------------------


def test_an_object_that_fails_is_handed_to_the_replication_queue_and_the_page_goes_on() -> None:
    # Given one object whose copy is denied and one whose ledger write fails
    world = World(make_rule())
    for key in ["a", "denied key", "c", "throttled"]:
        world.put(key)
    world.copier.failures["denied key"] = AccessDeniedError("CopyObject", DST, "denied key", "AccessDenied", "no")

    def throttle(_key: str) -> None:
        raise StateStoreError("DynamoDB PutItem failed: ThrottlingException", "ThrottlingException")

    world.ledger.before_record["throttled"] = throttle
    # When the page is copied
    [result] = world.run()
    # Then both count as failed, with their reasons, and the others were copied
    assert (result.counts.copied, result.counts.failed) == (2, 2)
    assert {failure.key: failure.reason.split(":")[0] for failure in result.failures} == {
        "denied key": "AccessDenied",
        "throttled": "ThrottlingException",
    }
    # And both keys reached the replication queue as change notices the live path reconciles
    events = [event for body in world.notices.bodies for event in parse_notification(body)]
    assert sorted((event.bucket, event.key, event.sequencer) for event in events) == [  # type: ignore[union-attr]
        (SRC, "denied key", None),
        (SRC, "throttled", None),
    ]
    assert all(
        json.loads(body)["Records"][0]["s3"]["configurationId"] == BACKFILL_CONFIGURATION_ID
        for body in world.notices.bodies
    )


def test_failed_keys_are_queued_ten_per_batch_and_named_at_most_ten_times() -> None:
    world = World(make_rule())
    for index in range(25):
        key = f"k{index:02d}"
        world.put(key)
        world.copier.failures[key] = StorageError("CopyObject", DST, key, "SlowDown", "reduce your rate")
    [result] = world.run()
    assert (result.counts.failed, len(world.notices.bodies), len(world.notices.batches)) == (25, 25, 3)
    assert len(result.failures) == 10


def test_when_failed_keys_cannot_be_queued_the_page_fails_as_a_whole() -> None:
    world = World(make_rule())
    world.notices.failing = True
    world.put("k")
    world.copier.failures["k"] = StorageError("CopyObject", DST, "k", "InternalError", "oops")
    with pytest.raises(BackfillPageError, match="could not all be handed to the replication queue"):
        world.run()


def test_a_missing_source_bucket_fails_the_page_with_a_clear_error() -> None:
    world = World(make_rule())
    del world.s3.buckets[SRC]
    with pytest.raises(
        BackfillPageError, match=r"page 1: range 0000: ListObjectsV2 on src-bucket failed: NoSuchBucket"
    ) as caught:
        world.run()
    assert caught.value.code == "NoSuchBucket"


def test_a_destination_bucket_gone_mid_page_fails_the_page_instead_of_queuing_every_key() -> None:
    world = World(make_rule())
    for index in range(6):
        world.put(f"k{index}")
    page = world.engine.fetch(world.rule, world.request())
    del world.s3.buckets[DST]
    with pytest.raises(BackfillPageError, match="NoSuchBucket"):
        world.engine.process(world.rule, world.request(), page, started=0.0)
    assert world.notices.bodies == []


def test_a_paused_rule_refuses_to_backfill() -> None:
    world = World(make_rule())
    paused = world.rule.with_status(RuleStatus.PAUSED)
    with pytest.raises(BackfillRefusedError, match="paused"):
        world.engine.copy_page(paused, world.request())


def test_a_job_planned_for_another_incarnation_of_the_rule_is_refused() -> None:
    # Given a rule removed and added again under the same id with other prefixes
    world = World(make_rule("a/"))
    request = world.request()
    again = make_rule("b/")
    assert plan_digest(again) != request.plan
    with pytest.raises(BackfillRefusedError, match="start a new job"):
        world.engine.copy_page(again, request)


# ---- jobs: resume, counting ----------------------------------------------------------------------


def test_an_interrupted_job_resumes_each_range_from_its_own_cursor() -> None:
    # Given a job over 40 objects in two prefixes that stopped after each of its 2 workers ran 2 steps
    world = World(make_rule("a/", "b/"))
    keys = [f"{prefix}k{index:02d}" for prefix in ("a/", "b/") for index in range(20)]
    for key in keys:
        world.put(key)
    jobs = FakeBackfillJobs(clock=lambda: T0)
    job = BackfillJob.start(world.rule, at=T0, page_size=4, count_pages=1, workers=2)
    jobs.create(job)
    stopped = run_fanned_out(world.steps(jobs), job, workers=2, steps_per_worker=2)
    assert (stopped.status, stopped.done, stopped.pages) == (BackfillStatus.RUNNING, False, 4)
    assert all(item.claim is None for item in jobs.ranges("r", job.job_id))  # released at the quota
    # When it is resumed, with another number of workers
    resumed = run_fanned_out(world.steps(jobs), jobs.get("r", job.job_id), workers=3)
    # Then every object was copied exactly once, and the job succeeded at 100 %
    assert sorted(world.copier.copied) == keys
    assert (resumed.status, resumed.totals.listed, resumed.totals.copied, resumed.counted) == (
        BackfillStatus.SUCCEEDED,
        40,
        40,
        40,
    )
    assert resumed.progress().percent == 100.0
    # And no page of any range was recorded twice
    assert len(jobs.recorded) == len(set(jobs.recorded)) == resumed.pages


def test_a_page_failure_marks_the_job_failed_with_its_reason() -> None:
    world = World(make_rule())
    world.put("k")
    del world.s3.buckets[DST]
    jobs = FakeBackfillJobs(clock=lambda: T0)
    job = BackfillJob.start(world.rule, at=T0)
    jobs.create(job)
    with pytest.raises(BackfillPageRefusedError):
        run_fanned_out(world.steps(jobs), job, workers=2)
    failed = jobs.get("r", job.job_id)
    assert failed.status is BackfillStatus.FAILED
    assert "NoSuchBucket" in (failed.failure_reason or "")


def test_the_count_runs_ahead_of_the_copy_until_the_range_is_counted() -> None:
    # Given 40 objects, one range, pages of 4, and 2 count pages per step
    world = World(make_rule())
    for index in range(40):
        world.put(f"k{index:02d}")
    # When the range is copied page after page
    results = list(run_range(world.engine, world.rule, world.request(page_size=4, count_pages=2)))
    # Then each step counted its own page (at no request) and two more, until the count reached the end
    seen = [(result.cursor, result.count_cursor, result.count_complete, result.counted) for result in results[:5]]
    assert seen == [
        ("k03", "k11", False, 12),
        ("k07", "k19", False, 8),
        ("k11", "k27", False, 8),
        ("k15", "k35", False, 8),
        ("k19", "k39", True, 4),
    ]
    assert sum(result.counted for result in results) == 40
    assert [result.count_completed for result in results].count(True) == 1
    # And the last key of each page counted ahead is named as known to lie ahead (a split boundary)
    assert results[0].ahead == ["k07", "k11"]
    # And counting cost one listing per page it counted beyond the first (which the copy's listing counted)
    assert world.listing.count(SRC) == 10 + 9


def test_objects_added_behind_the_count_never_push_the_percentage_to_100_before_the_end() -> None:
    world = World(make_rule())
    for index in range(8):
        world.put(f"k{index}")
    jobs = FakeBackfillJobs(clock=lambda: T0)
    job = BackfillJob.start(world.rule, at=T0, page_size=2, count_pages=10, workers=1)
    jobs.create(job)
    percents: list[float | None] = []
    added = threading.Event()

    def add_behind_the_count(stored: BackfillJob, result: PageResult) -> None:
        percents.append(stored.progress().percent)
        if not added.is_set():
            added.set()
            for index in range(8):  # written after the count ended, ahead of the copy
                world.put(f"z{index}")

    final = run_fanned_out(world.steps(jobs), job, workers=1, on_page=add_behind_the_count)
    # Then 16 objects were processed against a count of 8, and the percentage held below 100 until done
    assert (final.totals.listed, final.counted) == (16, 8)
    assert percents[0] == 25.0
    assert all(percent is not None and percent <= 99.9 for percent in percents[:-1])
    assert percents == sorted(percents, key=lambda percent: percent or 0.0)
    assert final.progress().percent == 100.0


def test_the_page_result_is_small_json_even_with_long_keys_and_many_failures() -> None:
    # Given keys of 1024 bytes that all fail
    world = World(make_rule())
    for index in range(40):
        key = f"{index:03d}" + "é" * 510 + "x"
        world.put(key)
        world.copier.failures[key] = StorageError("CopyObject", DST, key, "InternalError", "x" * 5000)
    [result] = world.run(page_size=40)
    encoded = result.model_dump_json()
    # Then it round-trips, and stays far below Step Functions' 256 KiB payload limit
    assert PageResult.model_validate_json(encoded) == result
    assert len(encoded.encode()) < 32 * 1024


def test_with_concurrency_one_nothing_runs_on_another_thread() -> None:
    # Given a page of several keys to copy and a count to list ahead, every request noting its thread
    world = World(make_rule())
    for index in range(3):
        world.put(f"k{index}")
    threads: set[threading.Thread] = set()
    world.listing.yield_point = world.copier.yield_point = lambda: threads.add(threading.current_thread())
    engine = BackfillEngine(
        world.listing, world.copier, world.ledger, reconciler(world.replicator), world.notices, concurrency=1
    )
    # When the engine copies the page with concurrency 1
    result = engine.copy_page(world.rule, world.request(page_size=2, count_pages=2))
    # Then every listing and copy ran in the calling thread (neither the copy pool nor the count's)
    assert result.counts.copied == 2
    assert threads == {threading.current_thread()}


def test_concurrency_must_be_positive() -> None:
    world = World(make_rule())
    with pytest.raises(ValueError, match="concurrency"):
        BackfillEngine(
            world.listing, world.copier, world.ledger, reconciler(world.replicator), world.notices, concurrency=0
        )


# ---- memory ------------------------------------------------------------------------------------


def _peak_kib(objects: int) -> float:
    rule = make_rule(*[f"p{n:03d}/" for n in range(10)])
    listing = SyntheticListing(SRC, objects, 10, size=1)
    engine = BackfillEngine(
        listing,
        CountingCopier(),
        DiscardingLedger(),
        lambda rule, key: pytest.fail("no object should need the live path"),
        FakeReplicationQueue(),
        concurrency=4,
    )
    requests = prefix_requests(rule, page_size=200)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for request in requests:
            for _result in run_range(engine, rule, request):
                pass
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()
        engine.close()


def test_memory_does_not_grow_with_the_bucket() -> None:
    # Given the same engine over 2,000 and 20,000 objects (pages of 200)
    small, large = _peak_kib(2_000), _peak_kib(20_000)
    # Then the peak is about the same: pages are listed, copied and dropped
    assert large < small * 1.5 + 64, f"peak {small:.0f} KiB at 2k objects, {large:.0f} KiB at 20k"


def test_progress_rate_and_eta_come_from_time_spent_in_steps() -> None:
    world = World(make_rule())
    ticks = iter(range(0, 1000, 2))
    engine = BackfillEngine(
        world.listing,
        world.copier,
        world.ledger,
        reconciler(world.replicator),
        world.notices,
        monotonic=lambda: float(next(ticks)),
        concurrency=1,
    )
    for index in range(6):
        world.put(f"k{index}")
    jobs = FakeBackfillJobs(clock=lambda: T0 + timedelta(seconds=1))
    job = BackfillJob.start(world.rule, at=T0, page_size=2, count_pages=4, workers=1)
    jobs.create(job)
    stored = run_fanned_out(world.steps(jobs, engine), job, workers=1, steps_per_worker=1)
    progress = stored.progress()
    assert (progress.processed, progress.total) == (2, 6)
    assert progress.percent == pytest.approx(33.333, abs=0.01)
    assert progress.objects_per_second == pytest.approx(1.0)  # 2 objects in a 2-second step, one range open
    assert progress.eta_seconds == pytest.approx(4.0)


def test_a_page_holds_no_more_bytes_than_its_budget_and_the_next_page_goes_on_from_there() -> None:
    # Given ten 100-byte objects
    world = World(make_rule())
    keys = [f"obj/{index}" for index in range(10)]
    for key in keys:
        world.put(key, b"x" * 100)
    # When a page is copied with a budget of 350 bytes
    first = world.engine.copy_page(world.rule, world.request(), max_bytes=350)
    # Then it copied three objects only, and the page after it copies the rest
    assert first.counts.copied == 3
    assert not first.done
    rest = world.engine.copy_page(
        world.rule,
        world.request().model_copy(
            update={
                "sequence": 2,
                "cursor": first.cursor,
                "count_cursor": first.count_cursor,
                "count_complete": first.count_complete,
            }
        ),
    )
    assert rest.counts.copied == 7
    assert rest.done
    assert {key for key in keys if world.body(key) == b"x" * 100} == set(keys)


def test_a_page_whose_first_object_exceeds_the_budget_still_holds_that_object() -> None:
    # Given an object larger than the whole budget
    world = World(make_rule())
    world.put("big", b"x" * 1000)
    world.put("small", b"y")
    # When a page is copied with a budget of 10 bytes
    result = world.engine.copy_page(world.rule, world.request(), max_bytes=10)
    # Then it still makes progress: the big object is the page
    assert result.counts.copied == 1
    assert world.body("big") == b"x" * 1000
    assert world.body("small") is None


# ---- probing for split boundaries -----------------------------------------------------------------


def test_a_probe_finds_keys_far_ahead_even_when_keys_bunch_under_a_long_stem() -> None:
    # Given 2,000 keys sharing the stem "data/000" (halving the whole key space toward them would take
    # about eight probes per byte of it)
    world = World(make_rule())
    keys = [f"data/{index:08d}/obj" for index in range(2000)]
    for key in keys:
        world.put(key)
    lister = PageLister(world.listing)
    # When the part of the bucket after key 100 is probed
    found = lister.probe(world.rule, KeyRange(""), keys[100])
    # Then two consecutive keys come back, far past the position, within the probe budget
    assert len(found) == 2
    assert keys.index(found[1]) == keys.index(found[0]) + 1
    assert keys.index(found[0]) >= 500
    assert len(world.listing.requests) <= MAX_PROBES
    assert all(request[3] == 2 for request in world.listing.requests)  # MaxKeys=2 each


def test_a_probe_of_a_bounded_range_stays_inside_it_and_finds_nothing_in_an_empty_one() -> None:
    world = World(make_rule())
    for key in ["a1", "a2", "m1", "m2", "z1"]:
        world.put(key)
    lister = PageLister(world.listing)
    inside = lister.probe(world.rule, KeyRange("", "a2", "m2"), "a2")
    assert inside == ["m1", "m2"]
    assert lister.probe(world.rule, KeyRange("", "m2", "y"), "m2") == []
