"""Settings every test process shares, as the deployed functions' environment sets them.

Powertools reads its service name and metrics namespace when ``crr.observability`` is imported, so
they are set before any test module imports crr.
"""

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "crr")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "crr-tests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Property tests assert behaviour, never time: Hypothesis's default 200 ms deadline per example is a
# timed assertion that fails on a loaded machine (a 49 GB part plan took 303 ms once, 104 ms on retry).
settings.register_profile("crr", deadline=None)
settings.load_profile("crr")


@pytest.fixture(autouse=True)
def no_warm_objects_from_other_tests() -> Iterator[None]:
    """Each test starts with a cold process: the composition root keeps clients, rule caches and pools
    warm per process (as Lambda does), and a test must never be answered by another test's."""
    from crr.composition import forget_warm_objects  # after the environment above is set

    forget_warm_objects()
    yield
    forget_warm_objects()
