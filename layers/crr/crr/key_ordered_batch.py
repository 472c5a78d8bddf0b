"""A batch's work applied concurrently across keys, and in arrival order within a key.

Each record of the live path waits on a few cross-region round trips (tens of milliseconds each) and
uses little CPU, so one invocation applying its batch's records one after another bills every
millisecond of that waiting. Here the batch is split into groups, one per key (items sharing any key,
even through a third item, fall in the same group), and the groups run at once on a bounded pool of
threads; a group applies its items in the order they arrived. Two records of one key in one batch
therefore never race each other (no ledger conflict, no second reconcile; a delete still lands after
the put it follows), while records of different keys overlap their waiting.

Worker threads see the invocation's deadline (crr.deadline keeps it process-wide) and start outside
the wrap-up phase (the phase is per thread), as a record in working time should. Each task runs in a
copy of the submitting thread's context, so context variables set for the invocation (a logger's
context keys, for one) reach it: ThreadPoolExecutor threads do not inherit them on their own.
"""

from __future__ import annotations

import contextvars
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class TaskRunner(ABC):
    """Runs a batch's group tasks; each task catches its own failures. (A base class, not a port: it
    stands for no other service, only for how many threads a batch may use.)"""

    @abstractmethod
    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run every task and return once all have ended."""


class InlineRunner(TaskRunner):
    """One task after another in the calling thread: a record concurrency of 1."""

    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        for task in tasks:
            task()


class ThreadPoolRunner(TaskRunner):
    """At most ``concurrency`` tasks at once on a pool kept warm for the life of the process (its idle
    threads cost nothing between invocations, and starting threads per batch would cost each batch)."""

    def __init__(self, concurrency: int, name: str = "crr-record") -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run_all(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Raises the first error a task let escape, once every task has ended."""
        pool = self._executor()
        # One context copy per task: a Context may be entered by one thread at a time.
        futures = [pool.submit(contextvars.copy_context().run, task) for task in tasks]
        wait(futures)
        for future in futures:
            future.result()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self._name)
            return self._pool


def record_runner(concurrency: int) -> TaskRunner:
    """The runner for a record concurrency: inline at 1 (no thread at all), else a warm pool."""
    return InlineRunner() if concurrency == 1 else ThreadPoolRunner(concurrency)


def key_ordered_groups(items: Sequence[T], keys_of: Callable[[T], Collection[Hashable]]) -> list[list[int]]:
    """The indices of ``items`` in groups that share no key: each group in arrival order, the groups in
    the order of their first item. An item with no key is a group of its own."""
    parent = list(range(len(items)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    owner: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        for key in keys_of(item):
            if key in owner:
                first, second = root(owner[key]), root(index)
                # The earlier item stays the root, so a group's root is its first item.
                parent[max(first, second)] = min(first, second)
            else:
                owner[key] = index
    groups: dict[int, list[int]] = {}
    for index in range(len(items)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


def apply_in_key_order(
    items: Sequence[T],
    keys_of: Callable[[T], Collection[Hashable]],
    apply: Callable[[T], R],
    runner: TaskRunner,
) -> list[R | Exception]:
    """``apply`` to every item, groups of ``key_ordered_groups`` at once on ``runner``: the answer per
    item, in the items' order, is what ``apply`` returned or the Exception it raised. A failed item does
    not stop the rest of its group (each record meets its own fate, as in a sequential batch)."""
    outcomes: list[R | Exception | None] = [None] * len(items)

    def group_task(indices: list[int]) -> Callable[[], None]:
        def run() -> None:
            for index in indices:
                try:
                    outcomes[index] = apply(items[index])
                except Exception as exc:  # noqa: BLE001 - answered per item, as the batch response needs
                    outcomes[index] = exc

        return run

    runner.run_all([group_task(indices) for indices in key_ordered_groups(items, keys_of)])
    # Every index was written by its group's task.
    return cast(list[R | Exception], outcomes)
