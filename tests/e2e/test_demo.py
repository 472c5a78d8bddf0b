"""End to end: `make demo`'s scenario from nothing, as a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_replicates_one_way_then_two_way_into_the_other_region(tmp_path: Path) -> None:
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
    assert "OK: 10 objects in crr-demo-replica equal crr-demo-source" in finished.stdout
    assert "history/2019/ledger.csv" in finished.stdout.split("KEY", 1)[1]
    assert ": succeeded" in finished.stdout.split("crr backfill status", 1)[1]
    assert "to-delete/" not in finished.stdout.split("KEY", 1)[1]
    # And the two-way part ends with both sites identical: the race won by one side, the delete applied
    two_way = finished.stdout.split("crr demo, two-way", 1)[1]
    assert "OK: 3 objects identical in crr-demo-west-site and crr-demo-east-site" in two_way
    assert "reports/gone.csv" not in two_way.split("raced both sides", 1)[1]
    assert (tmp_path / ".local-cloud" / "logs" / "crr-demo-ReplicateFunction.log").exists()
