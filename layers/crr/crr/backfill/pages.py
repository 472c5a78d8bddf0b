"""Listing for the backfill, within one key range (crr.backfill.ranges.KeyRange): a page of the source,
the destination over the same keys, the counting pass that lists ahead of the copy, and the probes that
find keys far ahead (where a range can be split).

Every listing of a range is ``Prefix`` = the range's prefix, ``StartAfter`` = where it stands (the
range's ``after`` at first) and stops at the first key past the range's ``until``: a range never lists a
key of another.

Raises StorageError as the listing does; the engine turns it into the page's failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from crr.backfill.budget import within_bytes
from crr.backfill.models import MAX_AHEAD_KEYS, PageRequest
from crr.backfill.ranges import KeyRange, probe_key, split, utf8_order
from crr.errors import StorageError
from crr.models import MAX_PAGE_SIZE, ListedObject
from crr.ports.objects import PageListing
from crr.rules import ReplicationRule

# Probes one page step may send looking for a key far ahead: a page of 1000 objects costs ~1000
# CopyObject, so 12 ListObjectsV2 more are about 1%, and only while the job wants more ranges.
MAX_PROBES = 12


@dataclass(frozen=True)
class ListedSpan:
    """Keys of a range listed from ``start`` (exclusive; None: the range's start): ``entries`` in key
    order, ``next_start`` the last key listed (or ``start``), and ``done`` when the range has nothing
    after it."""

    start: str | None
    entries: list[ListedObject]
    done: bool

    @property
    def next_start(self) -> str | None:
        return self.entries[-1].key if self.entries else self.start


@dataclass(frozen=True)
class FetchedPage:
    """A listed page of a range: the source objects and, per key, what the destination holds (size, ETag)."""

    key_range: KeyRange
    span: ListedSpan
    destination: dict[str, tuple[int, str]]

    @property
    def entries(self) -> list[ListedObject]:
        return self.span.entries

    @property
    def next_cursor(self) -> str | None:
        return self.span.next_start

    @property
    def done(self) -> bool:
        return self.span.done


@dataclass(frozen=True)
class CountAhead:
    """The count of a range after a page step: where it stands, whether it reached the range's end, what
    this step counted, and the last key of each page it listed past the copy (split boundaries)."""

    cursor: str | None
    complete: bool
    objects: int = 0
    bytes: int = 0
    ahead: list[str] = field(default_factory=list)


def later(first: str | None, second: str | None) -> str | None:
    """The later of two positions in a range (None: its start)."""
    if first is None:
        return second
    if second is None:
        return first
    return first if utf8_order(first) >= utf8_order(second) else second


class PageLister:
    """Lists ranges of a rule's buckets through ``PageListing``. Stateless, so thread-safe."""

    def __init__(self, listing: PageListing) -> None:
        self._listing = listing

    def fetch(self, rule: ReplicationRule, request: PageRequest, *, max_bytes: int | None = None) -> FetchedPage:
        """The source page of ``request``'s range from its cursor (at most ``page_size`` objects, and
        ``max_bytes`` bytes but at least one object) and what the destination holds of its keys."""
        key_range = request.key_range()
        span = self.list_span(
            rule.source_bucket,
            rule.source_region,
            key_range,
            later(request.after, request.cursor),
            request.page_size,
            max_bytes=max_bytes,
        )
        return FetchedPage(key_range, span, self._destination_range(rule, key_range, span))

    def count_ahead(self, rule: ReplicationRule, request: PageRequest, page: FetchedPage) -> CountAhead:
        """The range's count after this page: the page itself when the count stood where the copy does (at
        no request), then up to ``request.count_pages`` further pages listed, keys only."""
        if request.count_complete:
            return CountAhead(request.count_cursor, True)
        cursor, complete, objects, size = request.count_cursor, False, 0, 0
        if cursor == request.cursor:
            # The count has not got ahead of the copy: the page just listed counts, at no request.
            objects, size = len(page.entries), sum(entry.size for entry in page.entries)
            cursor, complete = page.next_cursor, page.done
        ahead: list[str] = []
        for _ in range(request.count_pages):
            if complete:
                break
            span = self.list_span(
                rule.source_bucket,
                rule.source_region,
                page.key_range,
                later(request.after, cursor),
                request.page_size,
            )
            objects += len(span.entries)
            size += sum(entry.size for entry in span.entries)
            cursor, complete = span.next_start, span.done
            if span.entries:
                ahead.append(span.entries[-1].key)
        return CountAhead(cursor, complete, objects, size, ahead)

    def probe(self, rule: ReplicationRule, key_range: KeyRange, low: str | None) -> list[str]:
        """Up to two consecutive keys of the source in ``key_range`` after ``low`` (a position in it; None:
        its start), about halfway through what lies there, each probe a ListObjectsV2 with ``MaxKeys=2``;
        none when no key was found within ``MAX_PROBES`` requests. Two keys, because a range is cut at a
        key with another above it (so the upper piece holds one).

        First at ``probe_key``, halfway through ``(low, until]`` in the key space. Keys bunch: when none
        lies past that point, halving the key space toward ``low`` would take about eight probes per byte
        of the stem the keys share. So the search gallops instead: from the shortest stem of ``low`` to
        the longest, it asks for the first key after every key that shares that stem (``data/1`` then
        ``data/01``... past ``data/0042``), and the first answer in the range is a key roughly an order
        of magnitude beyond ``low``. One more probe halfway between ``low`` and that key finds one near
        the middle of what lies between them."""
        prefix = key_range.prefix
        asked = 0

        def ask(point: str | None) -> list[str]:
            nonlocal asked
            asked += 1
            listed = self._listing.list_page(
                rule.source_bucket, rule.source_region, prefix, start_after=point, max_keys=2
            )
            return [entry.key for entry in listed.entries[:2] if key_range.contains(entry.key)]

        halfway = probe_key(prefix, low, key_range.until)
        if halfway is None:
            return []
        found = ask(halfway)
        if found:
            return found
        if low is None:
            first = ask(None)  # gallop from the range's first key
            if not first:
                return []
            low = first[0]
        far: list[str] = []
        for point in _reaching_points(prefix, low, below=halfway):
            if asked >= MAX_PROBES:
                return []
            far = ask(point)
            if far:
                break
        if not far:
            return []
        middle = probe_key(prefix, low, far[0]) if asked < MAX_PROBES else None
        nearer = ask(middle) if middle is not None else []
        return nearer if len(nearer) == 2 and utf8_order(nearer[0]) > utf8_order(low) else far

    def presplit(self, rule: ReplicationRule, ranges: list[KeyRange], wanted: int) -> list[KeyRange]:
        """``ranges`` divided, by probes alone (nothing is known of the keys), into up to ``wanted``
        ranges, each holding at least one key found when it was cut. A range is cut in two at a key found
        about halfway through it, when another key follows it in the range (so neither half is empty);
        the ranges are taken in turn, so every prefix is divided before any is divided again."""
        result = list(ranges)
        stuck: set[KeyRange] = set()
        while len(result) < wanted:
            divided = False
            for key_range in list(result):
                if len(result) >= wanted:
                    break
                if key_range in stuck:
                    continue
                found = self.probe(rule, key_range, key_range.after)
                if len(found) < 2:
                    stuck.add(key_range)
                    continue
                index = result.index(key_range)
                result[index : index + 1] = split(key_range, None, found, parts=2)
                divided = True
            if not divided:
                break
        return result

    def list_span(
        self,
        bucket: str,
        region: str,
        key_range: KeyRange,
        start: str | None,
        page_size: int,
        *,
        max_bytes: int | None = None,
    ) -> ListedSpan:
        """Up to ``page_size`` keys of ``key_range`` after ``start``: ONE request."""
        listed = self._listing.list_page(bucket, region, key_range.prefix, start_after=start, max_keys=page_size)
        entries = listed.entries[:page_size]
        in_range = [entry for entry in entries if not key_range.is_past_end(entry.key)]
        done = (
            len(in_range) < len(entries)
            or (not listed.truncated and len(entries) == len(listed.entries))
            or bool(in_range and in_range[-1].key == key_range.until)
        )
        if max_bytes is not None:
            kept = within_bytes(in_range, max_bytes, at_least_one=True)
            if len(kept) < len(in_range):  # the byte budget ends the page here; the next goes on from it
                in_range, done = kept, False
        if not done and not in_range:
            # Without a key to start after, the listing cannot go on (S3 never answers so).
            raise StorageError("ListObjectsV2", bucket, None, "EmptyTruncatedPage", "a truncated page held no key")
        return ListedSpan(start, in_range, done)

    def _destination_range(
        self, rule: ReplicationRule, key_range: KeyRange, span: ListedSpan
    ) -> dict[str, tuple[int, str]]:
        """What the destination holds of the span's keys: listed from the span's start until the listing
        passes its last key (usually one request). Only the span's keys are kept."""
        found, _ = destination_holdings(self._listing, rule, key_range.prefix, span.start, span.entries)
        return found


def destination_holdings(
    listing: PageListing,
    rule: ReplicationRule,
    prefix: str,
    start_after: str | None,
    entries: Sequence[ListedObject],
    *,
    max_requests: int | None = None,
) -> tuple[dict[str, tuple[int, str]], str | None]:
    """What the destination holds (size, ETag) of ``entries``, source objects in key order under
    ``prefix`` after ``start_after``: the destination listed from there until the listing passes the last
    entry, at most ``max_requests`` ListObjectsV2 (None: no bound). Returns the holdings and, when the
    bound ended the listing first, the last key it reached (None: it passed every entry)."""
    if not entries:
        return {}, None
    wanted = {entry.key for entry in entries}
    last = entries[-1].sort_key
    found: dict[str, tuple[int, str]] = {}
    after = start_after
    requests = 0
    while max_requests is None or requests < max_requests:
        listed = listing.list_page(
            rule.destination_bucket, rule.destination_region, prefix, start_after=after, max_keys=MAX_PAGE_SIZE
        )
        requests += 1
        for entry in listed.entries:
            if entry.sort_key > last:
                return found, None
            if entry.key in wanted:
                found[entry.key] = (entry.size, entry.etag)
        if not listed.truncated or not listed.entries:
            return found, None
        after = listed.entries[-1].key
    return found, after


def _reaching_points(prefix: str, low: str, *, below: str) -> list[str]:
    """Points past ``low`` (a key under ``prefix``), farthest first and below ``below``: for each stem of
    ``low`` longer than the prefix, shortest first, the stem with its next character raised by one (the
    smallest string above every key that begins with the stem and that character)."""
    points = []
    for depth in range(len(prefix), len(low)):
        raised = ord(low[depth]) + 1
        if raised in range(0xD800, 0xE000):
            raised = 0xE000
        if raised > 0x10FFFF:
            continue
        point = low[:depth] + chr(raised)
        if utf8_order(point) < utf8_order(below):
            points.append(point)
    return points


def thin_out(keys: list[str], most: int = MAX_AHEAD_KEYS) -> list[str]:
    """At most ``most`` of ``keys``, spread evenly over them (the last one kept)."""
    if len(keys) <= most:
        return keys
    return [keys[(index + 1) * len(keys) // most - 1] for index in range(most)]
