"""The ports: every interface the ``crr`` package needs from the outside world, in one place.

Each Protocol's docstring names the adapter class(es) in ``crr.adapters`` that implement it over boto3
and the in-memory fake the tests use: one per port, in ``tests.support.fakes`` (whose modules mirror
these), checked to implement it by tests/unit/test_fakes_conform.py. The values they exchange live in ``crr.models`` and
``crr.backfill.models``, which import no port, so no feature, port and adapter import one another in
a circle (tests/unit/test_architecture.py keeps it so).

    crr.ports.objects   S3: objects, multipart uploads, listings, buckets, notifications
    crr.ports.queues    SQS: the replication queue, failed messages, the DLQ, queue gauges
    crr.ports.table     the rules table: rules, ledger, tombstones, progress, failures, breaker, backfill jobs
    crr.ports.services  Step Functions, KMS, CloudWatch
"""
