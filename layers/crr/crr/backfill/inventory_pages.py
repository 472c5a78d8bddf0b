"""The inventory-driven backfill, one page of a report's rows per step: the rows read from a data file
(from the row the file's cursor stands at), the destination over the page's keys, and the copy by the
listing backfill's own rules (``BackfillEngine.copy_fetched``: skip, fast copy pinned to the report's
ETag, reconcile, failed keys to the replication queue). The report's format: crr.backfill.inventory.

Why the same guarantees hold as for a listing: the report is just an older listing. An object the report
names but that was overwritten or deleted since is refused by CopySourceIfMatch (the report's ETag) and
counted superseded: its own notification brings the live path, as for a page listed a moment ago; an
object written after the report is not in it, and the live path copies it. Races between a copy and the
live path resolve through the ledger exactly as in crr.backfill.

Skipping what the destination holds: S3 documents no order for a report's rows, so a page's keys are
checked. When they are in S3's key order, the destination is listed over the page's key range (from just
below its first key, until past its last: usually one request per 1000 rows) and triage skips identical
replicas as for a listing page. When they are not, or the destination listing would take more requests
than the page has thousands of rows, the keys not listed are triaged by the ledger alone (skipped when
crr applied exactly this write; copied otherwise, which is correct but costs a CopyObject per replica
crr did not write itself).

Requests per object: a page of 1000 rows costs one GetObject of the data file (read from its start:
gzip cannot be entered in the middle, so rows before the cursor are decompressed and passed over, CPU
only), one or two ListObjectsV2 of the destination, and a CopyObject per object copied. Counting a file
(``count``) reads it once more, whole, which also checks its MD5 against the manifest's.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass

from crr.backfill.engine import BackfillEngine
from crr.backfill.fanout import initial_range_id
from crr.backfill.inventory import (
    InventoryDataFile,
    InventoryLocation,
    InventoryManifest,
    RowParser,
    check_manifest,
    checked,
    csv_rows,
    parse_manifest,
)
from crr.backfill.models import (
    DEFAULT_PAGE_SIZE,
    MAX_FAILURE_SAMPLES,
    BackfillJob,
    BackfillRange,
    FailedKey,
    PageCounts,
    PageRequest,
    PageResult,
    WorkKind,
    listing_prefixes,
)
from crr.backfill.pages import FetchedPage, ListedSpan, destination_holdings
from crr.backfill.ranges import KeyRange, utf8_order
from crr.errors import BackfillPageError, InventoryManifestError, StorageError
from crr.models import MAX_PAGE_SIZE, ListedObject
from crr.ports.objects import InventoryFiles, PageListing
from crr.rules import ReplicationRule

# What triage reads as "the destination holds this key, but not identically": a size no object has. A key
# entered so is decided by the ledger (skipped when crr applied exactly this write, else copied).
NOT_LISTED: tuple[int, str] = (-1, "")
# Rows passed over in one page at most, kept or dropped (other buckets, old versions, other prefixes):
# a page whose rows are nearly all dropped still ends, after a bounded amount of CPU.
MAX_ROWS_PER_PAGE = 100_000
# Rows one step consumes at most (about 25 s of copies at 32 in flight and 80 ms each): each step reads its
# file from the start, so ten batches a step pass over a tenth of the rows that one batch a step would.
DEFAULT_ROWS_PER_STEP = 10_000
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)
_MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class InventoryReport:
    """A manifest read and checked for a rule: the data files to read, and how to read their rows."""

    location: InventoryLocation
    region: str
    manifest: InventoryManifest
    parser: RowParser

    def files(self) -> list[str]:
        """The keys of the report's data files, in the manifest's order."""
        return [data_file.key for data_file in self.manifest.files]

    def data_file(self, key: str | None) -> InventoryDataFile:
        """The manifest's entry of the data file ``key``. Raises InventoryManifestError when it lists none."""
        found = next((data_file for data_file in self.manifest.files if data_file.key == key), None)
        if found is None:
            raise InventoryManifestError(f"the S3 Inventory report {self.location} lists no data file {key!r}")
        return found


