"""Part planning for a copy in parts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crr.part_planning import MAX_PART, MAX_PARTS, MIB, MIN_PART, is_valid_layout, plan_parts


def test_a_valid_source_layout_is_followed_so_the_etag_matches() -> None:
    parts = plan_parts(12 * MIB + 7, [5 * MIB, 7 * MIB, 7])
    assert [(p.number, p.first_byte, p.last_byte) for p in parts] == [
        (1, 0, 5 * MIB - 1),
        (2, 5 * MIB, 12 * MIB - 1),
        (3, 12 * MIB, 12 * MIB + 6),
    ]
    assert parts[0].header == f"bytes=0-{5 * MIB - 1}"


@pytest.mark.parametrize("layout", [[4 * MIB, 4 * MIB], [5 * MIB, 5 * MIB + 1], [], [MAX_PART + 1]])
def test_an_invalid_source_layout_is_replaced(layout: list[int]) -> None:
    total = sum(layout) or 10 * MIB
    parts = plan_parts(total, layout, preferred_part=5 * MIB)
    assert is_valid_layout([p.size for p in parts], total)


def test_huge_objects_get_parts_large_enough_for_ten_thousand() -> None:
    total = 5 * 1024**4  # 5 TiB, the S3 maximum
    parts = plan_parts(total)
    assert len(parts) <= MAX_PARTS
    assert is_valid_layout([p.size for p in parts], total)


@given(st.integers(1, 6 * 1024**4), st.integers(MIN_PART, 512 * MIB))
def test_every_plan_is_a_valid_contiguous_layout(total: int, preferred: int) -> None:
    parts = plan_parts(total, preferred_part=preferred)
    assert parts[0].first_byte == 0
    assert parts[-1].last_byte == total - 1
    assert all(a.last_byte + 1 == b.first_byte for a, b in itertools.pairwise(parts))
    assert is_valid_layout([p.size for p in parts], total)
