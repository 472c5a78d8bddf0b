"""Key ranges for a fanned-out backfill: listed through a ListObjectsV2 simulation (StartAfter, UTF-8 byte
order) while they are split at random moments, every key comes out exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crr.backfill.ranges import MAX_KEY_BYTES, KeyRange, initial_ranges, probe_key, split, utf8_order

# ASCII, a byte above 0x7F, high-BMP (U+FF5E, U+FFFD) and astral characters (U+10000, U+1F600): UTF-16
# order puts the astral ones below U+FF5E, UTF-8 byte order (S3's) above it.
TRICKY = "a/~\u00e9\uff5e\U0001f600"
characters = st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=["Cs"]))
PREFIXES = ["", "logs/", "logs/2026/11/25/"]
# Stems shared by many keys, so keys share long prefixes; an empty suffix makes a key equal to its stem,
# which is a key equal to the prefix when the stem is the prefix.
STEMS = [*PREFIXES, "logs/2026/11/25/hour=10/a-stem-that-many-keys-share-", "other/"]
# Suffixes mostly of the tricky characters, so keys that UTF-16 and UTF-8 order differently meet in one range.
suffixes = st.one_of(st.text(st.sampled_from(TRICKY), max_size=3), st.text(characters, max_size=5))
keys = st.builds(lambda stem, suffix: stem + suffix, st.sampled_from(STEMS), suffixes).filter(bool)
key_sets = st.sets(keys, max_size=60)


def s3_order(key: str) -> bytes:
    """S3's listing order, written here apart from the module's so the simulation checks it."""
    return key.encode("utf-8")


def list_objects_v2(bucket: set[str], prefix: str, start_after: str | None, max_keys: int) -> list[str]:
    """ListObjectsV2 as S3 answers it: the keys under ``prefix`` after ``start_after``, UTF-8 byte order."""
    ordered = sorted((key for key in bucket if key.startswith(prefix)), key=s3_order)
    return [key for key in ordered if start_after is None or s3_order(key) > s3_order(start_after)][:max_keys]


@dataclass
class Worker:
    """A range and how far its worker has listed (None: not yet)."""

    key_range: KeyRange
    reached: str | None = None

    def list_page(self, bucket: set[str], page_size: int) -> tuple[list[str], bool]:
        """The range's next page of keys and whether the range is exhausted, as the backfill would list it."""
        start_after = self.reached if self.reached is not None else self.key_range.after
        page = list_objects_v2(bucket, self.key_range.prefix, start_after, page_size)
        mine = [key for key in page if not self.key_range.is_past_end(key)]
        if mine:
            self.reached = mine[-1]
        exhausted = len(page) < page_size or len(mine) < len(page) or self.reached == self.key_range.until
        return mine, exhausted

    def rest(self) -> KeyRange | None:
        return self.key_range.rest_after(self.reached)


def assert_ranges_cover_exactly(
    workers: list[Worker], bucket: set[str], probes: list[str], original: KeyRange, listed: list[str]
) -> None:
    """What is left of the workers' ranges holds every key of the bucket in ``original`` not yet listed,
    once, and no listed key; and no two of them share any key, whether an object has it or not."""
    rests = [rest for rest in (worker.rest() for worker in workers) if rest is not None]
    for key in bucket:
        expected = 1 if original.contains(key) and key not in listed else 0
        assert sum(rest.contains(key) for rest in rests) == expected, (key, rests)
    for key in probes:
        assert sum(rest.contains(key) for rest in rests) <= 1, (key, rests)


