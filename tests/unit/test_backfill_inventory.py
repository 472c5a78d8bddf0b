"""The inventory-driven backfill on in-memory fakes: S3 Inventory's manifest and CSV rows read as S3
documents them, the refusals that name what is wrong with a report, and pages of rows copied by the
listing backfill's rules (skip, pinned copy, superseded, ledger, queue)."""

from __future__ import annotations

import argparse
import gzip
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crr.backfill.engine import BackfillEngine
from crr.backfill.inventory import (
    InventoryLocation,
    InventorySchema,
    RowParser,
    checked,
    csv_rows,
    parse_manifest,
)
from crr.backfill.inventory_pages import InventoryPages, start_after_below
from crr.backfill.models import BackfillJob, BackfillRange, BackfillStatus, PageCounts, PageResult, WorkKind
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillControl, BackfillSteps
from crr.errors import (
    BackfillRefusedError,
    InventoryAccessDeniedError,
    InventoryChecksumError,
    InventoryFileMissingError,
    InventoryManifestError,
    InventoryRowError,
    SlowDownError,
)
from crr.replication import Replicator
from crr.rules import ReplicationRule, RuleStatus
from crr_cli.backfill_command import add_backfill_parser, describe_job, range_lines
from tests.support import rules
from tests.support.backfill_runner import run_fanned_out
from tests.support.fakes import (
    FakeBackfillExecutions,
    FakeBackfillJobs,
    FakeFastCopier,
    FakeInventoryFiles,
    FakeLedger,
    FakePageListing,
    FakeProgress,
    FakeReplicationQueue,
    FakeRules,
    FakeS3,
)
from tests.support.inventory import (
    VERSIONED_SCHEMA,
    InventoryReport,
    InventoryRow,
    encode_key,
    rows_in_files,
    run_inventory,
)

SRC, DST, REPORTS = "src-bucket", "dst-bucket", "report-bucket"
WEST, EAST = "us-west-1", "us-east-1"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

make_rule = partial(rules.make_rule, rule_id="r", created_at=T0)


@dataclass
class World:
    """Source, destination and report buckets on one FakeS3, the live path sharing the backfill's ledger."""

    rule: ReplicationRule = field(default_factory=make_rule)
    s3: FakeS3 = field(default_factory=FakeS3)
    ledger: FakeLedger = field(default_factory=FakeLedger)
    notices: FakeReplicationQueue = field(default_factory=FakeReplicationQueue)

    def __post_init__(self) -> None:
        self.s3.create_bucket(SRC, WEST, versioned=True)
        self.s3.create_bucket(DST, EAST)
        self.s3.create_bucket(REPORTS, WEST)
        self.files = FakeInventoryFiles(self.s3)
        self.listing = FakePageListing(self.s3)
        self.copier = FakeFastCopier(self.s3)
        live = reconciler(Replicator(FakeRules(self.rule), self.s3, self.ledger, FakeProgress()), clock=lambda: T0)
        self.engine = BackfillEngine(self.listing, self.copier, self.ledger, live, self.notices, concurrency=4)
        self.pages = InventoryPages(self.files, self.listing, self.engine)

    def put(self, key: str, body: bytes | None = None) -> InventoryRow:
        """A source object, and the row a report made now would list it with."""
        written = self.s3.put(SRC, key, body if body is not None else key.encode(), metadata={"m": key})
        return InventoryRow(key, len(written.body), written.etag.strip('"'), written.last_modified)

    def report(self, rows: list[InventoryRow], *, files: int = 1, **fields: object) -> str:
        made = InventoryReport(SRC, REPORTS, rows_in_files(rows, files), **fields)  # type: ignore[arg-type]
        return made.write(self.s3.put)

    def run(self, manifest: str, *, page_size: int = 1000, rows_per_step: int = 10_000) -> list[PageResult]:
        pages = InventoryPages(self.files, self.listing, self.engine, rows_per_step=rows_per_step)
        return run_inventory(pages, self.rule, manifest, page_size=page_size)

    def body(self, key: str) -> bytes | None:
        found = self.s3.current(DST, key)
        return None if found is None else found.body


