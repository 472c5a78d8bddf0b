"""Listing for the backfill: one page of the source filled across the rule's prefixes, the destination
over the same key range, and the counting pass that lists ahead of the copy.

Raises StorageError as the listing does; the engine turns it into the page's failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from crr.backfill.budget import within_bytes
from crr.backfill.models import CountProgress, ListingCursor, PageRequest
from crr.errors import StorageError
from crr.models import MAX_PAGE_SIZE, ListedObject
from crr.ports.objects import PageListing
from crr.rules import ReplicationRule


@dataclass(frozen=True)
class ListedSegment:
    """The part of a page listed under one prefix: the objects after ``after``."""

    prefix: str
    after: str | None
    entries: list[ListedObject]


@dataclass(frozen=True)
class FetchedPage:
    """A listed page: the source objects and, per key, what the destination holds (size, ETag)."""

    cursor: ListingCursor
    next_cursor: ListingCursor
    segments: list[ListedSegment]
    destination: dict[str, tuple[int, str]]

    @property
    def entries(self) -> Iterator[ListedObject]:
        for segment in self.segments:
            yield from segment.entries


class PageLister:
    """Lists pages of a rule's buckets through ``PageListing``. Stateless, so thread-safe."""

    def __init__(self, listing: PageListing) -> None:
        self._listing = listing

    def fetch(
        self,
        rule: ReplicationRule,
        prefixes: tuple[str, ...],
        cursor: ListingCursor,
        page_size: int,
        *,
        max_bytes: int | None = None,
    ) -> FetchedPage:
        """The source page from ``cursor`` (at most ``page_size`` objects, and ``max_bytes`` bytes but
        at least one object) and what the destination holds of its keys."""
        segments, next_cursor = self._fill(
            rule.source_bucket, rule.source_region, prefixes, cursor, page_size, max_bytes=max_bytes
        )
        destination: dict[str, tuple[int, str]] = {}
        for segment in segments:
            destination.update(self._destination_range(rule, segment))
        return FetchedPage(cursor, next_cursor, segments, destination)

    def count_ahead(
        self, rule: ReplicationRule, prefixes: tuple[str, ...], request: PageRequest, page: FetchedPage
    ) -> CountProgress:
        """The count after this page: the page itself when the count stood where the copy does (at no
        request), then up to ``request.count_pages`` further pages listed, keys only."""
        count = request.count
        if count.complete:
            return count
        if count.cursor.position() == request.cursor.position():
            # The count has not got ahead of the copy: the page just listed counts, at no request.
            count = CountProgress(
                cursor=page.next_cursor,
                objects=count.objects + sum(len(segment.entries) for segment in page.segments),
                bytes=count.bytes + sum(entry.size for entry in page.entries),
                complete=page.next_cursor.prefix_index >= len(prefixes),
            )
        for _ in range(request.count_pages):
            if count.complete:
                break
            segments, cursor = self._fill(
                rule.source_bucket, rule.source_region, prefixes, count.cursor, request.page_size
            )
            count = CountProgress(
                cursor=cursor,
                objects=count.objects + sum(len(s.entries) for s in segments),
                bytes=count.bytes + sum(e.size for s in segments for e in s.entries),
                complete=cursor.prefix_index >= len(prefixes),
            )
        return count

    def _fill(
        self,
        bucket: str,
        region: str,
        prefixes: tuple[str, ...],
        cursor: ListingCursor,
        page_size: int,
        *,
        max_bytes: int | None = None,
    ) -> tuple[list[ListedSegment], ListingCursor]:
        """Up to ``page_size`` objects from ``cursor`` on: one request, more only when a prefix ends before
        the page is full (the next prefix fills the rest, so small prefixes do not cost a step each)."""
        segments: list[ListedSegment] = []
        room = page_size
        index, after = cursor.prefix_index, cursor.after
        while room > 0 and index < len(prefixes):
            listed = self._listing.list_page(bucket, region, prefixes[index], start_after=after, max_keys=room)
            entries = listed.entries[:room]
            if max_bytes is not None:
                kept = within_bytes(entries, max_bytes, at_least_one=not segments)
                max_bytes -= sum(entry.size for entry in kept)
                if len(kept) < len(entries):  # the byte budget ends the page here
                    if kept:
                        segments.append(ListedSegment(prefixes[index], after, kept))
                        after = kept[-1].key
                    break
            if not listed.truncated and len(entries) == len(listed.entries):
                if entries:
                    segments.append(ListedSegment(prefixes[index], after, entries))
                    room -= len(entries)
                index, after = index + 1, None
                continue
            if not entries:
                # Without a key to start after, the listing cannot go on (S3 never answers so).
                raise StorageError("ListObjectsV2", bucket, None, "EmptyTruncatedPage", "a truncated page held no key")
            segments.append(ListedSegment(prefixes[index], after, entries))
            room -= len(entries)
            after = entries[-1].key
            break  # the prefix goes on: the next step lists from here
        return segments, ListingCursor(prefix_index=index, after=after)

    def _destination_range(self, rule: ReplicationRule, segment: ListedSegment) -> dict[str, tuple[int, str]]:
        """What the destination holds of the segment's keys: listed from the segment's start until the
        listing passes its last key (usually one request). Only the segment's keys are kept."""
        if not segment.entries:
            return {}
        wanted = {entry.key for entry in segment.entries}
        last = segment.entries[-1].sort_key
        found: dict[str, tuple[int, str]] = {}
        after = segment.after
        while True:
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