@settings(max_examples=300)
@given(bucket=key_sets, prefix=st.sampled_from(PREFIXES), data=st.data())
def test_listing_ranges_split_at_random_moments_yields_every_key_exactly_once(
    bucket: set[str], prefix: str, data: st.DataObject
) -> None:
    # Given a bucket of keys (unicode, astral characters, long shared prefixes, a key equal to the prefix)
    # and a job over one prefix, started with no knowledge of its keys
    (whole,) = initial_ranges(prefix)
    workers = [Worker(key_range) for key_range in initial_ranges(prefix)]
    listed: list[str] = []
    probes = [*bucket, *data.draw(st.lists(keys, max_size=5), label="keys no object has")]
    # When listing steps (up to n keys of range r) and splits (of what is left of range r, at keys a probe
    # listed ahead) interleave at random
    for _ in range(data.draw(st.integers(0, 30), label="steps")):
        if not workers:
            break
        worker = workers[data.draw(st.integers(0, len(workers) - 1), label="range")]
        if data.draw(st.booleans(), label="split"):
            rest = worker.rest()
            position = worker.reached if worker.reached is not None else worker.key_range.after
            ahead = list_objects_v2(bucket, prefix, position, data.draw(st.integers(0, 8), label="probe size"))
            sample = data.draw(st.lists(st.sampled_from(ahead)) if ahead else st.just([]), label="sample")
            pieces = split(worker.key_range, worker.reached, sample, data.draw(st.integers(1, 4), label="parts"))
            # Then a split keeps what is left and makes no range empty by construction
            assert rest is None or pieces
            if rest is not None and any(rest.contains(key) for key in sample):
                assert all(any(piece.contains(key) for key in bucket) for piece in pieces)
            workers.remove(worker)
            workers += [Worker(piece) for piece in pieces]
        else:
            page, exhausted = worker.list_page(bucket, data.draw(st.integers(1, 5), label="page size"))
            listed += page
            if exhausted:
                workers.remove(worker)
        # Then the ranges still cover exactly what is left, each key once
        assert_ranges_cover_exactly(workers, bucket, probes, whole, listed)
    # When every range is listed to its end
    for worker in workers:
        exhausted = False
        while not exhausted:
            page, exhausted = worker.list_page(bucket, 3)
            listed += page
    # Then every key under the prefix was listed exactly once, and no other
    assert sorted(listed, key=s3_order) == sorted((key for key in bucket if key.startswith(prefix)), key=s3_order)
    assert len(listed) == len(set(listed))


@given(
    universe=key_sets,
    prefix=st.sampled_from(PREFIXES),
    reached_index=st.integers(0, 60),
    ahead=st.lists(keys, max_size=10),
    parts=st.integers(1, 6),
)
def test_a_split_partitions_the_rest_of_a_range_at_keys_known_ahead(
    universe: set[str], prefix: str, reached_index: int, ahead: list[str], parts: int
) -> None:
    # Given a range over a prefix, a position in it and keys said to lie ahead (some of them not in the rest)
    key_range = KeyRange(prefix)
    under = sorted((key for key in universe if key.startswith(prefix)), key=s3_order)
    reached = under[reached_index] if reached_index < len(under) else None
    rest = key_range.rest_after(reached)
    assert rest is not None
    known = {key for key in ahead if rest.contains(key)}
    # When what is left is split
    pieces = split(key_range, reached, ahead, parts)
    # Then the pieces come in order, none inverted, each holding a known key ahead when any is known
    assert 1 <= len(pieces) <= max(1, min(parts, len(known)))
    assert (pieces[0].after, pieces[-1].until) == (rest.after, rest.until)
    for piece, following in pairwise(pieces):
        assert piece.until is not None
        assert piece.until == following.after
    if known:
        assert all(any(piece.contains(key) for key in known) for piece in pieces)
    # And every key is in exactly one piece if it is in the rest, else in none
    for key in [*universe, *ahead, prefix]:
        assert sum(piece.contains(key) for piece in pieces) == (1 if rest.contains(key) else 0)


def test_ranges_compare_keys_by_their_utf8_bytes_as_s3_lists_them() -> None:
    # Given a range ending at a high-BMP key, which UTF-16 order would put after an astral one
    key_range = KeyRange("", until="\uff5e")
    # When an astral key and a lower key are tested, Then only the lower one is in it, as S3 would list them
    assert not key_range.contains("\U0001f600")
    assert key_range.is_past_end("\U0001f600")
    assert key_range.contains("\u00e9")
    assert utf8_order("\U0001f600") == "\U0001f600".encode()


