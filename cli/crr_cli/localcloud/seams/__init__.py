"""Every patch of moto's internals the local cloud makes, and the one place that installs them.

The AWS behaviour each seam imitates, and the moto internals it replaces, are listed in
`../README.md` ("Seams"); an upgrade of moto starts there. Only the main moto server process
installs them (`server.process`); the DynamoDB process runs moto unpatched.

- `s3_events`: S3 event records with sequencer and versionId, delete-marker events, delivery after
  the request has stored everything; conditional copies and completions.
- `s3_fidelity`: default encryption, KMS ETags, encryption conditions of bucket policies, regions.
- `eventbridge`: S3 → EventBridge → SQS as AWS shapes and delivers it.
- `queues_and_copies`: atomic SQS queues, sampled short polls, a cheap SQS clock, copies that take time.
- `iam`: IAM enforcement closer to AWS's (copy sources, 403 for missing keys, denials per protocol).
- `stepfunctions_tasks`: Step Functions tasks sent to the DynamoDB process and the local Lambda API.

Kept import-free: the seams load moto's S3, SQS and IAM, which a DynamoDB-only process never needs.
"""

# The moto release the seams were written and checked against; pyproject.toml pins the same one
# (tests/unit/test_localcloud_seams.py fails when they differ, so an upgrade revisits the seams).
MOTO_VERSION = "5.2.5"


def install() -> None:
    """Install every seam in this process, before it serves a request (idempotent).

    The order matters where two seams wrap the same moto method: `s3_events` wraps S3 writes and
    copies first, `s3_fidelity` and `eventbridge` build on its event delivery, `queues_and_copies`
    times copies outside `s3_events`' conditional-copy lock, and `iam` comes last: its wrappers of
    S3's request handlers are the outermost, so its checks run before the other seams' code.
    """
    from crr_cli.localcloud.seams import (  # noqa: PLC0415 - see the module docstring
        eventbridge,
        iam,
        queues_and_copies,
        s3_events,
        s3_fidelity,
    )

    s3_events.install()
    s3_fidelity.install()
    eventbridge.install(s3_events.delivering_event)
    queues_and_copies.install()
    iam.install()
