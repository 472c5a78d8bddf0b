"""Fixtures for tests that talk HTTP to the embedded local cloud."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crr_cli.localcloud.cloud import LocalCloud

T = TypeVar("T")


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    """One started local cloud (moto on a free port) for the whole test session.

    Tests deploy their own stacks into it under unique names; function logs go to a temporary
    directory (`local_cloud.log_dir`).
    """
    state_dir: Path = tmp_path_factory.mktemp("local-cloud")
    with LocalCloud(state_dir=state_dir) as cloud:
        cloud.start()
        yield cloud


def _eventually(probe: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, 0.25)


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """`eventually(probe, timeout=15, what="...")`: poll `probe` until it returns something truthy, return it."""
    return _eventually