@dataclass(frozen=True)
class FileCount:
    """A data file read whole: its rows, and the objects (and their bytes) the rule takes from them."""

    rows: int
    objects: int
    bytes: int


@dataclass(frozen=True)
class RowsBatch:
    """Rows of one data file, as a page triage can decide: ``page.entries`` are the kept rows' objects and
    ``page.destination`` what the destination holds of them (NOT_LISTED where it was not listed)."""

    next_row: int
    end_of_file: bool
    page: FetchedPage


class _RowCursor:
    """A data file's rows from a row on, over one open stream: handed out a batch at a time."""

    def __init__(self, rows: Iterator[list[str]], report: InventoryReport, data_file: InventoryDataFile, row: int):
        self._rows = rows
        self._report = report
        self._data_file = data_file
        self._held: list[str] | None = None  # a row read but left for the next batch (the byte budget)
        self.row = row
        self.end_of_file = False

    def take(self, page_size: int, max_bytes: int | None, max_rows: int = MAX_ROWS_PER_PAGE) -> list[ListedObject]:
        """Up to ``page_size`` objects (and ``max_bytes`` bytes, but at least one object) from the next
        rows, passing over at most ``max_rows`` rows; sets ``end_of_file`` once no row is left."""
        entries: list[ListedObject] = []
        budget = max_bytes
        start = self.row
        while len(entries) < page_size and self.row - start < max_rows:
            fields = self._held if self._held is not None else next(self._rows, None)
            self._held = None
            if fields is None:
                self.end_of_file = True
                break
            entry = self._report.parser.parse(fields, file_key=self._data_file.key, row=self.row + 1)
            if entry is not None and entries and budget is not None and entry.size > budget:
                self._held = fields  # the byte budget ends the batch before this row: the next starts with it
                break
            self.row += 1
            if entry is not None:
                entries.append(entry)
                budget = None if budget is None else budget - entry.size
        if not self.end_of_file and self._held is None:
            self._held = next(self._rows, None)
            self.end_of_file = self._held is None
        return entries


