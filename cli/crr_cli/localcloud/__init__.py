"""Embedded local cloud for demos and integration tests (a dev tool, never deployed).

- `cloud.LocalCloud`: the facade (start moto, deploy a template, run its functions, stop).
- `moto_process` / `moto_seams`: moto servers in their own processes (one for DynamoDB, one for the
  rest), with S3 event records fixed.
- `deploy`: offline SAM transform + moto CloudFormation + the fix-ups moto's CloudFormation lacks.
- `executor` / `worker`: warm Lambda workers running the real handler code.
- `poller`: the SQS event source (batches, partial batch failures, redrive through moto).
- `command`: `crr local up`.

Kept import-free so the worker and moto processes start fast.
"""