def totals(results: list[PageResult]) -> PageCounts:
    summed = PageCounts()
    for result in results:
        summed = summed.plus(result.counts)
    return summed


def manifest_of(world: World, manifest: str) -> dict[str, object]:
    location = InventoryLocation.parse(manifest)
    document: dict[str, object] = json.loads(world.files.read(location.bucket, WEST, location.key))
    return document


def rewrite_manifest(world: World, manifest: str, **changes: object) -> None:
    location = InventoryLocation.parse(manifest)
    world.s3.put(location.bucket, location.key, json.dumps({**manifest_of(world, manifest), **changes}).encode())


# ---- the format --------------------------------------------------------------------------------


def test_the_manifest_is_read_as_s3_documents_it() -> None:
    # Given a report written in S3 Inventory's documented format, in two data files
    world = World()
    created = datetime(2026, 11, 26, 3, 15, tzinfo=UTC)
    manifest = world.report([world.put(f"k{index}") for index in range(4)], files=2, created_at=created)
    # When it is opened for the rule
    report = world.pages.open(world.rule, manifest)
    # Then its fields, its creation time (milliseconds since the epoch) and its files are known
    assert report.manifest.source_bucket == SRC
    assert report.manifest.report_bucket == REPORTS
    assert report.manifest.created_at == created
    assert len(report.manifest.files) == 2
    assert report.location == InventoryLocation(REPORTS, manifest.removeprefix(f"s3://{REPORTS}/"))
    assert manifest.endswith("/2026-11-26T03-15Z/manifest.json")


def test_keys_are_url_decoded_spaces_plus_signs_and_unicode_alike() -> None:
    # Given objects whose keys need URL encoding in CSV
    world = World()
    keys = ["a b/c+d.txt", "ünï/cödé 名前", "percent%20literal", "q?x=1&y=2"]
    manifest = world.report([world.put(key) for key in keys])
    # When the report is backfilled
    world.run(manifest)
    # Then each object is copied under its own key
    assert {key: world.body(key) for key in keys} == {key: key.encode() for key in keys}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30), unique=True))
def test_any_key_survives_the_report_and_back(keys: list[str]) -> None:
    # Given rows of any keys, written as S3 writes a report (URL-encoded, quoted CSV, gzip)
    rows = [InventoryRow(key, 1, "0" * 32, T0) for key in keys]
    report = InventoryReport(SRC, REPORTS, [rows])
    (body,) = report.data_files().values()
    parser = RowParser(InventorySchema(tuple(report.schema)), SRC, ("",))
    # When its rows are read back
    read = [parser.parse(fields, file_key="f", row=row) for row, fields in enumerate(csv_rows([body], "f"), 1)]
    # Then each row yields its key, in order
    assert [entry.key for entry in read if entry is not None] == keys


