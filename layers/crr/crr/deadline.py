"""The invocation's deadline, shared by the batch loop and every AWS call made for it.

Lambda kills an invocation at its timeout: whatever it had not answered by then fails as a whole and
records nothing. So an invocation splits its time in two:

* **working time** (all but the reserve): records are started, and copies are planned to fit in it;
  the AWS calls of a record may run into the first half of the reserve, no further (each call's read
  timeout is cut to what is left, and a call with no time left is not sent: OutOfTimeError);
* **the reserve** (a quarter of the timeout, between MIN_RESERVE_SECONDS and MAX_RESERVE_SECONDS):
  enough to hand unapplied records back to the queue, record why a message failed, and answer.
  Calls made while ``wrapping_up()`` may use it, up to MARGIN_SECONDS before the deadline;
  ``wrapping_up(share)`` gives a call only a share of that, so a hung call (the table of an outage)
  leaves the calls after it (the dead letter) their time.

The deadline is process-wide (a function runs one invocation at a time; the threads of one
invocation share it); the phase is per thread. Without an active deadline nothing is bounded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from crr.errors import CrrError

RESERVE_SHARE = 0.25
MIN_RESERVE_SECONDS = 0.5
MAX_RESERVE_SECONDS = 10.0
# Left at the very end for the handler to answer after the last call.
MARGIN_SECONDS = 0.1


class OutOfTimeError(CrrError):
    """The invocation has no time left for this call or record; retrying later can succeed."""


@dataclass(frozen=True)
class Deadline:
    """``remaining()``: seconds until the invocation is killed; ``reserve``: seconds kept for wrapping up."""

    remaining: Callable[[], float]
    reserve: float

    @classmethod
    def starting_now(cls, remaining: Callable[[], float]) -> Deadline:
        """A deadline whose reserve is sized from the time the invocation has at its start."""
        total = remaining()
        reserve = min(max(total * RESERVE_SHARE, MIN_RESERVE_SECONDS), MAX_RESERVE_SECONDS)
        return cls(remaining, reserve)

    def working_seconds(self) -> float:
        """Working time left (may be negative once the reserve is reached)."""
        return self.remaining() - self.reserve

    def exhausted(self) -> bool:
        """Whether working time is over: start no new record."""
        return self.working_seconds() <= 0

    def record_seconds(self) -> float:
        """What the record in progress may still use: a record started in working time may finish in
        the first half of the reserve."""
        return self.remaining() - self.reserve / 2

    def call_seconds(self, wrapping_up: bool) -> float:
        """The longest a call may take now: wrapping up may use all of the reserve but the margin."""
        return self.remaining() - MARGIN_SECONDS if wrapping_up else self.record_seconds()


UNBOUNDED = Deadline(lambda: math.inf, 0.0)


class _Phase(threading.local):
    def __init__(self) -> None:
        self.wrapping_up = False
        # Seconds of the wrap-up time kept for the calls after the current block (``wrapping_up(share)``).
        self.keep = 0.0


_lock = threading.Lock()
_current: Deadline = UNBOUNDED
_phase = _Phase()


@contextmanager
def active(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` bound every AWS call of this process until the block ends."""
    global _current  # noqa: PLW0603 - one invocation per process at a time, as Lambda runs them
    with _lock:
        previous, _current = _current, deadline
    try:
        yield deadline
    finally:
        with _lock:
            _current = previous


@contextmanager
def wrapping_up(share: float = 1.0) -> Iterator[None]:
    """Calls made in this block (this thread) may use the reserve: handing back, recording failures.

    With ``share`` below 1 they may use only that share of the wrap-up time left when the block
    starts; the rest is kept for the calls after the block, whatever the calls in it do.
    """
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    previous = (_phase.wrapping_up, _phase.keep)
    if share < 1:
        available = _current.call_seconds(wrapping_up=True) - _phase.keep
        if math.isfinite(available):
            _phase.keep += max(available, 0.0) * (1 - share)
    _phase.wrapping_up = True
    try:
        yield
    finally:
        _phase.wrapping_up, _phase.keep = previous


class PhaseScope:
    """Handed out by ``phase_scope``: ``wrap_up()`` lets the rest of the scope (its exit included) use
    the reserve."""

    def wrap_up(self) -> None:
        _phase.wrapping_up = True


@contextmanager
def phase_scope() -> Iterator[PhaseScope]:
    """A scope whose phase is restored when it ends, so work done on its way out (an inner context's
    exit, such as a progress flush) can be moved into the reserve with ``wrap_up()``."""
    previous = _phase.wrapping_up
    try:
        yield PhaseScope()
    finally:
        _phase.wrapping_up = previous


def seconds_for_a_call() -> float:
    """How long an AWS call made now may take (``math.inf`` without an active deadline)."""
    if _phase.wrapping_up:
        return _current.call_seconds(wrapping_up=True) - _phase.keep
    return _current.call_seconds(wrapping_up=False)
