"""S3 event sequencers: hex strings ordered per key, compared after left-padding to equal length."""

from __future__ import annotations

import string

_HEX = frozenset(string.hexdigits)


def is_valid_sequencer(value: str) -> bool:
    return bool(value) and all(ch in _HEX for ch in value)


def sequencer_key(value: str, width: int) -> str:
    """A string that sorts like the sequencer's numeric value, for sequencers up to ``width`` digits."""
    return value.upper().rjust(width, "0")


def compare_sequencers(left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` is older than, the same as, or newer than ``right``.

    Raises ValueError for a value that is not a hex string (callers validate at the edge).
    """
    if not (is_valid_sequencer(left) and is_valid_sequencer(right)):
        raise ValueError(f"not hex sequencers: {left!r}, {right!r}")
    width = max(len(left), len(right))
    a, b = sequencer_key(left, width), sequencer_key(right, width)
    return (a > b) - (a < b)


def is_newer(candidate: str, than: str | None) -> bool:
    return than is None or compare_sequencers(candidate, than) > 0