def test_rows_of_other_buckets_delete_markers_old_versions_and_other_prefixes_are_dropped() -> None:
    # Given a report of every version, with rows the rule must not take
    world = World(rule=make_rule("docs/"))
    kept = world.put("docs/kept")
    rows = [
        kept,
        replace(kept, key="docs/old", version_id="v0", is_latest=False),
        replace(kept, key="docs/gone", version_id="v9", is_delete_marker=True),
        replace(kept, key="docs/elsewhere", bucket="another-bucket"),
        replace(kept, key="media/outside"),
    ]
    manifest = world.report(rows, schema=VERSIONED_SCHEMA)
    # When the report is backfilled
    results = world.run(manifest)
    # Then only the rule's latest object is taken, and every row was consumed
    assert totals(results).listed == 1
    assert world.s3.keys(DST) == {"docs/kept"}
    assert results[-1].row == len(rows)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sourceBucket": "another-bucket"}, "lists bucket 'another-bucket', not 'src-bucket'"),
        ({"fileFormat": "ORC"}, "only CSV reports are supported (ORC and Parquet are not yet)"),
        ({"fileFormat": "Parquet"}, "in Parquet format"),
        ({"fileSchema": "Bucket, Size, ETag"}, "has no Key column"),
        ({"fileSchema": "Bucket, Key, Size"}, "has no ETag column"),
        ({"creationTimestamp": "yesterday"}, "is not an S3 Inventory manifest"),
        # made the day before the rule (T0): what was written in between is in neither the report nor the live path
        ({"creationTimestamp": str(int((T0.timestamp() - 86400) * 1000))}, "before rule r existed"),
    ],
)
def test_a_report_crr_cannot_use_is_refused_saying_why(changes: dict[str, object], message: str) -> None:
    # Given a report, then its manifest changed
    world = World()
    manifest = world.report([world.put("k")])
    rewrite_manifest(world, manifest, **changes)
    # When it is opened, Then it is refused with the reason
    with pytest.raises(InventoryManifestError, match=re.escape(message)):
        world.pages.open(world.rule, manifest)


def test_a_manifest_that_is_not_json_or_not_at_an_s3_location_is_refused() -> None:
    world = World()
    world.s3.put(REPORTS, "not/manifest.json", b"<html>")
    with pytest.raises(InventoryManifestError, match="is not an S3 Inventory manifest"):
        world.pages.open(world.rule, f"s3://{REPORTS}/not/manifest.json")
    with pytest.raises(InventoryManifestError, match=re.escape("give s3://BUCKET/PATH/manifest.json")):
        world.pages.open(world.rule, "/tmp/manifest.json")


def test_a_missing_manifest_or_data_file_is_named() -> None:
    # Given a report whose data file was deleted
    world = World()
    manifest = world.report([world.put("k")])
    report = world.pages.open(world.rule, manifest)
    data_key = report.manifest.files[0].key
    world.s3.remove(REPORTS, data_key)
    # When it is read, Then the error names the missing file (and the missing manifest likewise)
    with pytest.raises(InventoryFileMissingError, match=re.escape(f"s3://{REPORTS}/{data_key} does not exist")):
        world.pages.count(report, report.manifest.files[0])
    with pytest.raises(InventoryFileMissingError, match=re.escape("nothing/manifest.json does not exist")):
        world.pages.open(world.rule, f"s3://{REPORTS}/nothing/manifest.json")


def test_a_report_the_stack_may_not_read_says_which_grant_is_missing() -> None:
    # Given a report whose manifest the stack is denied
    world = World()
    manifest = world.report([world.put("k")])
    world.files.denied.add(InventoryLocation.parse(manifest).key)
    # When it is opened, Then the error names the grant to deploy with, and the key list an SSE-KMS report
    # needs: the stack denies itself kms:Decrypt through S3 on any key not in SourceKmsKeyArns (template.yaml)
    with pytest.raises(InventoryAccessDeniedError) as refused:
        world.pages.open(world.rule, manifest)
    assert f"InventoryBucket={REPORTS}" in str(refused.value)
    assert "SSE-KMS also needs its key in SourceKmsKeyArns" in str(refused.value)


def test_a_data_file_whose_md5_is_not_the_manifests_is_refused() -> None:
    # Given a data file replaced after the manifest was written (still valid gzip CSV)
    world = World()
    manifest = world.report([world.put("k")])
    report = world.pages.open(world.rule, manifest)
    data_key = report.manifest.files[0].key
    world.s3.put(REPORTS, data_key, gzip.compress(f'"{SRC}","other","1","{T0.isoformat()}","x","",""\n'.encode()))
    # When it is counted (read whole), Then the checksum names the file
    with pytest.raises(InventoryChecksumError, match=f"{data_key} has MD5 .* not the manifest's"):
        world.pages.count(report, report.manifest.files[0])