def test_a_range_from_the_prefix_start_holds_the_key_equal_to_the_prefix() -> None:
    # Given the whole prefix as one range, When the key equal to the prefix is tested, Then it is in it
    (whole,) = initial_ranges("logs/")
    assert whole.contains("logs/")
    assert not whole.contains("log")


def test_a_split_without_keys_ahead_returns_the_rest_whole_and_at_the_end_nothing() -> None:
    # Given a range and a worker part way through it
    key_range = KeyRange("p/", after="p/a", until="p/z")
    # When it is split with no key known ahead, Then what is left comes back as one range
    assert split(key_range, "p/m", []) == (KeyRange("p/", "p/m", "p/z"),)
    # When the worker has reached the range's end, Then nothing is left to split
    assert split(key_range, "p/z", ["p/zz"]) == ()


def test_a_split_into_n_parts_cuts_at_quantiles_of_the_keys_ahead() -> None:
    # Given six keys listed ahead of the start of a whole prefix
    ahead = ["p/f", "p/a", "p/c", "p/b", "p/e", "p/d"]
    # When the range is split in three, Then it is cut after every second key, in key order
    assert split(KeyRange("p/"), None, ahead, 3) == (
        KeyRange("p/", None, "p/b"),
        KeyRange("p/", "p/b", "p/d"),
        KeyRange("p/", "p/d", None),
    )


@pytest.mark.parametrize(
    ("after", "until", "reason"),
    [("p/b", "p/a", "empty range"), ("p/a", "p/a", "empty range"), ("q/a", None, "not under the prefix")],
)
def test_an_inverted_or_foreign_range_is_refused(after: str, until: str | None, reason: str) -> None:
    # When a range is made with bounds that could hold no key, or outside its prefix, Then it is refused
    with pytest.raises(ValueError, match=reason):
        KeyRange("p/", after, until)


def test_a_position_outside_the_range_or_a_split_in_no_parts_is_refused() -> None:
    key_range = KeyRange("p/", after="p/a", until="p/m")
    with pytest.raises(ValueError, match="not in"):
        split(key_range, "p/z", [])
    with pytest.raises(ValueError, match="at least 1"):
        split(key_range, None, ["p/b"], 0)


# Stems near S3's length limit, so a probe must stay within 1024 bytes (4-byte characters among them).
LONG_STEMS = ["logs/" + "x" * 1010, "logs/" + "\U0001f600" * 253, "logs/2026/11/25/hour=10/" + "\u00e9" * 495]
probe_keys = st.one_of(keys, st.builds(lambda stem, suffix: stem + suffix, st.sampled_from(LONG_STEMS), suffixes))


def is_s3_key(key: str) -> bool:
    """Whether S3 takes ``key``: valid UTF-8 (no surrogates), no U+0000, at most 1024 bytes."""
    try:
        return "\x00" not in key and len(key.encode("utf-8")) <= 1024
    except UnicodeEncodeError:
        return False


def first_key_after(prefix: str, after: str | None) -> str | None:
    """The smallest S3 key under ``prefix`` above ``after`` (None: at or above the prefix), from first
    principles: ``after`` and U+0001, else ``after`` cut anywhere past the prefix with the next character
    raised by one (over the surrogates); the later the cut, the smaller the key."""
    if after is None:
        return prefix if is_s3_key(prefix) else None
    candidates = [after + "\x01"]
    for cut in range(len(after) - 1, len(prefix) - 1, -1):
        raised = ord(after[cut]) + 1
        raised = 0xE000 if 0xD800 <= raised < 0xE000 else raised
        if raised <= 0x10FFFF:
            candidates.append(after[:cut] + chr(raised))
    return next((key for key in candidates if is_s3_key(key)), None)


def no_key_between(prefix: str, after: str | None, until: str | None) -> bool:
    """Whether no S3 key under ``prefix`` lies after ``after`` and strictly before ``until``."""
    first = first_key_after(prefix, after)
    return first is None or (until is not None and s3_order(first) >= s3_order(until))


def assert_probe_in(probe: str, prefix: str, after: str | None, until: str | None) -> None:
    assert is_s3_key(probe), probe
    assert probe.encode("utf-8").decode("utf-8") == probe
    assert probe.startswith(prefix)
    assert after is None or s3_order(probe) > s3_order(after)
    assert until is None or s3_order(probe) < s3_order(until)


