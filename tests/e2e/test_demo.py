"""End to end: `make demo`'s scenario from nothing, as a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_replicates_creates_overwrites_and_deletes_into_the_other_region(tmp_path: Path) -> None:
    # Given a fresh working directory (the local cloud keeps its state and logs there)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    # When the demo runs
    finished = subprocess.run(
        [sys.executable, "-m", "crr_cli.demo", "--deadline", "90"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # Then it reports a replica equal to the source, with the deleted keys gone
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "OK: 7 objects in crr-demo-replica equal crr-demo-source" in finished.stdout
    assert "to-delete/" not in finished.stdout.split("KEY", 1)[1]
    assert (tmp_path / ".local-cloud" / "logs" / "crr-demo-ReplicateFunction.log").exists()
