"""Synthetic stand-ins for the backfill's ports that hold nothing, for measuring the engine's own memory and
speed at any object count (tests/unit/test_backfill.py, bench/backfill.py): a listing whose keys are
computed, a copier and a ledger that only count. For behaviour, use the in-memory fakes in
``tests.support.fakes``."""

from __future__ import annotations

import threading

from crr.models import LedgerEntry, ListedObject, ListingPage
from crr.rules import ReplicationRule


def synthetic_key(prefix_number: int, index: int) -> str:
    return f"p{prefix_number:03d}/obj-{index:07d}"


class SyntheticListing:
    """A ``crr.ports.objects.PageListing`` of a source of ``objects`` keys spread over ``prefixes`` prefixes
    (``p000/`` ...), computed on demand, and an empty destination: its memory does not grow with the object
    count."""

    def __init__(self, source: str, objects: int, prefixes: int, size: int = 1024) -> None:
        self.source = source
        self.per_prefix = -(-objects // prefixes)
        self.objects = objects
        self.size = size
        self.requests = 0

    def list_page(
        self, bucket: str, region: str, prefix: str, *, start_after: str | None, max_keys: int
    ) -> ListingPage:
        self.requests += 1
        if bucket != self.source or not prefix:
            return ListingPage(entries=[], truncated=False)
        number = int(prefix[1:4])
        first = 0 if start_after is None else int(start_after.rsplit("-", 1)[1]) + 1
        last = min(self.per_prefix, self.objects - number * self.per_prefix)
        stop = min(first + max_keys, last)
        entries = [
            ListedObject(key=synthetic_key(number, index), size=self.size, etag=f"{index:032x}")
            for index in range(first, stop)
        ]
        return ListingPage(entries=entries, truncated=stop < last)

    def prefixes(self) -> list[str]:
        count = -(-self.objects // self.per_prefix)
        return [f"p{number:03d}/" for number in range(count)]


class CountingCopier:
    """A ``crr.ports.objects.FastCopier`` that copies nothing and counts."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def copy_listed(self, rule: ReplicationRule, entry: ListedObject) -> str | None:
        with self._lock:
            self.calls += 1
        return None


class DiscardingLedger:
    """A ``crr.ports.table.KeyLedger`` that accepts every write and keeps none (a remote table holds them in
    production)."""

    def __init__(self) -> None:
        self.writes = 0
        self._lock = threading.Lock()

    def read(self, rule_id: str, key: str) -> LedgerEntry | None:
        return None

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, LedgerEntry]:
        return {}

    def record(self, rule_id: str, key: str, entry: LedgerEntry, expected_revision: int | None) -> None:
        with self._lock:
            self.writes += 1
