"""`crr verify` in memory: the streaming merge of two sorted listings, its verdicts, S3's key order,
and repair through the replication queue's normal path."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crr.adapters.sqs import QueueError
from crr.errors import ListingOrderError, RepairIncompleteError, RepairRefusedError
from crr.events import ChangeEvent, ChangeKind, parse_notification
from crr.models import LedgerEntry, ListedObject, ObjectState
from crr.replication import Replicator
from crr.rules import RuleStatus
from crr_cli.operations.verify import (
    LEDGER_BATCH,
    REPAIR_CONFIGURATION_ID,
    AttributeCheck,
    AttributeMode,
    Finding,
    Verdict,
    VerifyReport,
    compare_listings,
    repair_message,
    repair_messages,
    verify,
)
from crr_cli.verify_command import _print_report
from tests.support.fakes import (
    FakeLedger,
    FakeListing,
    FakeProgress,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
    etag_of,
)
from tests.support.rules import make_rule

SRC, DST = "src-bucket", "dst-bucket"
WEST, EAST = "us-west-1", "us-east-1"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def both(listing: FakeListing, *keys: str) -> None:
    for key in keys:
        listing.put(SRC, key, key.encode())
        listing.put(DST, key, key.encode())


def counts(report: VerifyReport) -> dict[str, int]:
    return {
        "matching": report.matching,
        "missing": report.missing.count,
        "stale": report.stale.count,
        "extra": report.extra.count,
        "kept": report.kept.count,
    }


def single_event(body: str) -> ChangeEvent:
    events = parse_notification(body)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ChangeEvent)
    return event


# ---- verdicts ----------------------------------------------------------------------------------


def test_equal_buckets_are_equal() -> None:
    # Given a destination holding exactly the source's objects
    listing = FakeListing()
    both(listing, "a", "b/c", "d e+f%")
    # When verified
    report = verify(make_rule(), listing, listing)
    # Then every key matches and the report says equal
    assert counts(report) == {"matching": 3, "missing": 0, "stale": 0, "extra": 0, "kept": 0}
    assert report.equal
    assert report.differing == 0
    assert (report.source_objects, report.destination_objects) == (3, 3)


def test_missing_stale_and_extra_keys_are_counted_exactly() -> None:
    # Given one matching key, two only in the source, two whose replica differs (ETag only; size)
    # and two only in the replica
    listing = FakeListing()
    both(listing, "same")
    listing.put(SRC, "missing-1", b"1")
    listing.put(SRC, "missing-2", b"2")
    listing.put(SRC, "stale-etag", b"abcd")
    listing.put(DST, "stale-etag", b"ABCD")  # same size, different bytes
    listing.put(SRC, "stale-size", b"abc")
    listing.put(DST, "stale-size", b"abcdef")
    listing.put(DST, "extra-1", b"e")
    listing.put(DST, "extra-2", b"e")
    # When verified
    report = verify(make_rule(), listing, listing)
    # Then each key has exactly one verdict, with sample keys in key order
    assert counts(report) == {"matching": 1, "missing": 2, "stale": 2, "extra": 2, "kept": 0}
    assert report.missing.samples == ["missing-1", "missing-2"]
    assert report.stale.samples == ["stale-etag", "stale-size"]
    assert report.extra.samples == ["extra-1", "extra-2"]
    assert not report.equal
    assert report.differing == 6
    assert (report.source_objects, report.destination_objects) == (5, 5)


def test_a_same_size_object_with_another_etag_is_stale() -> None:
    # Given a replica of the same size whose ETag is the multipart form of the source's
    listing = FakeListing()
    listing.put(SRC, "big", b"0123456789", etag="9e107d9d372bb6826bd81d3542a419d6")
    listing.put(DST, "big", b"0123456789", etag="3858f62230ac3c915f300c664312c11f-2")
    # When verified, Then size alone does not make it match
    assert verify(make_rule(), listing, listing).stale.samples == ["big"]


def test_keys_outside_the_rule_prefixes_are_neither_listed_nor_counted() -> None:
    # Given a rule for data/ and img/, and differences outside them (including near misses
    # of the prefixes) as well as inside
    listing = FakeListing()
    both(listing, "data/ok", "img/ok")
    for key in ("logs/x", "data", "dat/x", "datA/x", "img"):
        listing.put(SRC, key)  # would be "missing" if counted
    for key in ("logs/y", "zzz", "imgs/x"):
        listing.put(DST, key)  # would be "extra" if counted
    listing.put(SRC, "data/missing")
    listing.put(DST, "img/extra")
    # When verified
    report = verify(make_rule("data/", "img/"), listing, listing)
    # Then only keys under the prefixes count, and only those prefixes were listed
    assert counts(report) == {"matching": 2, "missing": 1, "stale": 0, "extra": 1, "kept": 0}
    assert report.missing.samples == ["data/missing"]
    assert report.extra.samples == ["img/extra"]
    assert {prefix for _, prefix in listing.fetches} == {"data/", "img/"}


def test_without_delete_replication_keys_only_in_the_replica_are_kept_not_extra() -> None:
    # Given a rule that does not replicate deletes, and a replica still holding deleted keys
    listing = FakeListing()
    both(listing, "a", "b")
    listing.put(DST, "deleted-at-source-1")
    listing.put(DST, "deleted-at-source-2")
    # When verified
    report = verify(make_rule(replicate_deletes=False), listing, listing)
    # Then they are reported as kept, and the buckets are equal
    assert counts(report) == {"matching": 2, "missing": 0, "stale": 0, "extra": 0, "kept": 2}
    assert report.kept.samples == ["deleted-at-source-1", "deleted-at-source-2"]
    assert report.equal
    assert report.destination_objects == 4


def test_samples_stop_at_n_while_counts_go_on() -> None:
    listing = FakeListing()
    for index in range(25):
        listing.put(SRC, f"k{index:02d}")
    assert verify(make_rule(), listing, listing, samples=3).missing.model_dump() == {
        "count": 25,
        "samples": ["k00", "k01", "k02"],
    }
    assert verify(make_rule(), listing, listing, samples=0).missing.model_dump() == {"count": 25, "samples": []}


def test_empty_buckets_are_equal() -> None:
    listing = FakeListing()
    report = verify(make_rule(), listing, listing)
    assert report.equal
    assert report.source_objects == report.destination_objects == 0


# ---- S3's key order ------------------------------------------------------------------------------

# Keys whose UTF-8 byte order differs from their UTF-16 order (U+FF61 sorts before U+1F600 in UTF-8,
# after its surrogate pair in UTF-16) and keys that differ only after a multi-byte character.
UNICODE_KEYS = (
    "u",
    "ü",
    "ü/a",
    "ü/b",
    "é/a",
    "é/b",
    "日",
    "日本",
    "日本/1",
    "日本語",
    "\ue000",
    "\uff61",
    "😀",
    "😀/x",
    "z",
)


def test_unicode_keys_merge_in_utf8_byte_order() -> None:
    # Given both buckets holding unicode keys, listed in S3's (UTF-8 byte) order, and one
    # difference of each kind among keys that differ only after a multi-byte character
    listing = FakeListing(page_size=2)
    both(listing, *UNICODE_KEYS)
    listing.remove(DST, "日本/1")  # missing
    listing.put(DST, "ü/b", b"changed")  # stale
    listing.put(DST, "é/c")  # extra
    listing.put(DST, "😀/y")  # extra, after a 4-byte character
    # When verified
    report = verify(make_rule(), listing, listing)
    # Then nothing else is reported: a wrong order would pair keys wrongly and report them all
    assert counts(report) == {"matching": len(UNICODE_KEYS) - 2, "missing": 1, "stale": 1, "extra": 2, "kept": 0}
    assert report.missing.samples == ["日本/1"]
    assert report.stale.samples == ["ü/b"]
    assert report.extra.samples == ["é/c", "😀/y"]


def test_s3_order_is_utf8_byte_order_which_is_not_utf16_order() -> None:
    # The facts the merge relies on: S3 lists by UTF-8 bytes; here UTF-16 order would disagree.
    in_s3_order = sorted(UNICODE_KEYS, key=str.encode)
    assert in_s3_order.index("\uff61") < in_s3_order.index("😀")
    assert sorted(UNICODE_KEYS, key=lambda key: key.encode("utf-16-be")).index("😀") < sorted(
        UNICODE_KEYS, key=lambda key: key.encode("utf-16-be")
    ).index("\uff61")


def test_a_unicode_prefix_selects_its_keys() -> None:
    listing = FakeListing(page_size=1)
    both(listing, "日本/a", "日本語/b", "日/c")
    listing.put(SRC, "日本/missing")
    listing.put(DST, "日本語/extra-but-outside")
    report = verify(make_rule("日本/"), listing, listing)
    assert counts(report) == {"matching": 1, "missing": 1, "stale": 0, "extra": 0, "kept": 0}


class FixedOrderListing(FakeListing):
    """A listing that returns the given keys in the given order (to model a server that sorts wrongly)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__()
        self.keys = keys

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        yield [ListedObject(key=key, size=1, etag=etag_of(b"x")) for key in self.keys if key.startswith(prefix)]


