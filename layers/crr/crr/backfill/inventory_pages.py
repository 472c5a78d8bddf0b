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

from pydantic import BaseModel, ConfigDict, Field

from crr.backfill.engine import BackfillEngine
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
    FailedKey,
    ListingCursor,
    PageCounts,
    PageRequest,
    listing_prefixes,
)
from crr.backfill.pages import FetchedPage, ListedSegment
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


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InventoryPageRequest(_Model):
    """One step of an inventory job: which data file of the report, from which row."""

    job_id: str = Field(min_length=1)
    rule_id: str = Field(min_length=1)
    plan: str = Field(min_length=1)
    sequence: int = Field(ge=1, description="this page's number in the job, from 1")
    manifest: str = Field(min_length=1, description="s3://BUCKET/KEY of the report's manifest.json")
    file_index: int = Field(ge=0, description="which of the manifest's data files")
    start_row: int = Field(default=0, ge=0, description="rows of the file consumed before this page")
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="objects per copy batch")
    max_rows: int = Field(default=DEFAULT_ROWS_PER_STEP, ge=1, description="rows one step consumes at most")


class InventoryPageResult(_Model):
    """What a page did: its counts (deltas), the file's cursor after it, and whether the file is done."""

    job_id: str
    rule_id: str
    sequence: int = Field(ge=1)
    file_index: int = Field(ge=0)
    next_row: int = Field(ge=0)
    end_of_file: bool
    counts: PageCounts
    failures: list[FailedKey] = Field(default_factory=list, max_length=MAX_FAILURE_SAMPLES)
    elapsed_seconds: float = Field(ge=0)


