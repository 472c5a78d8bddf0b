"""Part planning for a copy in parts: which byte ranges of the source become which parts of the replica.

A CopyObject copies at most 5 GiB; above a threshold the replicator copies in parts. When the source
was itself uploaded in parts and its layout is a valid S3 layout, the replica gets the same boundaries,
so its ETag (the MD5 of the parts' MD5s, "-N") equals the source's and `crr verify` can compare ETags.
Otherwise parts are sized from the object: at least ``preferred_part``, more when 10 000 parts would
not cover the object, never above 5 GiB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIB = 1024**2
MIN_PART = 5 * MIB
MAX_PART = 5 * 1024**3
MAX_PARTS = 10_000


@dataclass(frozen=True)
class PartRange:
    number: int
    first_byte: int
    last_byte: int  # inclusive, as in CopySourceRange

    @property
    def size(self) -> int:
        return self.last_byte - self.first_byte + 1

    @property
    def header(self) -> str:
        return f"bytes={self.first_byte}-{self.last_byte}"


def part_ranges(sizes: Sequence[int]) -> list[PartRange]:
    """Consecutive ranges of these sizes, numbered from 1."""
    ranges, start = [], 0
    for number, size in enumerate(sizes, start=1):
        ranges.append(PartRange(number, start, start + size - 1))
        start += size
    return ranges


def is_valid_layout(sizes: Sequence[int], total: int) -> bool:
    """S3's rules: 1..10 000 parts summing to the object, each 5 MiB..5 GiB except the last (≤ 5 GiB)."""
    return (
        0 < len(sizes) <= MAX_PARTS
        and sum(sizes) == total
        and all(0 < size <= MAX_PART for size in sizes)
        and all(size >= MIN_PART for size in sizes[:-1])
    )


def plan_parts(
    total: int, source_parts: Sequence[int] | None = None, preferred_part: int = 64 * MIB
) -> list[PartRange]:
    """Part ranges for copying ``total`` bytes, following ``source_parts`` when they form a valid layout."""
    if total <= 0:
        raise ValueError("multipart copy needs a non-empty object")
    if source_parts and is_valid_layout(source_parts, total):
        return part_ranges(source_parts)
    part = max(preferred_part, MIN_PART, -(-total // MAX_PARTS))
    part = -(-part // MIB) * MIB  # whole MiB
    if part > MAX_PART:
        raise ValueError(f"{total} bytes do not fit in {MAX_PARTS} parts of at most 5 GiB")
    full, rest = divmod(total, part)
    return part_ranges([part] * full + ([rest] if rest else []))
