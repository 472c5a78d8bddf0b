from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crr.sequencer import compare_sequencers, is_newer


def test_sequencers_of_unequal_length_compare_after_left_padding() -> None:
    # "0A" and "00000A" are the same point; "FF" is older than "100"
    assert compare_sequencers("0A", "00000A") == 0
    assert compare_sequencers("FF", "100") == -1
    assert compare_sequencers("0055AED6DCD90281E5", "55AED6DCD90281E6") == -1


def test_case_does_not_matter() -> None:
    assert compare_sequencers("00ab", "AB") == 0


def test_anything_is_newer_than_nothing() -> None:
    assert is_newer("01", None)


def test_non_hex_is_refused() -> None:
    with pytest.raises(ValueError, match="not hex"):
        compare_sequencers("xyz", "01")


@given(st.integers(0, 2**80), st.integers(0, 2**80), st.integers(0, 6), st.integers(0, 6))
def test_comparison_matches_the_numeric_order_whatever_the_padding(a: int, b: int, pad_a: int, pad_b: int) -> None:
    left, right = "0" * pad_a + f"{a:X}", "0" * pad_b + f"{b:x}"
    assert compare_sequencers(left, right) == (a > b) - (a < b)
