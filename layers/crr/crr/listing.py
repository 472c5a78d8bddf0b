"""What a bucket listing yields, for every reader of one: the backfill (a page at a time) and verify (all of it).

Value types only; ``crr.adapters.listing.S3Listing`` produces them from ListObjectsV2.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_PAGE_SIZE = 1000  # ListObjectsV2 returns at most 1000 keys per request


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One object of a listing. ``etag`` is unquoted; ``storage_class`` and ``last_modified`` are what
    the listing said, when it said it (fakes and hand-made entries may leave them out)."""

    key: str
    size: int
    etag: str
    storage_class: str | None = None
    last_modified: datetime | None = None

    @property
    def sort_key(self) -> bytes:
        """The key as S3 orders listings: by its UTF-8 bytes."""
        return self.key.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class ListingPage:
    """One ListObjectsV2 response: its objects in key order, and whether more follow."""

    entries: list[ListedObject]
    truncated: bool
