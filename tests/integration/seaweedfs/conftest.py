"""Fixtures for tests against a real S3 server (SeaweedFS on loopback ports; see tests/support/seaweedfs.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFS, running_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS server for the test session (each pytest-xdist worker starts its own).

    Tests create buckets with unique names, so they share the server without sharing state.
    """
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
