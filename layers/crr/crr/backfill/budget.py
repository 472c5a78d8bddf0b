"""How much one page may hold besides its ``page_size``: a byte budget from the step's time left, so a page
of large objects still copies within one invocation."""

from __future__ import annotations

import math

from crr.large_copy import TIME_SAFETY
from crr.models import ListedObject


def page_byte_budget(copy_bytes_per_second: float | None, remaining_seconds: float) -> int | None:
    """What copies in half the time left at the assumed copy rate (at least one byte; None: no budget,
    when no rate is assumed or the time is unbounded)."""
    if copy_bytes_per_second is None or math.isinf(remaining_seconds):
        return None
    return max(1, int(copy_bytes_per_second * remaining_seconds * TIME_SAFETY))


def within_bytes(entries: list[ListedObject], budget: int, *, at_least_one: bool) -> list[ListedObject]:
    """The leading entries whose sizes add up to at most ``budget`` (the first one regardless when
    ``at_least_one``, so a page always makes progress)."""
    kept: list[ListedObject] = []
    total = 0
    for entry in entries:
        if total + entry.size > budget and not (at_least_one and not kept):
            break
        kept.append(entry)
        total += entry.size
    return kept