@pytest.mark.parametrize(
    ("keys", "culprit"),
    [
        pytest.param(["a", "\U0001f600", "\uff61"], "\uff61", id="utf-16 order"),
        pytest.param(["a", "b", "b"], "b", id="duplicate key"),
        pytest.param(["b", "a"], "a", id="descending"),
    ],
)
def test_a_listing_out_of_s3_order_is_refused(keys: list[str], culprit: str) -> None:
    # Given a destination listing that is not strictly ascending by UTF-8 bytes
    source = FakeListing()
    for key in keys:
        source.put(SRC, key)
    # When verified, Then the merge refuses it rather than miscounting
    with pytest.raises(ListingOrderError) as raised:
        verify(make_rule(), source, FixedOrderListing(keys))
    assert raised.value.bucket == DST
    assert raised.value.key == culprit


# ---- streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("source_pages", "destination_pages"), [(1, 1), (1, 7), (3, 2), (1000, 1)])
def test_many_small_pages_give_the_same_counts(source_pages: int, destination_pages: int) -> None:
    # Given the same differences listed in pages of different sizes on each side
    source, destination = FakeListing(page_size=source_pages), FakeListing(page_size=destination_pages)
    for index in range(60):
        key = f"p/{index:03d}"
        if index % 5 != 0:
            source.put(SRC, key, b"x")
        if index % 7 != 0:
            destination.put(DST, key, b"y" if index % 11 == 0 else b"x")
    # When verified
    report = verify(make_rule(), source, destination)
    # Then the counts are those of the set difference, whatever the paging
    assert counts(report) == {"matching": 37, "missing": 7, "stale": 4, "extra": 10, "kept": 0}


