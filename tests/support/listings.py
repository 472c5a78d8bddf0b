"""In-memory bucket listings for `crr_cli.operations.verify`: pages in S3's key order, fetched lazily and logged."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from crr.models import ListedObject


def etag_of(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


class MemoryListing:
    """Buckets of ``ListedObject`` listed like ListObjectsV2: by prefix, sorted by the key's UTF-8
    bytes, ``page_size`` objects per page. ``fetches`` logs each page as the consumer pulls it."""

    def __init__(self, page_size: int = 1000) -> None:
        self.page_size = page_size
        self.buckets: dict[str, dict[str, ListedObject]] = {}
        self.fetches: list[tuple[str, str]] = []  # (bucket, prefix) per page served

    def put(self, bucket: str, key: str, body: bytes = b"x", *, etag: str | None = None) -> None:
        listed = ListedObject(key=key, size=len(body), etag=etag if etag is not None else etag_of(body))
        self.buckets.setdefault(bucket, {})[key] = listed

    def remove(self, bucket: str, key: str) -> None:
        self.buckets.get(bucket, {}).pop(key, None)

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        keys = sorted((key for key in self.buckets.get(bucket, {}) if key.startswith(prefix)), key=str.encode)
        for start in range(0, len(keys), self.page_size):
            self.fetches.append((bucket, prefix))
            yield [self.buckets[bucket][key] for key in keys[start : start + self.page_size]]


class FixedOrderListing:
    """A listing that returns the given keys in the given order (to model a server that sorts wrongly)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        yield [ListedObject(key=key, size=1, etag=etag_of(b"x")) for key in self.keys if key.startswith(prefix)]