@dataclass(frozen=True)
class InventoryReport:
    """A manifest read and checked for a rule: the data files to read, and how to read their rows."""

    location: InventoryLocation
    region: str
    manifest: InventoryManifest
    parser: RowParser

    def data_file(self, index: int) -> InventoryDataFile:
        if not 0 <= index < len(self.manifest.files):
            raise InventoryManifestError(
                f"the S3 Inventory report {self.location} has {len(self.manifest.files)} data file(s), no file {index}"
            )
        return self.manifest.files[index]


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

    def take(self, page_size: int, max_bytes: int | None) -> list[ListedObject]:
        """Up to ``page_size`` objects (and ``max_bytes`` bytes, but at least one object) from the next
        rows, passing over at most MAX_ROWS_PER_PAGE rows; sets ``end_of_file`` once no row is left."""
        entries: list[ListedObject] = []
        budget = max_bytes
        start = self.row
        while len(entries) < page_size and self.row - start < MAX_ROWS_PER_PAGE:
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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = files
        self._listing = listing
        self._engine = engine
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

    def count(self, report: InventoryReport, file_index: int) -> FileCount:
        """Read data file ``file_index`` whole (one GetObject, streamed), check its MD5 against the
        manifest's, and count its rows and the objects the rule takes from them.

        Raises InventoryChecksumError, InventoryRowError (naming the file and row), and what ``open``
        raises."""
        data_file = report.data_file(file_index)
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
        request: InventoryPageRequest,
        *,
        max_bytes: int | None = None,
    ) -> Generator[RowsBatch, None, None]:
        """Batches of ``request``'s file from its ``start_row``, each of up to ``page_size`` objects (and
        ``max_bytes`` bytes, but at least one object) with what the destination holds of them, over ONE
        GetObject of the file, until its end or until the caller stops. Raises as ``count`` does."""
        data_file = report.data_file(request.file_index)
        prefixes = listing_prefixes(rule.prefixes)
        # An early stop closes the stream, so no more of the file is downloaded.
        with closing(self._stream(report, data_file)) as stream:
            rows = csv_rows(checked(stream, data_file), data_file.key, skip=request.start_row)
            cursor = _RowCursor(rows, report, data_file, request.start_row)
            while True:
                entries = cursor.take(request.page_size, max_bytes)
                segments = _segments(entries, prefixes)
                start = ListingCursor()  # a listing's cursor means nothing here; the file's row does
                page = FetchedPage(start, start, segments, self._destination(rule, segments))
                yield RowsBatch(cursor.row, cursor.end_of_file, page)
                if cursor.end_of_file:
                    return

    def copy_page(
        self,
        rule: ReplicationRule,
        report: InventoryReport,
        request: InventoryPageRequest,
        *,
        max_bytes: int | None = None,
        seconds_left: Callable[[], float] = lambda: math.inf,
    ) -> InventoryPageResult:
        """Copy up to ``request.max_rows`` rows of ``request``'s data file, a batch of ``page_size`` objects
        at a time, by the listing backfill's rules, over one read of the file; stops early once the step
        has less than half its time left after a batch (``seconds_left``). One step covers many batches
        because each step reads its file from the start (gzip cannot be entered in the middle): fewer,
        longer steps pass over fewer rows in all.

        Raises BackfillRefusedError (paused rule, another plan), BackfillPageError (a read or the
        destination listing failed for a reason worth a retry, or failed keys could not be queued), and
        InventoryError subclasses (the report itself cannot be used: no retry helps)."""
        started = self._monotonic()
        half_time = seconds_left() / 2
        counts = PageCounts()
        failures: list[FailedKey] = []
        listing_request = _as_listing_request(request)
        next_row, end_of_file = request.start_row, False
        batches = self.batches(rule, report, request, max_bytes=max_bytes)
        try:
            while not end_of_file and next_row - request.start_row < request.max_rows:
                batch = next(batches)
                tally = self._engine.copy_fetched(rule, listing_request, batch.page)
                counts = counts.plus(tally.counts())
                failures = (failures + tally.failures)[:MAX_FAILURE_SAMPLES]
                next_row, end_of_file = batch.next_row, batch.end_of_file
                if seconds_left() < half_time:
                    break
        except StorageError as exc:
            raise BackfillPageError(rule.rule_id, request.job_id, request.sequence, str(exc), exc.code) from exc
        finally:
            batches.close()
        return InventoryPageResult(
            job_id=request.job_id,
            rule_id=request.rule_id,
            sequence=request.sequence,
            file_index=request.file_index,
            next_row=next_row,
            end_of_file=end_of_file,
            counts=counts,
            failures=failures,
            elapsed_seconds=max(0.0, self._monotonic() - started),
        )

    def _stream(self, report: InventoryReport, data_file: InventoryDataFile) -> Generator[bytes, None, None]:
        yield from self._files.stream(report.location.bucket, report.region, data_file.key)

    def _destination(self, rule: ReplicationRule, segments: list[ListedSegment]) -> dict[str, tuple[int, str]]:
        destination: dict[str, tuple[int, str]] = {}
        for segment in segments:
            keys = [entry.sort_key for entry in segment.entries]
            if all(earlier < later for earlier, later in itertools.pairwise(keys)):
                destination.update(self._destination_range(rule, segment))
            else:
                destination.update(dict.fromkeys((entry.key for entry in segment.entries), NOT_LISTED))
        return destination

    def _destination_range(self, rule: ReplicationRule, segment: ListedSegment) -> dict[str, tuple[int, str]]:
        """What the destination holds of a sorted segment's keys, listed from just below its first key until
        past its last; NOT_LISTED for keys the listing did not reach within its request budget."""
        wanted = {entry.key for entry in segment.entries}
        last = segment.entries[-1].sort_key
        found: dict[str, tuple[int, str]] = {}
        after = segment.after
        for _ in range(len(segment.entries) // MAX_PAGE_SIZE + 2):
            listed = self._listing.list_page(
                rule.destination_bucket,
                rule.destination_region,
                segment.prefix,
                start_after=after,
                max_keys=MAX_PAGE_SIZE,
            )
            for entry in listed.entries:
                if entry.sort_key > last:
                    return found
                if entry.key in wanted:
                    found[entry.key] = (entry.size, entry.etag)
            if not listed.truncated or not listed.entries:
                return found
            after = listed.entries[-1].key
        # The budget ran out before the listing passed the last key: keys beyond are left to the ledger.
        reached = after.encode("utf-8", "surrogatepass") if after is not None else b""
        unseen = (entry.key for entry in segment.entries if entry.sort_key > reached)
        return found | dict.fromkeys(unseen, NOT_LISTED)


def _segments(entries: list[ListedObject], prefixes: tuple[str, ...]) -> list[ListedSegment]:
    """The entries cut where their listing prefix changes, each run starting just below its first key."""
    segments: list[ListedSegment] = []
    for prefix, run in itertools.groupby(entries, key=lambda entry: _prefix_of(entry.key, prefixes)):
        members = list(run)
        segments.append(ListedSegment(prefix, start_after_below(members[0].key), members))
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


def _as_listing_request(request: InventoryPageRequest) -> PageRequest:
    """The engine's request for a page it did not list: the job, the plan and the page's number, which
    its checks, logs and errors name (its cursors are a listing's and stay at their start)."""
    return PageRequest(
        job_id=request.job_id,
        rule_id=request.rule_id,
        plan=request.plan,
        sequence=request.sequence,
        page_size=request.page_size,
    )
