"""The fanned-out backfill's policy: which range a worker takes, when a range is split and into how many
pieces, and what each piece inherits of its count. Pure: no boto3, no I/O.

Why split at all: nothing is known of the key distribution beforehand, so one prefix may hold nearly
every key. Each recorded page of a range that came back full, with more of the range behind it, is a
chance to cut what is left of it into pieces that idle workers take. The job keeps a spare range per
worker (``2 * workers`` open ranges), so no worker waits for a split; beyond that a split would only
make ranges nobody works on yet.

How a piece is counted: the count pass of a range lists ahead of its copy (``count_cursor``, at or past
the copy's ``cursor``). A split hands that knowledge to the pieces so every key is counted exactly once:
a piece wholly behind the count cursor is count-complete at birth, the piece the cursor is inside goes
on from it, and a piece beyond it counts from its own start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from crr.backfill.models import BackfillRange, PageResult, RangePage
from crr.backfill.ranges import KeyRange, split, utf8_order

# Open ranges kept per worker: one worked, one spare.
RANGES_PER_WORKER = 2


def wants_more_ranges(ranges_open: int, workers: int) -> bool:
    """Whether a job with ``ranges_open`` open ranges would split one (fewer than two per worker)."""
    return ranges_open < RANGES_PER_WORKER * workers


def pieces_wanted(ranges_open: int, workers: int) -> int:
    """Into how many pieces to split a range: enough to bring the job to two ranges per worker (the
    range itself counts among the open ones and stays one of the pieces); 1 (no split) when it has them."""
    return max(1, RANGES_PER_WORKER * workers - ranges_open + 1)


def worker_token(execution_arn: str, index: int) -> str:
    """The claim a worker of an execution makes on a range: ``<execution arn>#<index>``."""
    return f"{execution_arn}#{index}"


def execution_of(worker: str) -> str:
    """The execution a worker token belongs to."""
    return worker.rsplit("#", 1)[0]


def is_stale(claim: str | None, worker: str) -> bool:
    """Whether ``claim`` was made by another execution than ``worker``'s: one execution at a time runs a
    job, so such a claim's worker is gone (stopped, failed, or its execution continued as new)."""
    return claim is not None and execution_of(claim) != execution_of(worker)


def worker_index(worker: str) -> int:
    """The index a worker token ends with (0 when it names none)."""
    index = worker.rsplit("#", 1)[-1]
    return int(index) if index.isdigit() else 0


def claim_order(ranges: Sequence[BackfillRange], worker: str) -> list[BackfillRange]:
    """The open ranges ``worker`` may take, best first: one it already holds (a retried claim), then the
    free ones, then those held by stale claims. Within each kind they are in key order, rotated by the
    worker's index: workers that claim at the same moment (every worker at an execution's start) try
    different ranges first instead of all racing for the same one."""

    def rotated(items: list[BackfillRange]) -> list[BackfillRange]:
        ordered = sorted(
            items,
            key=lambda item: (utf8_order(item.prefix), item.after is not None, utf8_order(item.after or "")),
        )
        shift = worker_index(worker) % len(ordered) if ordered else 0
        return ordered[shift:] + ordered[:shift]

    open_ranges = [item for item in ranges if not item.done]
    own = [item for item in open_ranges if item.claim == worker]
    free = [item for item in open_ranges if item.claim is None]
    stale = [item for item in open_ranges if item.claim not in (None, worker) and is_stale(item.claim, worker)]
    return [*own, *rotated(free), *rotated(stale)]


def count_state(piece: KeyRange, count_cursor: str | None, count_complete: bool) -> tuple[str | None, bool]:
    """The count of ``piece``, cut from a range whose count pass stands at ``count_cursor`` (a key of the
    range, or None for its start): complete when the pass listed past the piece's end, going on from the
    cursor when it is inside the piece, from the piece's start (``piece.after``) when it is before."""
    if count_complete:
        return None, True
    if count_cursor is None:
        return piece.after, False
    order = utf8_order(count_cursor)
    if piece.until is not None and utf8_order(piece.until) <= order:
        return None, True
    if piece.contains(count_cursor):
        return count_cursor, False
    return piece.after, False