def test_a_data_file_that_is_not_gzip_is_refused() -> None:
    world = World()
    manifest = world.report([world.put("k")])
    report = world.pages.open(world.rule, manifest)
    world.s3.put(REPORTS, report.manifest.files[0].key, b"plain,text\n")
    with pytest.raises(InventoryChecksumError, match="is not gzip-compressed CSV"):
        world.pages.count(report, report.manifest.files[0])


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('"src-bucket","k","1"', "3 field(s) where the manifest's schema has 7"),
        ('"src-bucket","k","big","2026-11-25T10:00:00.000Z","e","STANDARD","false"', "Size 'big' is not a number"),
        ('"src-bucket","k","1","last tuesday","e","STANDARD","false"', "LastModifiedDate 'last tuesday'"),
        ('"src-bucket","k","1","2026-11-25T10:00:00.000Z","","STANDARD","false"', "empty ETag"),
    ],
)
def test_a_malformed_row_is_refused_naming_its_file_and_row(line: str, detail: str) -> None:
    # Given a report whose second row does not fit its schema
    world = World()
    good = world.put("a")
    manifest = world.report([good, good])
    report = world.pages.open(world.rule, manifest)
    data_key = report.manifest.files[0].key
    (first, _second) = gzip.decompress(world.files.read(REPORTS, WEST, data_key)).decode().splitlines()
    world.s3.put(REPORTS, data_key, gzip.compress(f"{first}\n{line}\n".encode()))
    # When the file is read, Then the error names the file and the row
    with pytest.raises(InventoryRowError, match=re.escape(f"file {data_key}, row 2: {detail}")):
        list(world.run(manifest))


def test_a_file_of_several_gzip_members_is_read_whole() -> None:
    # Given a data file made of two gzip members one after the other (gzip's format allows it)
    parts = [gzip.compress(b'"a","1"\n'), gzip.compress(b'"b","2"\n')]
    # When its rows are read, Then both members' rows come
    assert list(csv_rows(parts, "f")) == [["a", "1"], ["b", "2"]]


def test_a_batch_read_stops_downloading_once_it_has_its_rows() -> None:
    # Given a report of one large data file, read in small chunks
    world = World()
    manifest = world.report([world.put(f"k{index:04d}") for index in range(400)])
    report = world.pages.open(world.rule, manifest)
    # When one batch of 10 objects is taken, and the reading stops there
    world.files.chunks_read = 0
    batches = world.pages.batches(world.rule, report, report.manifest.files[0], page_size=10)
    batch = next(batches)
    batches.close()
    # Then it holds 10 objects and far fewer chunks than the file were downloaded
    assert [entry.key for entry in batch.page.entries] == [f"k{index:04d}" for index in range(10)]
    assert (batch.next_row, batch.end_of_file) == (10, False)
    whole = -(-report.manifest.files[0].size // world.files.chunk_bytes)
    assert world.files.chunks_read < whole / 4


def test_a_step_consumes_at_most_its_rows_and_the_next_goes_on_from_its_row() -> None:
    # Given 10 objects in one data file
    world = World()
    manifest = world.report([world.put(f"k{index}") for index in range(10)])
    world.files.requests.clear()
    # When it is backfilled 4 rows a step, 2 objects a batch
    results = world.run(manifest, page_size=2, rows_per_step=4)
    # Then each step took 4 rows (2 batches) on from the last, over one read of the file each
    assert [(result.row, result.done, result.counts.copied) for result in results] == [
        (4, False, 4),
        (8, False, 4),
        (10, True, 2),
    ]
    # the manifest for the run and for each step, the file counted once, then read once per step
    assert len(world.files.requests) == 1 + 3 + 1 + 3
    assert world.s3.keys(DST) == {f"k{index}" for index in range(10)}


def test_a_batch_holds_no_more_bytes_than_its_budget() -> None:
    world = World()
    manifest = world.report([world.put(f"k{index}", b"x" * 100) for index in range(5)])
    report = world.pages.open(world.rule, manifest)
    batches = list(world.pages.batches(world.rule, report, report.manifest.files[0], max_bytes=250))
    assert [len(list(batch.page.entries)) for batch in batches] == [2, 2, 1]
    assert [(batch.next_row, batch.end_of_file) for batch in batches] == [(2, False), (4, False), (5, True)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=12), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=45),
    st.integers(min_value=1, max_value=64),
)
def test_rows_skipped_as_lines_are_the_rows_a_full_read_would_pass_over(keys: list[str], skip: int, chunk: int) -> None:
    # Given a data file of any keys, in chunks of any size
    body = InventoryReport(SRC, REPORTS, [[InventoryRow(key or "k", 1, "e", T0) for key in keys]]).data_files()
    (data,) = body.values()
    chunks = [data[start : start + chunk] for start in range(0, len(data), chunk)]
    # When rows are read after skipping ``skip`` of them, Then they are the full read's rows from there
    assert list(csv_rows(chunks, "f", skip=skip)) == list(csv_rows([data], "f"))[skip:]


