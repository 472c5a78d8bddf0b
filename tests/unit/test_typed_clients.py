"""The boto3 stubs type the adapters' clients for mypy only: the Lambda layer must run without them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import crr

BLOCK_STUBS_AND_IMPORT = """
import importlib, importlib.abc, sys

class NoStubs(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith(("mypy_boto3", "botocore_stubs", "boto3_stubs")):
            raise ImportError(f"{name} is a dev-only stub package")
        return None

sys.meta_path.insert(0, NoStubs())
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def test_every_module_of_the_layer_imports_without_the_stub_packages() -> None:
    # Given every module of the crr package, as the layer ships it (requirements.txt has no stubs)
    modules = [info.name for info in pkgutil.walk_packages(crr.__path__, "crr.")]
    assert "crr.adapters.clients" in modules
    assert "crr.adapters.dynamodb.keys" in modules
    # When each is imported in a fresh interpreter where the stub packages cannot be found
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_STUBS_AND_IMPORT, *modules], capture_output=True, text=True, check=False
    )
    # Then all import: the stubs are only ever imported under TYPE_CHECKING
    assert result.returncode == 0, result.stderr
