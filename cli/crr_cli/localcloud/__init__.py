"""Embedded local cloud for demos and integration tests (a dev tool, never deployed).

Runs the real template and the real handler code against moto over HTTP on 127.0.0.1; README.md in
this directory has the picture, the deploy step by step, the seams and how to upgrade moto.

- `cloud.LocalCloud`: the facade (start moto, deploy a template, run its functions, stop).
- `command`: `crr local up` / `crr local deploy`; `scenario`: buckets and CLI runs for demos and tests.
- `clients`: boto3 clients for the local endpoints.
- `server/`: the moto server processes (one for DynamoDB, one for the rest) and the `/_crr/` routes.
- `seams/`: every patch of moto's internals, installed in the main moto process from one place.
- `lambda_/`: warm Lambda workers running the handlers, the SQS poller, the Invoke API, log metrics.
- `deploy/`: package, offline SAM transform, moto CloudFormation, fix-ups, description of the stack.

Kept import-free so the worker and moto processes start fast.
"""