def test_listings_are_consumed_page_by_page_never_ahead() -> None:
    # Given two equal buckets of 20 pages each, under two prefixes
    listing = FakeListing(page_size=10)
    both(listing, *(f"a/{index:03d}" for index in range(100)), *(f"b/{index:03d}" for index in range(100)))
    # When verified
    verify(make_rule("a/", "b/"), listing, listing)
    # Then the pages were fetched alternately: neither side ran more than one page ahead, and the
    # second prefix was listed only after the first
    lead = 0
    for bucket, _ in listing.fetches:
        lead += 1 if bucket == SRC else -1
        assert abs(lead) <= 1
    assert [prefix for _, prefix in listing.fetches] == ["a/"] * 20 + ["b/"] * 20


def test_verify_pulls_pages_lazily_from_an_endless_listing() -> None:
    # Given a listing whose pages never end (a bucket far too large to hold)
    class Endless:
        def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
            index = 0
            while True:
                yield [ListedObject(f"{index + offset:012d}", 1, "e") for offset in range(100)]
                index += 100

    class Few:
        def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
            yield []

    # When the source is endless and its findings are taken one at a time, Then they come at once
    findings = compare_listings(make_rule(), Endless(), Few())
    first = [next(findings) for _ in range(250)]
    assert {finding.verdict for finding in first} == {Verdict.MISSING}
    assert first[-1].key == f"{249:012d}"


# ---- property: the merge equals set arithmetic -------------------------------------------------