def test_the_md5_is_checked_over_every_chunk() -> None:
    body = b"abc" * 100
    data_file = InventoryReport(SRC, REPORTS, [[]]).objects()
    manifest = parse_manifest(
        next(value for key, value in data_file.items() if key.endswith("manifest.json")), InventoryLocation("b", "k")
    )
    stub = manifest.files[0].model_copy(update={"md5_checksum": "0" * 32})
    with pytest.raises(InventoryChecksumError):
        list(checked([body[:100], body[100:]], stub))


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"], min_codepoint=1), min_size=1, max_size=20))
def test_start_after_below_lists_the_key_itself(key: str) -> None:
    below = start_after_below(key)
    # A StartAfter strictly below the key, so a listing from it includes the key
    assert below is None or below.encode("utf-8") < key.encode("utf-8")


# ---- pages copied by the listing backfill's rules ----------------------------------------------


def test_every_object_of_a_report_of_several_files_is_copied_with_its_metadata() -> None:
    # Given 25 objects and a report of them in 3 data files
    world = World()
    manifest = world.report([world.put(f"k{index:02d}") for index in range(25)], files=3)
    # When the report is backfilled 4 rows a page
    results = world.run(manifest, page_size=4)
    # Then every object is copied once, with its metadata, and each file ended once
    assert totals(results).copied == 25
    assert world.s3.keys(DST) == {f"k{index:02d}" for index in range(25)}
    assert world.s3.current(DST, "k07").metadata == {"m": "k07"}  # type: ignore[union-attr]
    assert sum(result.done for result in results) == 3


def test_an_object_deleted_after_the_report_is_superseded_not_resurrected() -> None:
    world = World()
    manifest = world.report([world.put("keep"), world.put("deleted")])
    world.s3.remove(SRC, "deleted")
    results = world.run(manifest)
    assert (totals(results).copied, totals(results).superseded) == (1, 1)
    assert world.body("deleted") is None


def test_an_object_overwritten_after_the_report_is_not_clobbered_by_the_reported_version() -> None:
    # Given an object overwritten after the report, whose new version the live path already replicated
    world = World()
    manifest = world.report([world.put("doc", b"reported")])
    world.s3.put(SRC, "doc", b"newer")
    world.s3.put(DST, "doc", b"newer")
    # When the report is backfilled
    results = world.run(manifest)
    # Then the reported version is refused (superseded), and the replica keeps the newer write
    assert totals(results).superseded == 1
    assert world.body("doc") == b"newer"


