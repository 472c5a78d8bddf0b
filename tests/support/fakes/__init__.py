"""One in-memory fake per port of ``crr.ports``, in modules that mirror it (objects, queues, table,
services), each named after its port and saying in its docstring which port(s) it implements.
tests/unit/test_fakes_conform.py proves each one implements its port (statically, by mypy, and by method
signatures at run time) and runs the same behaviour checks against the table fakes and their DynamoDB
adapters. A test that needs a twist configures the shared fake or subclasses it; it does not write its own.

Import them from here: ``from tests.support.fakes import FakeS3, FakeLedger``.
"""

from tests.support.fakes.objects import (
    FakeBucket,
    FakeFastCopier,
    FakeInventoryFiles,
    FakeListing,
    FakePageListing,
    FakeS3,
    FakeWiringProbe,
    StoredVersion,
    assert_replica_equals_source,
    etag_of,
)
from tests.support.fakes.queues import (
    FakeBacklogAgeGauge,
    FakeDeadLetterQueue,
    FakeFailedMessages,
    FakeKeyHandOver,
    FakePeerNudges,
    FakeQueueGauge,
    FakeReplicationQueue,
)
from tests.support.fakes.services import FakeBackfillExecutions, FakeFailureMetric, FakeLargeCopyLauncher
from tests.support.fakes.table import (
    FakeBackfillJobs,
    FakeBreakerStore,
    FakeFailureCounter,
    FakeFailureLog,
    FakeLedger,
    FakeProgress,
    FakeRules,
    FakeTombstones,
)

__all__ = [
    "FakeBackfillExecutions",
    "FakeBackfillJobs",
    "FakeBacklogAgeGauge",
    "FakeBreakerStore",
    "FakeBucket",
    "FakeDeadLetterQueue",
    "FakeFailedMessages",
    "FakeFailureCounter",
    "FakeFailureLog",
    "FakeFailureMetric",
    "FakeFastCopier",
    "FakeInventoryFiles",
    "FakeKeyHandOver",
    "FakeLargeCopyLauncher",
    "FakeLedger",
    "FakeListing",
    "FakePageListing",
    "FakePeerNudges",
    "FakeProgress",
    "FakeQueueGauge",
    "FakeReplicationQueue",
    "FakeRules",
    "FakeS3",
    "FakeTombstones",
    "FakeWiringProbe",
    "StoredVersion",
    "assert_replica_equals_source",
    "etag_of",
]