KEY_ALPHABET = ["a", "b", "/", " ", "+", "é", "日", "\uff61", "😀"]
PREFIX_CHOICES: list[tuple[str, ...]] = [(), ("a",), ("b/", "é"), ("日", "😀"), ("a/", "ab", "\uff61")]
keys = st.lists(st.sampled_from(KEY_ALPHABET), min_size=1, max_size=4).map("".join)
objects = st.dictionaries(keys, st.tuples(st.integers(0, 2), st.integers(0, 1)), max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    source=objects,
    destination=objects,
    prefixes=st.sampled_from(PREFIX_CHOICES),
    deletes=st.booleans(),
    source_page=st.integers(1, 5),
    destination_page=st.integers(1, 5),
    samples=st.integers(0, 4),
)
def test_the_merge_equals_a_set_based_reference(
    source: dict[str, tuple[int, int]],
    destination: dict[str, tuple[int, int]],
    prefixes: tuple[str, ...],
    deletes: bool,
    source_page: int,
    destination_page: int,
    samples: int,
) -> None:
    # Given random source and destination objects ((size, content variant) per key), a random rule
    # and random paging on each side
    rule = make_rule(*prefixes, replicate_deletes=deletes)
    source_listing, destination_listing = FakeListing(source_page), FakeListing(destination_page)
    for key, (size, variant) in source.items():
        source_listing.put(SRC, key, bytes([variant]) * size)
    for key, (size, variant) in destination.items():
        destination_listing.put(DST, key, bytes([variant]) * size)
    # When verified
    report = verify(rule, source_listing, destination_listing, samples)
    # Then the verdicts are those of set arithmetic over the keys the rule selects
    here = {key: value for key, value in source.items() if rule.selects(key)}
    there = {key: value for key, value in destination.items() if rule.selects(key)}

    def in_s3_order(selected: set[str]) -> list[str]:
        return sorted(selected, key=str.encode)

    def differs(key: str) -> bool:
        (size_a, variant_a), (size_b, variant_b) = here[key], there[key]
        return size_a != size_b or (size_a > 0 and variant_a != variant_b)  # empty bodies share an ETag

    missing = in_s3_order(set(here) - set(there))
    only_there = in_s3_order(set(there) - set(here))
    stale = in_s3_order({key for key in set(here) & set(there) if differs(key)})
    assert report.matching == len(set(here) & set(there)) - len(stale)
    assert (report.missing.count, report.missing.samples) == (len(missing), missing[:samples])
    assert (report.stale.count, report.stale.samples) == (len(stale), stale[:samples])
    expected_extra, expected_kept = (only_there, []) if deletes else ([], only_there)
    assert (report.extra.count, report.extra.samples) == (len(expected_extra), expected_extra[:samples])
    assert (report.kept.count, report.kept.samples) == (len(expected_kept), expected_kept[:samples])
    assert report.equal == (not missing and not stale and not expected_extra)


# ---- repair ------------------------------------------------------------------------------------


def test_repair_queues_every_difference_in_batches_of_ten() -> None:
    # Given 23 missing, 5 stale and 4 extra keys (more than --samples shows) and 3 matching
    listing = FakeListing(page_size=4)
    both(listing, "m/1", "m/2", "m/3")
    for index in range(23):
        listing.put(SRC, f"missing/{index:02d}")
    for index in range(5):
        listing.put(SRC, f"stale/{index}", b"new")
        listing.put(DST, f"stale/{index}", b"old!")
    for index in range(4):
        listing.put(DST, f"extra/{index}")
    queue = FakeReplicationQueue()
    # When verified with repair
    report = verify(make_rule(), listing, listing, samples=2, repair=queue, clock=lambda: T0)
    # Then every differing key was sent once, 10 per SendMessageBatch, and counted as queued
    assert [len(batch) for batch in queue.batches] == [10, 10, 10, 2]
    assert report.queued == 32
    events = [single_event(body) for body in queue.bodies]
    created = {event.key for event in events if event.kind is ChangeKind.CREATED}
    removed = {event.key for event in events if event.kind is ChangeKind.REMOVED}
    assert created == {f"missing/{index:02d}" for index in range(23)} | {f"stale/{index}" for index in range(5)}
    assert removed == {f"extra/{index}" for index in range(4)}
    # And each is a real S3 notification of the rule's source bucket and region, without a sequencer
    assert {(event.bucket, event.region, event.sequencer, event.event_time) for event in events} == {
        (SRC, WEST, None, T0)
    }
    assert {event.event_name for event in events} == {"ObjectCreated:Put", "ObjectRemoved:Delete"}