def test_objects_identical_at_the_destination_are_skipped_by_one_destination_listing() -> None:
    # Given sorted rows (as S3 writes them in practice), 3 of 5 already replicated
    world = World()
    rows = [world.put(f"k{index}") for index in range(5)]
    for index in (0, 2, 4):
        world.s3.put(DST, f"k{index}", f"k{index}".encode())
    manifest = world.report(rows)
    # When the report is backfilled
    results = world.run(manifest)
    # Then those 3 are skipped, 2 copied, the destination listed once, the ledger never asked
    assert (totals(results).skipped, totals(results).copied) == (3, 2)
    assert [request[0] for request in world.listing.requests] == [DST]
    assert world.listing.requests[0][2] is not None  # from just below the page's first key, not the bucket's start


def test_rows_out_of_key_order_are_triaged_by_the_ledger_without_listing_the_destination() -> None:
    # Given rows out of order, one of them replicated before by crr (in the ledger), one copied by someone else
    world = World()
    rows = [world.put("c"), world.put("a"), world.put("b")]
    world.run(world.report([rows[1]]))  # crr replicated "a" (its ledger entry says so)
    world.s3.put(DST, "b", b"b")  # an identical copy crr did not make
    world.listing.requests.clear()
    world.copier.copied.clear()
    # When a report of the unordered rows is backfilled
    results = world.run(world.report(rows))
    # Then the ledger skips "a", "b" and "c" are copied (correct, if not free), and nothing is listed
    assert (totals(results).skipped, totals(results).copied) == (1, 2)
    assert sorted(world.copier.copied) == ["b", "c"]
    assert world.listing.requests == []


def test_an_object_uploaded_in_parts_goes_through_the_live_path() -> None:
    world = World()
    reported = world.put("big")
    manifest = world.report([replace(reported, etag=f"{'a' * 32}-3")])
    results = world.run(manifest)
    # the live path read its current state (its ETag is not the report's made-up one) and copied it
    assert totals(results).listed == 1
    assert world.copier.copied == []
    assert world.body("big") == b"big"


def test_s3_requests_per_object_stay_within_the_listing_backfills_budget() -> None:
    # Given a report of 3000 objects in 2 data files
    world = World()
    manifest = world.report([world.put(f"k{index:05d}") for index in range(3000)], files=2)
    world.files.requests.clear()
    # When it is backfilled 1000 rows a page
    results = world.run(manifest)
    # Then each object cost one CopyObject, plus the manifest, a data-file read and a destination listing per page
    s3_requests = len(world.files.requests) + len(world.listing.requests) + world.copier.calls
    assert totals(results).copied == 3000
    assert s3_requests / 3000 <= 1.1


def test_a_failed_copy_is_handed_to_the_replication_queue_and_the_page_goes_on() -> None:
    world = World()
    manifest = world.report([world.put("a"), world.put("b")])
    world.copier.failures["a"] = SlowDownError("CopyObject", DST, "a", "SlowDown", "slow down")
    results = world.run(manifest)
    assert (totals(results).failed, totals(results).copied) == (1, 1)
    assert [json.loads(body)["Records"][0]["s3"]["object"]["key"] for body in world.notices.bodies] == ["a"]


def test_counting_a_file_gives_the_objects_the_rule_takes() -> None:
    world = World(rule=make_rule("docs/"))
    rows = [world.put("docs/a", b"12345"), world.put("docs/b", b"1"), world.put("other/c")]
    manifest = world.report(rows)
    report = world.pages.open(world.rule, manifest)
    count = world.pages.count(report, report.manifest.files[0])
    assert (count.rows, count.objects, count.bytes) == (3, 2, 6)


def test_a_paused_rule_refuses_an_inventory_page() -> None:
    world = World()
    manifest = world.report([world.put("a")])
    world.rule = world.rule.model_copy(update={"status": RuleStatus.PAUSED})
    with pytest.raises(BackfillRefusedError, match="paused"):
        world.run(manifest)
    assert world.s3.keys(DST) == set()


