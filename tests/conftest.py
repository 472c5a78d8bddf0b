"""Settings every test process shares, as the deployed functions' environment sets them.

Powertools reads its service name and metrics namespace when ``crr.observability`` is imported, so
they are set before any test module imports crr.
"""

import os

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "crr")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "crr-tests")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