def test_repair_leaves_kept_and_matching_keys_alone() -> None:
    listing = FakeListing()
    both(listing, "same")
    listing.put(DST, "kept")
    queue = FakeReplicationQueue()
    report = verify(make_rule(replicate_deletes=False), listing, listing, repair=queue)
    assert report.queued == 0
    assert queue.batches == []


def test_repair_of_a_paused_rule_is_refused_before_listing() -> None:
    listing = FakeListing()
    listing.put(SRC, "missing")
    queue = FakeReplicationQueue()
    with pytest.raises(RepairRefusedError, match="paused"):
        verify(make_rule(status=RuleStatus.PAUSED), listing, listing, repair=queue)
    assert listing.fetches == []
    assert queue.batches == []


def test_a_paused_rule_can_still_be_verified() -> None:
    listing = FakeListing()
    listing.put(SRC, "missing")
    assert verify(make_rule(status=RuleStatus.PAUSED), listing, listing).missing.count == 1


def test_a_send_failure_after_some_batches_says_how_many_were_queued() -> None:
    listing = FakeListing()
    for index in range(25):
        listing.put(SRC, f"k{index:02d}")
    with pytest.raises(RepairIncompleteError, match="after queuing 10 key") as raised:
        verify(make_rule(), listing, listing, repair=FakeReplicationQueue(fail_on_batch=1))
    assert raised.value.queued == 10


def test_a_send_failure_before_anything_was_queued_is_raised_as_is() -> None:
    listing = FakeListing()
    listing.put(SRC, "k")
    with pytest.raises(QueueError, match="throttled"):
        verify(make_rule(), listing, listing, repair=FakeReplicationQueue(fail_on_batch=0))


@pytest.mark.parametrize("key", ["a b.txt", "c++/x+y.txt", "100%.txt", "ünï/日本 語.txt", "😀/a%2Bb", "q?x=1&y#z"])
def test_a_repair_message_carries_any_key_form_url_encoded(key: str) -> None:
    # When a repair message is built for an awkward key
    body = repair_message(make_rule(), Finding(Verdict.MISSING, key), T0)
    raw = json.loads(body)["Records"][0]
    # Then it is form-URL-encoded as S3 does it (no raw spaces or '+'), and decodes back exactly
    assert " " not in raw["s3"]["object"]["key"]
    assert raw["s3"]["object"]["key"].count("+") == key.count(" ")
    assert raw["eventSource"] == "aws:s3"
    assert raw["s3"]["configurationId"] == REPAIR_CONFIGURATION_ID
    assert "sequencer" not in raw["s3"]["object"]
    assert single_event(body).key == key


def test_only_differences_get_repair_messages() -> None:
    findings = [Finding(verdict, f"k-{verdict.value}") for verdict in Verdict]
    events = [single_event(body) for body in repair_messages(make_rule(), findings, T0)]
    assert [(event.key, event.kind) for event in events] == [
        ("k-missing", ChangeKind.CREATED),
        ("k-stale", ChangeKind.CREATED),
        ("k-extra", ChangeKind.REMOVED),
    ]
    with pytest.raises(ValueError, match="needs no repair"):
        repair_message(make_rule(), Finding(Verdict.KEPT, "k"), T0)


def test_repair_messages_applied_by_the_replicator_make_the_replica_equal() -> None:
    # Given a replicated source whose replica has drifted: a key lost, one overwritten, one added,
    # and the rule's ledger holding sequencers for what it applied before
    s3 = FakeS3()
    s3.create_bucket(SRC, WEST, versioned=True)
    s3.create_bucket(DST, EAST)
    rule = make_rule()
    replicator = Replicator(FakeRules(rule), s3, FakeLedger(), FakeProgress())
    for index, key in enumerate(("lost", "over written", "fine", "日本")):
        s3.put(SRC, key, key.encode())
        replicator.apply(
            ChangeEvent(
                bucket=SRC,
                key=key,
                kind=ChangeKind.CREATED,
                event_name="ObjectCreated:Put",
                event_time=T0,
                sequencer=f"{0xA0 + index:X}",
            )
        )
    s3.remove(DST, "lost")
    s3.put(DST, "over written", b"tampered")
    s3.put(DST, "stray/ünï", b"?")
    listing = FakeListing(page_size=3, s3=s3)
    before = verify(rule, listing, listing)
    assert counts(before) == {"matching": 2, "missing": 1, "stale": 1, "extra": 1, "kept": 0}
    # When verify --repair queues messages and the replicator applies them like any queue message
    queue = FakeReplicationQueue()
    verify(rule, listing, listing, repair=queue)
    for body in queue.bodies:
        replicator.apply(single_event(body))
    # Then the replica equals the source again
    after = verify(rule, listing, listing)
    assert after.equal, after
    assert s3.current(DST, "over written") is not None
    assert s3.current(DST, "over written").body == b"over written"  # type: ignore[union-attr]


