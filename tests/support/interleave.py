"""Deterministic interleaving of threads: one runs at a time, and a seeded RNG picks which one
continues at every yield point. A failing interleaving therefore replays exactly from its seed.

With ``stickiness`` q the running thread keeps the baton with probability q: races that need one
worker to stall while another completes several requests become likely instead of rare.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TypeVar

from crr.key_ordered_batch import TaskRunner, apply_in_key_order

T = TypeVar("T")
# A ReplicateFunction invocation's batch in the property tests (the template's default BatchSize).
BATCH_SIZE = 10


class Interleaver:
    def __init__(self, rng: random.Random, stickiness: float = 0.0) -> None:
        self._rng = rng
        self._stickiness = stickiness
        self._turns: list[threading.Event] = []
        self._finished: list[bool] = []
        self._handed_back = threading.Event()
        self._local = threading.local()
        self._idle: list[bool] = []
        self._alive: list[int] = []
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def yield_point(self, idle: bool = False) -> None:
        """Give the baton back to the scheduler; called by fakes before each simulated request.

        ``idle``: the caller is only waiting for work, so others go first while any can run.
        """
        worker = getattr(self._local, "worker", None)
        if worker is None:
            return
        self._idle[worker] = idle
        self._handed_back.set()
        self._turns[worker].wait()
        self._turns[worker].clear()

    def wake_all(self) -> None:
        """New work exists: idle threads compete for the baton again."""
        self._idle = [False for _ in self._idle]

    def spawn(self, task: Callable[[], object]) -> Callable[[], bool]:
        """Start ``task`` on a new thread, interleaved with the rest from the caller's next yield point
        on (called from an interleaved thread, which holds the baton meanwhile). Answers whether the
        task has finished."""
        index = len(self._turns)
        self._turns.append(threading.Event())
        self._finished.append(False)
        self._idle.append(False)
        self._alive.append(index)
        thread = threading.Thread(target=self._work, args=(index, task), daemon=True)
        self._threads.append(thread)
        thread.start()
        return lambda: self._finished[index]

    def run(self, tasks: Sequence[Callable[[], object]], max_steps: int = 100_000) -> None:
        """Run ``tasks`` (and those they spawn) to completion, interleaved at yield points. Re-raises the
        first task error."""
        self._turns = [threading.Event() for _ in tasks]
        self._finished = [False for _ in tasks]
        self._idle = [False for _ in tasks]
        self._threads = [
            threading.Thread(target=self._work, args=(index, task), daemon=True) for index, task in enumerate(tasks)
        ]
        for thread in self._threads:
            thread.start()
        self._alive = alive = list(range(len(tasks)))
        chosen = -1
        for _ in range(max_steps):
            if not alive:
                break
            busy = [index for index in alive if not self._idle[index]] or alive
            if chosen not in busy or self._rng.random() >= self._stickiness:
                chosen = self._rng.choice(busy)
            self._handed_back.clear()
            self._turns[chosen].set()
            if not self._handed_back.wait(timeout=30):
                raise RuntimeError("a task neither yielded nor finished within 30 s")
            if self._finished[chosen]:
                alive.remove(chosen)
        else:
            raise RuntimeError(f"tasks did not finish within {max_steps} steps")
        for thread in self._threads:
            thread.join(timeout=5)
        if self.errors:
            raise self.errors[0]

    def _work(self, index: int, task: Callable[[], object]) -> None:
        self._local.worker = index
        self._turns[index].wait()
        self._turns[index].clear()
        try:
            task()
        except BaseException as exc:  # noqa: BLE001 - reported to the test through run()
            self.errors.append(exc)
        finally:
            self._finished[index] = True
            self._handed_back.set()


class InterleavedRunner(TaskRunner):
    """crr.key_ordered_batch's TaskRunner on the Interleaver: ``concurrency`` interleaved threads take
    the tasks in order, as a record pool's threads would, and the caller waits (idle) for all."""

    def __init__(self, scheduler: Interleaver, concurrency: int) -> None:
        self._scheduler = scheduler
        self._concurrency = concurrency

    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        queue = list(tasks)

        def pool_thread() -> None:
            while queue:
                queue.pop(0)()

        finished = [self._scheduler.spawn(pool_thread) for _ in range(min(self._concurrency, len(queue)))]
        while not all(done() for done in finished):
            self._scheduler.yield_point(idle=True)


class Script(random.Random):
    """A scripted schedule for Interleaver: ``choice`` returns the listed task indices in order
    (then the lowest runnable one), and threads never keep the baton by stickiness."""

    def __init__(self, order: list[int]) -> None:
        super().__init__(0)
        self._order = list(order)

    def choice(self, seq):  # type: ignore[no-untyped-def]
        while self._order:
            wanted = self._order.pop(0)
            if wanted in seq:
                return wanted
        return min(seq)

    def random(self) -> float:
        return 1.0


def serve_queue(
    pending: list[T],
    handle: Callable[[T], object],
    producers_done: Callable[[], bool],
    scheduler: Interleaver,
    rng: random.Random,
    retryable: type[BaseException] = Exception,
    *,
    record_concurrency: int = 1,
    keys_of: Callable[[T], Collection[Hashable]] | None = None,
) -> None:
    """One worker of an unordered queue: take any pending item until the producers are done and nothing is
    left; an item whose handling raises ``retryable`` goes back, as a queue redelivers a failed message.

    ``record_concurrency`` above 1: the worker is a ReplicateFunction invocation applying batches (up to
    BATCH_SIZE items) through crr.key_ordered_batch, grouped by ``keys_of``, that many groups at once
    on interleaved threads sharing whatever ``handle`` holds (one Replicator per invocation)."""
    if record_concurrency > 1:
        if keys_of is None:
            raise ValueError("a concurrent batch groups its items by keys_of")
        _serve_in_batches(pending, handle, producers_done, scheduler, rng, retryable, record_concurrency, keys_of)
        return
    while True:
        if not pending:
            if producers_done():
                return
            scheduler.yield_point(idle=True)
            continue
        item = pending.pop(rng.randrange(len(pending)))
        try:
            handle(item)
        except retryable:
            pending.append(item)


def _serve_in_batches(
    pending: list[T],
    handle: Callable[[T], object],
    producers_done: Callable[[], bool],
    scheduler: Interleaver,
    rng: random.Random,
    retryable: type[BaseException],
    record_concurrency: int,
    keys_of: Callable[[T], Collection[Hashable]],
) -> None:
    runner = InterleavedRunner(scheduler, record_concurrency)
    while True:
        if not pending:
            if producers_done():
                return
            scheduler.yield_point(idle=True)
            continue
        batch = [pending.pop(rng.randrange(len(pending))) for _ in range(min(BATCH_SIZE, len(pending)))]
        outcomes = apply_in_key_order(batch, keys_of, handle, runner)
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, retryable):
                pending.append(item)
            elif isinstance(outcome, Exception):
                raise outcome