class InventoryPages:
    """Reads a report's pages for a rule and copies them with ``engine``. Stateless besides its ports, so
    thread-safe."""

    def __init__(
        self,
        files: InventoryFiles,
        listing: PageListing,
        engine: BackfillEngine,
        *,
        rows_per_step: int = DEFAULT_ROWS_PER_STEP,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if rows_per_step < 1:
            raise ValueError(f"rows_per_step must be at least 1, got {rows_per_step}")
        self._files = files
        self._listing = listing
        self._engine = engine
        self._rows_per_step = rows_per_step
        self._monotonic = monotonic

    def open(self, rule: ReplicationRule, manifest: str) -> InventoryReport:
        """The report at ``manifest`` (s3://BUCKET/KEY), read (one GetObject) and checked for ``rule``.

        Which region: the rule's source region, where S3 Inventory delivers a report of its source bucket
        (see crr.adapters.inventory_s3). Raises InventoryManifestError, InventoryFileMissingError,
        InventoryAccessDeniedError, and StorageError (worth a retry)."""
        location = InventoryLocation.parse(manifest)
        found = parse_manifest(self._files.read(location.bucket, rule.source_region, location.key), location)
        schema = check_manifest(found, rule, location)
        return InventoryReport(location, rule.source_region, found, RowParser.for_rule(schema, rule))

    def count(self, report: InventoryReport, data_file: InventoryDataFile) -> FileCount:
        """Read ``data_file`` whole (one GetObject, streamed), check its MD5 against the manifest's, and count
        its rows and the objects the rule takes from them.

        Raises InventoryChecksumError, InventoryRowError (naming the file and row), and what ``open``
        raises."""
        rows = objects = size = 0
        with closing(self._stream(report, data_file)) as stream:
            for rows, fields in enumerate(csv_rows(checked(stream, data_file), data_file.key), start=1):
                entry = report.parser.parse(fields, file_key=data_file.key, row=rows)
                if entry is not None:
                    objects += 1
                    size += entry.size
        return FileCount(rows=rows, objects=objects, bytes=size)

    def batches(
        self,
        rule: ReplicationRule,
        report: InventoryReport,
        data_file: InventoryDataFile,
        *,
        row: int = 0,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_bytes: int | None = None,
        max_rows: int | None = None,
    ) -> Generator[RowsBatch, None, None]:
        """Batches of ``data_file``'s rows after the first ``row``, each of up to ``page_size`` objects (and
        ``max_bytes`` bytes, but at least one object) with what the destination holds of them, over ONE
        GetObject of the file, until its end, until ``max_rows`` rows are consumed, or until the caller
        stops. Raises as ``count`` does."""
        prefixes = listing_prefixes(rule.prefixes)
        # An early stop closes the stream, so no more of the file is downloaded.
        with closing(self._stream(report, data_file)) as stream:
            cursor = _RowCursor(csv_rows(checked(stream, data_file), data_file.key, skip=row), report, data_file, row)
            while True:
                rows_left = MAX_ROWS_PER_PAGE if max_rows is None else max_rows - (cursor.row - row)
                entries = cursor.take(page_size, max_bytes, min(rows_left, MAX_ROWS_PER_PAGE))
                segments = _segments(entries, prefixes)
                span = ListedSpan(start=None, entries=entries, done=cursor.end_of_file)
                # The key range means nothing here (the file's row says where the work stands).
                page = FetchedPage(KeyRange(""), span, self._destination(rule, segments))
                yield RowsBatch(cursor.row, cursor.end_of_file, page)
                if cursor.end_of_file or (max_rows is not None and cursor.row - row >= max_rows):
                    return

    def plan_ranges(self, rule: ReplicationRule, job: BackfillJob) -> list[BackfillRange]:
        """An inventory job's work items: one per data file of its report, in the manifest's order, nothing
        read yet. Raises InventoryManifestError (including for a report that lists no data file) and what
        ``open`` raises."""
        if job.inventory is None:
            raise InventoryManifestError(f"backfill {job.job_id} of rule {job.rule_id} names no S3 Inventory report")
        report = self.open(rule, job.inventory)
        if not report.manifest.files:
            raise InventoryManifestError(f"the S3 Inventory report {report.location} lists no data file")
        return [
            BackfillRange(
                rule_id=job.rule_id,
                job_id=job.job_id,
                range_id=initial_range_id(index),
                kind=WorkKind.INVENTORY,
                file=data_file.key,
            )
            for index, data_file in enumerate(report.manifest.files)
        ]

    def copy_page(
        self,
        rule: ReplicationRule,
        request: PageRequest,
        *,
        max_bytes: int | None = None,
        seconds_left: Callable[[], float] = lambda: math.inf,
    ) -> PageResult:
        """One step of an inventory work item: the first time, count its data file (a whole read, which
        checks its MD5); then copy up to ``rows_per_step`` rows from ``request.row``, a batch of
        ``page_size`` objects at a time, by the listing backfill's rules, over one read of the file. Stops
        early once the step has less than half its time left after a batch (``seconds_left``). A step
        covers many batches because each step reads its file from the start (gzip cannot be entered in
        the middle): fewer, longer steps pass over fewer rows in all.

        Raises BackfillRefusedError (paused rule, another plan), BackfillPageError (a read or the
        destination listing failed for a reason worth a retry, or failed keys could not be queued), and
        InventoryError subclasses (the report itself cannot be used: no retry helps)."""
        started = self._monotonic()
        half_time = seconds_left() / 2
        self._engine.check(rule, request)
        counts, failures = PageCounts(), list[FailedKey]()
        try:
            report = self.open(rule, request.inventory or "")
            data_file = report.data_file(request.file)
            counted = None if request.count_complete else self.count(report, data_file)
            row, end_of_file = request.row, False
            batches = self.batches(
                rule,
                report,
                data_file,
                row=request.row,
                page_size=request.page_size,
                max_bytes=max_bytes,
                max_rows=self._rows_per_step,
            )
            with closing(batches):
                for batch in batches:
                    tally = self._engine.copy_fetched(rule, request, batch.page)
                    counts = counts.plus(tally.counts())
                    failures = (failures + tally.failures)[:MAX_FAILURE_SAMPLES]
                    row, end_of_file = batch.next_row, batch.end_of_file
                    if seconds_left() < half_time:
                        break
        except StorageError as exc:
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(exc), exc.code) from exc
        return PageResult(
            job_id=request.job_id,
            rule_id=request.rule_id,
            plan=request.plan,
            range_id=request.range_id,
            sequence=request.sequence,
            kind=WorkKind.INVENTORY,
            counts=counts,
            cursor=None,
            done=end_of_file,
            count_cursor=None,
            count_complete=True,
            count_completed=counted is not None,
            counted=counted.objects if counted is not None else 0,
            counted_bytes=counted.bytes if counted is not None else 0,
            failures=failures,
            elapsed_seconds=max(0.0, self._monotonic() - started),
            file=request.file,
            row=row,
        )

    def _stream(self, report: InventoryReport, data_file: InventoryDataFile) -> Generator[bytes, None, None]:
        yield from self._files.stream(report.location.bucket, report.region, data_file.key)

    def _destination(self, rule: ReplicationRule, segments: list[_Segment]) -> dict[str, tuple[int, str]]:
        destination: dict[str, tuple[int, str]] = {}
        for segment in segments:
            keys = [entry.sort_key for entry in segment.entries]
            if all(earlier < later for earlier, later in itertools.pairwise(keys)):
                destination.update(self._destination_range(rule, segment))
            else:
                destination.update(dict.fromkeys((entry.key for entry in segment.entries), NOT_LISTED))
        return destination

    def _destination_range(self, rule: ReplicationRule, segment: _Segment) -> dict[str, tuple[int, str]]:
        """What the destination holds of a sorted segment's keys, listed from just below its first key until
        past its last; NOT_LISTED for keys the listing did not reach within its request budget."""
        found, reached = destination_holdings(
            self._listing,
            rule,
            segment.prefix,
            segment.after,
            segment.entries,
            max_requests=len(segment.entries) // MAX_PAGE_SIZE + 2,
        )
        if reached is None:
            return found
        # The budget ran out before the listing passed the last key: keys beyond are left to the ledger.
        unseen = (entry.key for entry in segment.entries if entry.sort_key > utf8_order(reached))
        return found | dict.fromkeys(unseen, NOT_LISTED)