def test_an_empty_report_copies_nothing() -> None:
    world = World()
    results = world.run(world.report([], files=1))
    assert [(result.counts.listed, result.done) for result in results] == [(0, True)]


def test_the_report_helper_encodes_keys_as_form_data() -> None:
    # the encoding the tests' reports use: a space as "+", "+" itself as %2B, UTF-8 bytes as %XX
    assert encode_key("a b+c/ü") == "a+b%2Bc/%C3%BC"


# ---- a job whose work items are the report's data files ----------------------------------------


def inventory_steps(world: World, *, rows_per_step: int = 10_000) -> tuple[BackfillSteps, FakeBackfillJobs]:
    jobs = FakeBackfillJobs(lambda: T0)
    pages = InventoryPages(world.files, world.listing, world.engine, rows_per_step=rows_per_step)
    return BackfillSteps(world.engine, jobs, FakeRules(world.rule), clock=lambda: T0, inventory=pages), jobs


def inventory_job(jobs: FakeBackfillJobs, world: World, manifest: str, *, page_size: int = 1000) -> BackfillJob:
    job = BackfillJob.start(world.rule, at=T0, inventory=manifest, page_size=page_size)
    jobs.create(job)
    return job


def test_a_job_fans_out_over_the_reports_data_files_and_counts_them_as_it_first_reads_each() -> None:
    # Given 40 objects and a report of them in 5 data files
    world = World()
    manifest = world.report([world.put(f"k{index:02d}") for index in range(40)], files=5)
    steps, jobs = inventory_steps(world, rows_per_step=3)
    job = inventory_job(jobs, world, manifest, page_size=2)
    seen: list[float | None] = []
    # When 3 workers run the job, 3 rows a step
    final = run_fanned_out(steps, job, workers=3, on_page=lambda stored, _: seen.append(stored.progress().percent))
    # Then each data file was a work item, never split, read to its end; every object copied once
    assert jobs.ranges(job.rule_id, job.job_id) == []  # each went from the store with its final page
    finished = jobs.finished_ranges[(job.rule_id, job.job_id)]
    items = [finished[range_id] for range_id in sorted(finished)]
    assert [(item.kind, item.file, item.row, item.done) for item in items] == [
        (WorkKind.INVENTORY, data_file, 8, True) for data_file in world.pages.open(world.rule, manifest).files()
    ]
    assert (final.status, final.totals.copied, final.counted, final.ranges_made) == (
        BackfillStatus.SUCCEEDED,
        40,
        40,
        5,
    )
    assert sorted(world.copier.copied) == [f"k{index:02d}" for index in range(40)]
    # and the percentage, known once every file was first read, never went backwards
    known = [percent for percent in seen if percent is not None]
    assert known == sorted(known)
    assert known[-1] == 100.0


def test_a_stopped_inventory_job_resumes_each_file_from_its_row() -> None:
    # Given a job whose workers stopped after 2 steps each (as an execution continuing as new does)
    world = World()
    manifest = world.report([world.put(f"k{index:02d}") for index in range(30)], files=2)
    steps, jobs = inventory_steps(world, rows_per_step=4)
    job = inventory_job(jobs, world, manifest)
    paused = run_fanned_out(steps, job, workers=2, steps_per_worker=2)
    rows = sorted(item.row for item in jobs.ranges(job.rule_id, job.job_id))
    # When it runs again
    final = run_fanned_out(steps, paused, workers=2)
    # Then the first run stopped mid-file, and the second went on from each file's row: each object once
    assert paused.status is BackfillStatus.RUNNING
    assert rows == [8, 8]
    assert final.status is BackfillStatus.SUCCEEDED
    assert sorted(world.copier.copied) == [f"k{index:02d}" for index in range(30)]


