"""The local cloud's seams patch moto's internals, so they are tied to the moto release they were checked on."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from crr_cli.localcloud import seams

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_pinned_moto_is_the_release_the_seams_were_checked_against() -> None:
    # Given the moto requirement pyproject.toml pins for the local cloud
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    [requirement] = [dep for dep in project["optional-dependencies"]["dev"] if dep.startswith("moto")]
    pinned = re.fullmatch(r"moto\[server\]==(?P<version>[\d.]+)", requirement)

    # When it is compared with the release the seams name, and with the one installed
    # Then all three agree: bumping moto means revisiting the seams (crr_cli/localcloud/README.md)
    assert pinned is not None, requirement
    assert pinned["version"] == seams.MOTO_VERSION
    assert version("moto") == seams.MOTO_VERSION