@dataclass(frozen=True)
class _Segment:
    """Rows of a batch under one listing prefix, the destination listed for them from ``after`` on."""

    prefix: str
    after: str | None
    entries: list[ListedObject]


def _segments(entries: list[ListedObject], prefixes: tuple[str, ...]) -> list[_Segment]:
    """The entries cut where their listing prefix changes, each run starting just below its first key."""
    segments: list[_Segment] = []
    for prefix, run in itertools.groupby(entries, key=lambda entry: _prefix_of(entry.key, prefixes)):
        members = list(run)
        segments.append(_Segment(prefix, start_after_below(members[0].key), members))
    return segments


def _prefix_of(key: str, prefixes: tuple[str, ...]) -> str:
    return next(prefix for prefix in prefixes if key.startswith(prefix))


def start_after_below(key: str) -> str | None:
    """A StartAfter for listing from ``key`` on: a key below ``key`` with (practically) none between them.
    ``key`` with its last character lowered by one and U+10FFFF appended (the largest character), so only
    keys that start with that and go on past U+10FFFF lie between; None when ``key`` is one character U+0001."""
    stem, below = key[:-1], ord(key[-1]) - 1
    if below in _SURROGATES:
        below = _SURROGATES.start - 1
    if below < 1:
        return stem or None
    lowered = stem + chr(below)
    padded = lowered + chr(_LAST_CODE_POINT)
    return padded if len(padded.encode("utf-8", "surrogatepass")) <= _MAX_KEY_BYTES else lowered