@settings(max_examples=500)
@given(prefix=st.sampled_from(PREFIXES), bounds=st.lists(st.one_of(st.none(), probe_keys), min_size=2, max_size=2))
def test_a_probe_is_an_s3_key_strictly_inside_its_interval_and_missing_only_when_none_is(
    prefix: str, bounds: list[str | None]
) -> None:
    # Given bounds under a prefix (unicode, astral characters, U+0000, long shared stems, stems near the
    # length limit, None ends), in order
    after, until = sorted(bounds, key=lambda bound: (bound is None, s3_order(bound or "")))
    if not all(bound is None or bound.startswith(prefix) for bound in (after, until)) or (
        after is not None and after == until
    ):
        return
    # When the interval is probed
    probe = probe_key(prefix, after, until)
    # Then the probe is a key S3 takes, under the prefix, after ``after`` and before ``until``
    if probe is not None:
        assert_probe_in(probe, prefix, after, until)
    # And there is none only when no such key lies between them
    assert (probe is None) == no_key_between(prefix, after, until)


@settings(max_examples=200)
@given(prefix=st.sampled_from(PREFIXES), data=st.data())
def test_halving_by_probes_makes_progress_until_no_key_is_left_between(prefix: str, data: st.DataObject) -> None:
    # Given the whole prefix
    after: str | None = None
    until: str | None = None
    # When it is halved by probes, keeping either half at random
    for _ in range(40):
        probe = probe_key(prefix, after, until)
        if probe is None:
            # Then a walk ends only where no key lies strictly between the bounds
            assert no_key_between(prefix, after, until)
            break
        # Then every probe lies strictly inside what is left, so each half is smaller than the whole
        assert_probe_in(probe, prefix, after, until)
        if data.draw(st.booleans(), label="keep the lower half"):
            until = probe
        else:
            after = probe


@pytest.mark.parametrize("prefix", PREFIXES)
def test_probing_the_near_half_again_and_again_moves_towards_the_prefix_start(prefix: str) -> None:
    # Given the whole prefix
    probes: list[str] = []
    until: str | None = None
    # When the near half, (prefix start, last probe], is probed until no key is left in it
    while (probe := probe_key(prefix, None, until)) is not None:
        probes.append(probe)
        until = probe
    # Then each probe is below the one before, for several steps, down to the key equal to the prefix
    assert len(probes) >= 8
    assert probes == sorted(set(probes), key=s3_order, reverse=True)
    assert probes[-1] == prefix


def test_a_probe_lies_about_halfway_in_s3_order() -> None:
    # Given intervals, When they are probed, Then the probe is about halfway through their UTF-8 bytes
    assert probe_key("p/", "p/a", "p/c") == "p/b"
    assert probe_key("p/", "p/b", "p/c") == "p/b\x80"
    # And the whole prefix is cut within ASCII, a long way into it: F4 90 ends the key space
    assert probe_key("logs/") == "logs/zH"
    # And between a high-BMP and an astral character (UTF-16 order has them the other way round)
    assert probe_key("", "\uff5e", "\U0001f600") == "\U00010000"


def test_a_probe_of_adjacent_bounds_is_none_and_a_probe_keeps_within_the_length_limit() -> None:
    # Given bounds with no key strictly between them, When probed, Then there is no probe
    assert probe_key("p/", "p/a", "p/a\x01") is None
    assert probe_key("p/", None, "p/") is None
    assert probe_key("p/", "p/a\x00", "p/a\x01") is None
    # Given a lower bound at the length limit, When the rest of the prefix is probed, Then the probe fits
    at_limit = "p/" + "x" * (MAX_KEY_BYTES - 2)
    probe = probe_key("p/", at_limit, None)
    assert probe is not None
    assert_probe_in(probe, "p/", at_limit, None)


def test_a_probe_of_an_inverted_or_foreign_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="empty range"):
        probe_key("p/", "p/b", "p/a")
    with pytest.raises(ValueError, match="not under the prefix"):
        probe_key("p/", "q/a", None)
