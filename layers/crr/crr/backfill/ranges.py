"""Key ranges of a rule's prefix, the work items of a fanned-out backfill (issue 13 item 3, first step).

Pure: no boto3, no I/O. Nothing runs it yet; a later step makes each range a job's unit of work.

A range is the keys under ``prefix`` that lie after ``after`` (exclusive) and up to ``until`` (inclusive)
in S3's listing order, ``None`` standing for the prefix's start or end. The bounds are shaped after
ListObjectsV2 itself: a range is listed with ``Prefix=prefix, StartAfter=after`` (no StartAfter when
``after`` is None) and the listing stops at the first key past ``until``. So the boundary between two
neighbouring ranges is one key, the first range's ``until`` and the second's ``after``, and it belongs to
exactly one of them whether or not an object has that key. ``after=None`` rather than ``after=prefix``
because ``StartAfter=prefix`` would skip an object whose key *is* the prefix (an empty name under it).

Order: S3 lists keys in the binary order of their UTF-8 encoding, so every comparison here is made on
``utf8_order(key)``, the order ``ListingCursor.position`` already uses. (Python's ``str`` order, by code
point, happens to agree with it; UTF-16 order, which Java, JavaScript and .NET strings sort by, does not:
it puts astral characters such as U+1F600 below high-BMP ones such as U+FF5E. Comparing the bytes S3
compares keeps the contract explicit instead of resting on that coincidence.)

How a range is divided while the job runs
-----------------------------------------
Nothing is known of the key distribution beforehand, so a job starts with one range per prefix
(``initial_ranges``). The worker of a range lists it page by page; its position is the last key it has
consumed. When the range turns out large (a full page, and more behind it), ``split`` divides what is
left of it, ``(reached, until]``, at boundaries taken from keys *known to lie ahead*: keys the worker has
listed but not yet consumed, or keys found by probing further on (a ListObjectsV2 with ``StartAfter`` set
to a point between the position and the end, and ``MaxKeys=1``). Each boundary is a known key and the
last piece holds the last known key, so every piece holds at least one key when it is made: a split never
makes a range that is empty by construction, nor one whose ``after`` is not below its ``until``. It may
return fewer pieces than asked (as many as there are distinct known keys ahead), and only the remaining
range itself when no key is known ahead.

The invariants the property tests hold it to: after any sequence of listings and splits, the ranges are
disjoint, and their union is the original range minus what was consumed; so listing every range to its
end yields every key exactly once.

What a later step does with it: the backfill job keeps its ranges and each range's position (instead of
today's single ``ListingCursor``), a Step Functions Map runs up to N ranges at once with today's page step
inside each, each range resumes from its own position, and a range whose page came back full is split
before its next page, the pieces after the first joining the job's queue of ranges. The live-write race
rules stay per object and are untouched by where a range begins or ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def utf8_order(key: str) -> bytes:
    """The sort key S3 lists ``key`` by: its UTF-8 bytes (``surrogatepass``: as ``ListingCursor`` does)."""
    return key.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class KeyRange:
    """The keys under ``prefix`` after ``after`` (exclusive, None: from the prefix's first key) up to
    ``until`` (inclusive, None: to the prefix's last key), in UTF-8 byte order.

    Raises ValueError when a bound is not under the prefix, or when ``after`` is not below ``until``
    (a range that could hold no key)."""

    prefix: str
    after: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        for name, bound in (("after", self.after), ("until", self.until)):
            if bound is not None and not bound.startswith(self.prefix):
                raise ValueError(f"{name}={bound!r} is not under the prefix {self.prefix!r}")
        if self.after is not None and self.until is not None and utf8_order(self.after) >= utf8_order(self.until):
            raise ValueError(f"empty range: after={self.after!r} is not below until={self.until!r}")

    def contains(self, key: str) -> bool:
        """Whether ``key`` lies in the range."""
        order = utf8_order(key)
        return (
            key.startswith(self.prefix)
            and (self.after is None or order > utf8_order(self.after))
            and (self.until is None or order <= utf8_order(self.until))
        )

    def is_past_end(self, key: str) -> bool:
        """Whether a listing of the prefix that returned ``key`` has gone past this range (stop there)."""
        return self.until is not None and utf8_order(key) > utf8_order(self.until)

    def rest_after(self, reached: str | None) -> KeyRange | None:
        """What is left once every key up to ``reached`` (a key in the range; None: none yet) is consumed;
        None when ``reached`` is the range's end, so nothing can be left.

        Raises ValueError when ``reached`` is not in the range."""
        if reached is None:
            return self
        if not self.contains(reached):
            raise ValueError(f"position {reached!r} is not in {self}")
        if reached == self.until:
            return None
        return KeyRange(self.prefix, reached, self.until)


def initial_ranges(prefix: str) -> tuple[KeyRange, ...]:
    """The ranges a job over ``prefix`` starts with, knowing nothing of its keys: the whole prefix."""
    return (KeyRange(prefix),)


def split(key_range: KeyRange, reached: str | None, ahead: Iterable[str], parts: int = 2) -> tuple[KeyRange, ...]:
    """What is left of ``key_range`` past ``reached`` (see ``KeyRange.rest_after``), divided into at most
    ``parts`` disjoint ranges whose union it is, at boundaries among the keys ``ahead``.

    ``ahead`` are keys known to lie in what is left (listed and not consumed, or found by probing ahead);
    any others (the position itself, keys of other ranges) are ignored, and their order does not matter.
    Each piece holds at least one of them, so there are at most as many pieces as distinct keys ahead:
    with none, the rest is returned whole; with nothing left, no range at all. The pieces come in key
    order, so the first continues where the worker stands.

    Raises ValueError when ``parts`` is below 1 or ``reached`` is not in the range."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    rest = key_range.rest_after(reached)
    if rest is None:
        return ()
    known = sorted({key for key in ahead if rest.contains(key)}, key=utf8_order)
    pieces = min(parts, len(known))
    if pieces <= 1:
        return (rest,)
    # Piece i ends at the known key at index ends[i] - 1; the indexes step by at least one (pieces <= len),
    # so each piece holds a known key, and the last one (ending at ``until``) holds the last known key.
    ends = [index * len(known) // pieces for index in range(1, pieces)]
    boundaries = [known[end - 1] for end in ends]
    lows = [rest.after, *boundaries]
    highs = [*boundaries, rest.until]
    return tuple(KeyRange(rest.prefix, low, high) for low, high in zip(lows, highs, strict=True))