def page_record(result: PageResult, worker: str, *, ranges_open: int, workers: int, at: datetime) -> RangePage:
    """What recording ``result`` writes: the range's new state and, when the job wants more ranges and
    keys are known ahead, the pieces split off what is left of it (``ranges.split`` at the result's
    ``ahead`` keys), each with its share of the count (``count_state``)."""
    was_uncounted = not result.count_complete or result.count_completed
    parts = pieces_wanted(ranges_open, workers)
    pieces: tuple[KeyRange, ...] = ()
    if not result.done and parts >= 2:
        boundaries = split_keys(result.ahead, result.count_cursor, parts)
        pieces = split(result.key_range(), result.cursor, boundaries, parts)
    until, count_cursor, count_complete = result.until, result.count_cursor, result.count_complete
    new_ranges: list[BackfillRange] = []
    if len(pieces) >= 2:
        kept, *rest = pieces
        until = kept.until
        count_cursor, count_complete = count_state(kept, result.count_cursor, result.count_complete)
        for index, piece in enumerate(rest):
            cursor, complete = count_state(piece, result.count_cursor, result.count_complete)
            new_ranges.append(
                BackfillRange(
                    rule_id=result.rule_id,
                    job_id=result.job_id,
                    range_id=split_range_id(result.range_id, result.sequence, index, at),
                    kind=result.kind,
                    prefix=piece.prefix,
                    after=piece.after,
                    until=piece.until,
                    # A piece's count at its own start stands where its copy does: None, so its first
                    # page counts itself at no request.
                    count_cursor=None if cursor == piece.after else cursor,
                    count_complete=complete,
                )
            )
    uncounted_after = int(not count_complete) + sum(not piece.count_complete for piece in new_ranges)
    return RangePage(
        rule_id=result.rule_id,
        job_id=result.job_id,
        range_id=result.range_id,
        sequence=result.sequence,
        worker=worker,
        until=until,
        cursor=result.cursor,
        count_cursor=count_cursor,
        count_complete=count_complete,
        done=result.done,
        counts=result.counts,
        counted=result.counted,
        counted_bytes=result.counted_bytes,
        elapsed_seconds=result.elapsed_seconds,
        opened=len(new_ranges) - int(result.done),
        uncounted=uncounted_after - int(was_uncounted),
        new_ranges=new_ranges,
    )


def split_keys(ahead: Sequence[str], count_cursor: str | None, parts: int) -> list[str]:
    """The keys to cut a range at (``ranges.split`` cuts at all of them but the last, which the last
    piece holds), chosen among those known ahead so the pieces are as even as can be told.

    Keys up to the count cursor end the pages the count listed (a page of keys apart); keys past it were
    found by a probe halfway through the part nobody listed yet, whose size is unknown and, in a large
    range, far larger than the few pages counted. So when a probe found two keys, the cut at the first
    halves that unknown part, and the other pieces are cut from the counted pages evenly; otherwise the
    counted pages' keys are used as they are. Cutting at page keys alone would leave the whole unknown
    part as one piece, to be cut again a few pages further on by whoever takes it: a job would make a
    range for every few pages instead of a few ranges per worker."""
    counted = sorted(
        {key for key in ahead if count_cursor is None or utf8_order(key) <= utf8_order(count_cursor)},
        key=utf8_order,
    )
    probed = sorted(set(ahead) - set(counted), key=utf8_order)
    if len(probed) < 2:
        return [*counted, *probed]
    room = parts - 2  # cuts left for the counted pages, beside the one at the probe
    spread = [counted[(index + 1) * len(counted) // room - 1] for index in range(room)] if room and counted else []
    return [*dict.fromkeys(spread), *probed[:2]]


def initial_range_id(index: int) -> str:
    """The id of a job's ``index``-th initial range: sorts before every range split off later."""
    return f"{index:04d}"


def split_range_id(parent: str, sequence: int, index: int, at: datetime) -> str:
    """A piece's id: when it was made (so ids sort by creation), then a digest of where it was cut
    (the parent, its page, the piece), which keeps pieces cut at the same moment apart."""
    digest = hashlib.blake2b(f"{parent}/{sequence}/{index}".encode(), digest_size=4).hexdigest()
    return f"{at.astimezone(UTC):%Y%m%dT%H%M%S%f}-{digest}"


def initial_ranges(rule_id: str, job_id: str, pieces: Sequence[KeyRange]) -> list[BackfillRange]:
    """A job's first ranges, in key order, nothing listed or counted yet."""
    return [
        BackfillRange(
            rule_id=rule_id,
            job_id=job_id,
            range_id=initial_range_id(index),
            prefix=piece.prefix,
            after=piece.after,
            until=piece.until,
        )
        for index, piece in enumerate(pieces)
    ]
