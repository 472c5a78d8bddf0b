"""Key ranges of a rule's prefix, the work items of a fanned-out backfill.

Pure: no boto3, no I/O. A job's ranges are stored as ``crr.backfill.models.BackfillRange``; when and how
much to split them is ``crr.backfill.fanout``.

A range is the keys under ``prefix`` that lie after ``after`` (exclusive) and up to ``until`` (inclusive)
in S3's listing order, ``None`` standing for the prefix's start or end. The bounds are shaped after
ListObjectsV2 itself: a range is listed with ``Prefix=prefix, StartAfter=after`` (no StartAfter when
``after`` is None) and the listing stops at the first key past ``until``. So the boundary between two
neighbouring ranges is one key, the first range's ``until`` and the second's ``after``, and it belongs to
exactly one of them whether or not an object has that key. ``after=None`` rather than ``after=prefix``
because ``StartAfter=prefix`` would skip an object whose key *is* the prefix (an empty name under it).

Order: S3 lists keys in the binary order of their UTF-8 encoding, so every comparison here is made on
``utf8_order(key)``. (Python's ``str`` order, by code
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

Where to probe: ``probe_key`` names a point roughly halfway through what is left, taken in the key space
rather than among keys (none of which are known there). A ListObjectsV2 with ``StartAfter`` at it and
``MaxKeys=1`` answers with the first real key past it, a boundary ``split`` can cut at; when that key lies
past the range's end, the caller probes the nearer half, ``(after, probe]``, and so on: each probe lies
strictly inside its interval, so the halving makes progress until the interval holds no key to probe at.

The invariants the property tests hold it to: after any sequence of listings and splits, the ranges are
disjoint, and their union is the original range minus what was consumed; so listing every range to its
end yields every key exactly once.

How a job uses it: the job keeps its ranges and each range's position, a Step Functions Map runs up to N
ranges at once with the page step inside each, each range resumes from its own position, and a range
whose page came back full is split when its page is recorded, the pieces after the first joining the
job's open ranges. The live-write race rules stay per object and are untouched by where a range begins
or ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def utf8_order(key: str) -> bytes:
    """The sort key S3 lists ``key`` by: its UTF-8 bytes (``surrogatepass``, so any str has one)."""
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


# S3's limit on a key's length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
_LAST_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)
_PAST_EVERY_CHARACTER = b"\xf4\x90"


def probe_key(prefix: str, after: str | None = None, until: str | None = None) -> str | None:
    """A key under ``prefix`` strictly between ``after`` (None: the prefix's start, so the key equal to the
    prefix counts) and ``until`` (None: the prefix's end), roughly halfway through that interval of the key
    space in UTF-8 byte order; None when no key lies strictly between them (the bounds are adjacent).

    Strictly below ``until``, not at it: ``StartAfter=until`` could only find keys past the range, and
    the progress of ``probe_key(prefix, after, probe)`` rests on it. The key is one S3 accepts, so a probe
    can be sent as it is: valid UTF-8 (no surrogates), no U+0000 (which XML listings cannot carry), at most
    ``MAX_KEY_BYTES`` bytes; the bounds need not be (a key with U+0000 is a fine bound).

    Halfway: the UTF-8 bytes after the bounds' common stem are read as base-256 fractions (``until=None``
    as the prefix's end), averaged to about one byte finer than the interval's width, and the shortest valid key at or
    above the average is taken, or else a key just below it (the average can fall in a stretch of byte
    strings no key has: most byte strings are not UTF-8). When neither is in the interval, the first key
    past ``after`` is returned, which is in it whenever any key is.

    Raises ValueError as ``KeyRange`` does: a bound not under the prefix, or ``after`` not below ``until``."""
    KeyRange(prefix, after, until)
    if not _is_key(prefix):
        return None
    low = utf8_order(after) + b"\x00" if after is not None else utf8_order(prefix)
    first = _key_at_or_above(prefix, low)
    if first is None or not _below(first, until):
        return None
    halfway = _halfway(prefix, after, until)
    for middle in (_key_at_or_above(prefix, halfway), _key_just_below(prefix, halfway)):
        if middle is not None and utf8_order(middle) >= utf8_order(first) and _below(middle, until):
            return middle
    return first


def _is_key(key: str) -> bool:
    """Whether S3 takes ``key`` as a key (see ``probe_key``)."""
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in key and len(encoded) <= MAX_KEY_BYTES


def _below(key: str, until: str | None) -> bool:
    return until is None or utf8_order(key) < utf8_order(until)


def _halfway(prefix: str, after: str | None, until: str | None) -> bytes:
    """The byte string about halfway between ``after`` (None: the prefix) and ``until`` (None: the prefix's
    end), as base-256 fractions after their common stem: above ``after`` when they are far enough apart to
    tell, and below ``until``.

    The prefix's end is taken as the prefix followed by F4 90, the smallest bytes above every character's
    UTF-8 (U+10FFFF is F4 8F BF BF): the bytes F4 90 to FF begin no key, so counting them would put the
    halfway point of a whole prefix where no key can be."""
    low = utf8_order(after if after is not None else prefix)
    high = utf8_order(until) if until is not None else utf8_order(prefix) + _PAST_EVERY_CHARACTER
    stem = len(utf8_order(prefix))
    while stem < min(len(low), len(high)) and low[stem] == high[stem]:
        stem += 1
    width = max(len(low), len(high)) - stem + 1
    low_fraction = int.from_bytes(low[stem:].ljust(width, b"\x00"), "big")
    high_fraction = int.from_bytes(high[stem:].ljust(width, b"\x00"), "big")
    middle = (low_fraction + high_fraction) // 2
    # Keep the digits down to about 1/256 of the interval's width: a short key, still well inside it.
    unit = 1 << 8 * max(((high_fraction - low_fraction).bit_length() - 1) // 8 - 1, 0)
    digits = (middle - middle % unit).to_bytes(width, "big").rstrip(b"\x00")
    return low[:stem] + digits


def _key_at_or_above(prefix: str, target: bytes) -> str | None:
    """The smallest key (see ``probe_key``) under ``prefix`` whose UTF-8 is at or above ``target``, a byte
    string that starts with the prefix's; None when there is none.

    The target's longest prefix of characters a key may hold is kept, and what follows is raised to the
    smallest character above it; when that would not fit in the length limit, the last character that
    can be raised is, and the key ends there (every key beginning with what it cut off is too long)."""
    stem, rest = _decode_key_characters(target)
    if not rest:
        candidate: str | None = stem
    else:
        above = _smallest_character_above(rest)
        candidate = stem + chr(above) if above is not None else None
    if candidate is not None and len(utf8_order(candidate)) <= MAX_KEY_BYTES:
        return candidate
    return _past_every_key_starting_with(prefix, stem)


def _decode_key_characters(target: bytes) -> tuple[str, bytes]:
    """The longest prefix of ``target`` made of UTF-8 characters a key may hold, decoded, and the rest."""
    characters: list[str] = []
    index = 0
    while index < len(target):
        for length in range(1, 5):
            try:
                character = target[index : index + length].decode("utf-8")
            except UnicodeDecodeError:
                continue
            break
        else:
            break
        if character == "\x00":
            break
        characters.append(character)
        index += length
    return "".join(characters), target[index:]


def _key_just_below(prefix: str, target: bytes) -> str | None:
    """A key under ``prefix`` below ``target`` (a byte string that starts with the prefix's, and is no key
    itself) and near it: its longest prefix of characters a key may hold, followed by the largest
    character below what comes next; None when that does not make a key."""
    stem, rest = _decode_key_characters(target)
    below = _code_point_from(rest) - 1
    if below in _SURROGATES:
        below = _SURROGATES.start - 1
    if not rest or below < 1 or len(utf8_order(stem)) + len(chr(below).encode("utf-8")) > MAX_KEY_BYTES:
        return None
    return stem + chr(below)


def _smallest_character_above(rest: bytes) -> int | None:
    """The smallest code point a key may hold whose UTF-8 is above ``rest`` (not empty, so not U+0000);
    None when ``rest`` is above U+10FFFF's."""
    above = _code_point_from(rest)
    if above <= _LAST_CODE_POINT and _encoded(above) == rest:
        above += 1
    if above in _SURROGATES:
        above = _SURROGATES.stop
    return above if above <= _LAST_CODE_POINT else None


def _code_point_from(rest: bytes) -> int:
    """The smallest code point whose UTF-8 is at or above ``rest`` (U+10FFFF + 1 when there is none).

    UTF-8 keeps code point order, so those code points are the ones from some point on: found by
    bisection (a surrogate's bytes as ``surrogatepass`` writes them, which sort where its code point does)."""
    low, high = 0, _LAST_CODE_POINT + 1
    while low < high:
        middle = (low + high) // 2
        if _encoded(middle) >= rest:
            high = middle
        else:
            low = middle + 1
    return low


def _encoded(code_point: int) -> bytes:
    return chr(code_point).encode("utf-8", "surrogatepass")


def _past_every_key_starting_with(prefix: str, stem: str) -> str | None:
    """The smallest key under ``prefix`` above every key that starts with ``stem`` (a key's characters):
    ``stem`` cut as late as can be, with its last character raised by one (over the surrogates), within
    the length limit; None when ``stem`` is the prefix, or is made only of U+10FFFF past it."""
    ends = [len(stem[:index].encode("utf-8")) for index in range(len(stem) + 1)]
    for index in range(len(stem) - 1, len(prefix) - 1, -1):
        code_point = ord(stem[index]) + 1
        if code_point in _SURROGATES:
            code_point = _SURROGATES.stop
        if code_point <= _LAST_CODE_POINT and ends[index] + len(chr(code_point).encode("utf-8")) <= MAX_KEY_BYTES:
            return stem[:index] + chr(code_point)
    return None