# ---- the CLI's text output ---------------------------------------------------------------------


def test_the_text_report_names_counts_samples_and_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    listing = FakeListing()
    both(listing, "a")
    listing.put(SRC, "m 1")
    listing.put(DST, "kept")
    report = verify(make_rule("a", "k", "m", replicate_deletes=False), listing, listing, samples=5)
    _print_report(report, as_json=False, paused=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"rule r1: {SRC} ({WEST}) -> {DST} ({EAST}); prefixes: a, k, m; deletes do not replicate"
    assert lines[1].split() == ["matching", "1"]
    assert lines[2].split() == ["missing", "1", "'m", "1'"]
    assert "kept" in lines[5]
    assert "not a difference" in lines[5]
    assert lines[-1] == (
        "DIFFERENT: 1 key(s) differ by presence, size, bytes or attributes; metadata, headers and tags compared "
        "for 0 (none)"
    )


def test_the_json_report_has_the_verdict_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    listing = FakeListing()
    both(listing, "a")
    _print_report(verify(make_rule(), listing, listing), as_json=True, paused=False)
    document = json.loads(capsys.readouterr().out)
    assert document["equal"] is True
    assert document["matching"] == 1
    assert document["queued"] is None
    assert {"missing", "stale", "extra", "kept", "differing", "source_objects"} <= set(document)


def test_sample_keys_never_repeat_across_pages() -> None:
    listing = FakeListing(page_size=1)
    for index in range(10):
        listing.put(SRC, f"k{index}")
    samples = verify(make_rule(), listing, listing, samples=10).missing.samples
    assert all(a < b for a, b in pairwise(samples))


class _World:
    """A source and replica on FakeS3, replicated by the real Replicator, listed as ListObjectsV2 would."""

    def __init__(self, *, sse_kms: bool = False) -> None:
        self.now = T0
        self.s3 = FakeS3(clock=self.clock)
        self.s3.create_bucket(SRC, WEST, versioned=True, sse_kms=sse_kms)
        self.s3.create_bucket(DST, EAST, versioned=True, sse_kms=sse_kms)
        self.rule = make_rule()
        self.ledger = FakeLedger()
        self.replicator = Replicator(FakeRules(self.rule), self.s3, self.ledger, FakeProgress(), clock=self.clock)
        self.listing = FakeListing(page_size=3, s3=self.s3)

    def clock(self) -> datetime:
        self.now += timedelta(milliseconds=10)
        return self.now

    def replicate(self, key: str, kind: ChangeKind = ChangeKind.CREATED) -> None:
        self.replicator.apply(
            ChangeEvent(bucket=SRC, key=key, kind=kind, event_name="ObjectCreated:Put", event_time=T0)
        )

    def verify(self, mode: AttributeMode, repair: FakeReplicationQueue | None = None) -> VerifyReport:
        return verify(self.rule, self.listing, self.listing, repair=repair, check=AttributeCheck(self.s3, mode))


def test_sse_kms_replicas_with_etags_of_their_own_match_by_the_etag_their_marker_names() -> None:
    # Given SSE-KMS buckets, where a replica's ETag is not its source's, and objects replicated by crr
    world = _World(sse_kms=True)
    for key in ("a", "b"):
        world.s3.put(SRC, key, key.encode())
        world.replicate(key)
    assert world.s3.current(SRC, "a").etag != world.s3.current(DST, "a").etag  # type: ignore[union-attr]
    world.s3.calls.clear()
    # When the rule is verified without comparing attributes
    report = world.verify(AttributeMode.NONE)
    # Then the replicas match: one HEAD each showed that its marker names the source's ETag
    assert counts(report) == {"matching": 2, "missing": 0, "stale": 0, "extra": 0, "kept": 0}
    assert world.s3.calls == {"HeadObject": 2}


def test_equal_bytes_with_other_metadata_or_tags_are_stale_and_the_report_says_which() -> None:
    # Given three replicated keys; then one replica's metadata and another's tags are changed in place
    world = _World()
    for key in ("meta", "same", "tagged"):
        world.s3.put(SRC, key, b"0", metadata={"mtime": "1"}, tags={"t": "1"})
        world.replicate(key)
    replica = world.s3.current(DST, "meta")
    assert replica is not None
    world.s3.put(DST, "meta", b"0", metadata={**replica.metadata, "mtime": "2"}, tags={"t": "1"})
    world.s3.set_tags(DST, "tagged", {"t": "2"})
    # When the rule is verified comparing every key's attributes, then with repair
    report = world.verify(AttributeMode.ALL)
    queue = FakeReplicationQueue()
    world.verify(AttributeMode.ALL, repair=queue)
    # Then both are stale, the JSON says which attribute differs, and each repair asks for what fixes it
    assert report.stale.samples == ["meta", "tagged"]
    document = json.loads(report.model_dump_json())
    assert document["differences"] == {
        "metadata": {"count": 1, "samples": ["meta"]},
        "tags": {"count": 1, "samples": ["tagged"]},
    }
    assert document["inspected"] == 3
    assert [single_event(body).event_name for body in queue.bodies] == ["ObjectCreated:Put", "ObjectTagging:Put"]
    # And the replicator applying them makes the replica equal
    for body in queue.bodies:
        world.replicator.apply(single_event(body))
    assert world.verify(AttributeMode.ALL).equal


def test_sampling_compares_about_one_key_in_n() -> None:
    # Given 200 replicated keys
    world = _World()
    for index in range(200):
        world.s3.put(SRC, f"k{index:03d}", b"x")
        world.replicate(f"k{index:03d}")
    # When verified with a sample of one in ten
    check = AttributeCheck(world.s3, AttributeMode.SAMPLE, sample_every=10, rng=random.Random(7))
    report = verify(world.rule, world.listing, world.listing, check=check)
    # Then about 20 keys had their attributes compared
    assert 8 <= report.inspected <= 35
    assert report.equal


def test_replicas_without_a_marker_match_by_a_full_object_checksum_where_etags_differ() -> None:
    # Given SSE-KMS buckets where a replica was written without crr's marker (a backfill fast-path copy),
    # and another replica of the same size holds other bytes
    world = _World(sse_kms=True)
    for key, replica in (("same", b"abc"), ("other", b"xyz")):
        world.s3.put(SRC, key, b"abc")
        world.s3.put(DST, key, replica)
    # When the rule is verified
    report = world.verify(AttributeMode.NONE)
    # Then the first matches by its checksum, the second is stale because its bytes differ
    assert (report.matching, report.stale.samples) == (1, ["other"])
    assert report.differences["etag"].samples == ["other"]


# ---- sameness by the ledger's record of crr's copy ---------------------------------------------


class NoMarkerInspector:
    """An ``Inspector`` that finds neither a marker nor a checksum (a fast-path replica on a store that
    keeps no checksums), counting what it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def head(self, bucket: str, region: str, key: str) -> ObjectState | None:
        self.calls += 1
        return None

    def tags(self, bucket: str, region: str, key: str, version_id: str | None) -> dict[str, str]:
        self.calls += 1
        return {}

    def checksum(self, bucket: str, region: str, key: str) -> str | None:
        self.calls += 1
        return None


class CountingLedger(FakeLedger):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        self.batches.append(list(keys))
        return super().read_many(rule_id, keys)


def copied(source_etag: str, replica_etag: str | None, *, deleted: bool = False) -> LedgerEntry:
    return LedgerEntry(1, None, f'"{source_etag}"', deleted, T0, replica_etag=replica_etag and f'"{replica_etag}"')


def test_a_replica_the_ledger_says_crr_copied_between_exactly_the_listed_etags_matches() -> None:
    # Given replicas whose ETags differ from their sources' (SSE-KMS), none with a marker or checksum:
    # one the ledger says crr copied between exactly the listed ETags, one a user overwrote since, one
    # whose source changed since, one recorded before replica ETags were, and one recorded as deleted
    listing = FakeListing()
    ledger = CountingLedger()
    for key, recorded in (
        ("copied", copied("s", "r")),
        ("overwritten", copied("s", "r-by-crr")),
        ("source-moved", copied("s-before", "r")),
        ("old-entry", copied("s", None)),
        ("deleted", copied("s", "r", deleted=True)),
    ):
        listing.put(SRC, key, b"same size", etag="s")
        listing.put(DST, key, b"same size", etag="r")
        ledger.record("r1", key, recorded, None)
    inspector = NoMarkerInspector()
    # When verified with repair, the ledger and an inspector
    queue = FakeReplicationQueue()
    check = AttributeCheck(inspector, AttributeMode.NONE)
    report = verify(make_rule(), listing, listing, repair=queue, check=check, ledger=ledger)
    # Then only the first matches, and only the others are queued
    assert report.matching == 1
    assert report.stale.samples == ["deleted", "old-entry", "overwritten", "source-moved"]
    assert report.queued == 4
    # And it cost one BatchGetItem for the five keys, and no HEAD for the one the ledger settled
    assert ledger.batches == [["copied", "deleted", "old-entry", "overwritten", "source-moved"]]
    assert inspector.calls == 4 * 3  # the others: a HEAD per side for the marker, one for a checksum


def test_without_the_ledger_a_markerless_replica_with_its_own_etag_is_stale() -> None:
    # Given the same replica crr copied, but verify not given the ledger
    listing = FakeListing()
    listing.put(SRC, "copied", b"x", etag="s")
    listing.put(DST, "copied", b"x", etag="r")
    # When verified, Then it is stale: nothing else ties its ETag to the source's
    assert verify(make_rule(), listing, listing, check=AttributeCheck(NoMarkerInspector())).stale.count == 1


def test_the_ledger_is_read_a_hundred_keys_at_a_time_and_findings_stay_in_key_order() -> None:
    # Given 250 replicas with ETags of their own, all recorded, among 1500 identical keys, and 3 missing
    listing = FakeListing(page_size=7)
    ledger = CountingLedger()
    for index in range(1750):
        key = f"k{index:04d}"
        if index % 7 == 0:
            listing.put(SRC, key, b"x", etag="s")
            listing.put(DST, key, b"x", etag="r")
            ledger.record("r1", key, copied("s", "r"), None)
        else:
            both(listing, key)
    for key in ("k0001", "k0900", "k1749"):
        listing.remove(DST, key)
    # When verified
    report = verify(make_rule(), listing, listing, samples=3, ledger=ledger)
    # Then every recorded replica matches, the ledger was read in batches of at most 100 keys (no more
    # than one per 100 such keys or per 1000 keys listed), and the samples are the first in key order
    assert (report.matching, report.missing.count, report.stale.count) == (1747, 3, 0)
    assert sum(len(batch) for batch in ledger.batches) == 250
    assert max(len(batch) for batch in ledger.batches) == LEDGER_BATCH
    assert len(ledger.batches) <= 250 // LEDGER_BATCH + 1750 // 1000 + 1
    assert report.missing.samples == ["k0001", "k0900", "k1749"]


def test_live_path_replicas_in_sse_kms_buckets_match_by_the_ledger_without_a_head() -> None:
    # Given SSE-KMS buckets and objects replicated by the live path (its ledger keeps each replica's ETag)
    world = _World(sse_kms=True)
    for key in ("a", "b"):
        world.s3.put(SRC, key, key.encode())
        world.replicate(key)
    world.s3.calls.clear()
    # When verified with the rule's ledger
    check = AttributeCheck(world.s3, AttributeMode.NONE)
    report = verify(world.rule, world.listing, world.listing, check=check, ledger=world.ledger)
    # Then both match, and no object was read beyond the listing
    assert report.matching == 2
    assert world.s3.calls == {}
    # And a user's overwrite of one replica (other bytes of the same size, a new ETag) is stale
    world.s3.put(DST, "a", b"A")
    report = verify(world.rule, world.listing, world.listing, check=check, ledger=world.ledger)
    assert (report.matching, report.stale.samples) == (1, ["a"])