def test_a_corrupted_data_file_fails_the_job_before_anything_of_it_is_copied() -> None:
    # Given a report whose only data file was replaced after the manifest was written
    world = World()
    manifest = world.report([world.put("a"), world.put("b")])
    data_key = world.pages.open(world.rule, manifest).files()[0]
    body = world.files.read(REPORTS, WEST, data_key)
    world.s3.put(REPORTS, data_key, gzip.compress(gzip.decompress(body).replace(b'"a"', b'"c"')))
    steps, jobs = inventory_steps(world)
    # When the job runs, Then it fails with the checksum's reason, and nothing was copied
    with pytest.raises(InventoryChecksumError):
        run_fanned_out(steps, inventory_job(jobs, world, manifest), workers=1)
    failed = jobs.latest(world.rule.rule_id)
    assert failed is not None
    assert failed.status is BackfillStatus.FAILED
    assert "InventoryChecksumError" in (failed.failure_reason or "")
    assert world.s3.keys(DST) == set()


def test_a_report_of_another_bucket_fails_the_plan_with_the_reason() -> None:
    world = World()
    other = InventoryReport("another-bucket", REPORTS, [[world.put("a")]]).write(world.s3.put)
    steps, jobs = inventory_steps(world)
    with pytest.raises(InventoryManifestError, match="lists bucket 'another-bucket'"):
        run_fanned_out(steps, inventory_job(jobs, world, other), workers=1)


def test_a_start_from_a_report_does_not_resume_a_listing_job_nor_a_job_of_another_report() -> None:
    # Given an unfinished listing job of the rule (each start a second later than the one before)
    world = World()
    moments = iter(T0 + timedelta(seconds=second) for second in range(10))
    jobs, executions = FakeBackfillJobs(lambda: T0), FakeBackfillExecutions()
    control = BackfillControl(jobs, FakeRules(world.rule), executions, clock=lambda: next(moments))
    listing = control.start(world.rule.rule_id)
    # When a start names a report, then the same report again, then another report
    from_report = control.start(world.rule.rule_id, inventory="s3://reports/a/manifest.json")
    again = control.start(world.rule.rule_id, inventory="s3://reports/a/manifest.json")
    other = control.start(world.rule.rule_id, inventory="s3://reports/b/manifest.json")
    # Then the report gets a job of its own, which the same report's start finds (its execution runs),
    # and another report gets another job
    assert from_report.job.job_id != listing.job.job_id
    assert not from_report.resumed
    assert from_report.job.inventory == "s3://reports/a/manifest.json"
    assert (again.job.job_id, again.already_running) == (from_report.job.job_id, True)
    assert other.job.job_id not in {listing.job.job_id, from_report.job.job_id}
    assert other.job.inventory == "s3://reports/b/manifest.json"


def test_the_cli_names_the_report_its_data_files_and_the_row_each_stands_at() -> None:
    # Given an inventory job with one file read up to row 2500
    job = BackfillJob.start(make_rule(), at=T0, inventory="s3://reports/inv/manifest.json").model_copy(
        update={"ranges_made": 2, "ranges_open": 2, "ranges_uncounted": 1}
    )
    item = BackfillRange(
        rule_id="r",
        job_id=job.job_id,
        range_id="0000",
        kind=WorkKind.INVENTORY,
        file="inv/data/a.csv.gz",
        row=2500,
        count_complete=True,
    )
    # When the CLI describes them, Then it names the report, the files and where each stands
    assert "from the S3 Inventory report s3://reports/inv/manifest.json: 2 data file(s), 2 open" in describe_job(job)
    assert range_lines([item]) == ['file 0000 "inv/data/a.csv.gz": 2,500 rows read  pages 0  listed 0  open']


def test_the_cli_refuses_an_inventory_that_is_not_an_s3_location() -> None:
    parser = argparse.ArgumentParser()
    add_backfill_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["backfill", "start", "r", "--inventory", "manifest.json"])
    parsed = parser.parse_args(["backfill", "start", "r", "--inventory", "s3://reports/inv/manifest.json"])
    assert parsed.inventory == "s3://reports/inv/manifest.json"
