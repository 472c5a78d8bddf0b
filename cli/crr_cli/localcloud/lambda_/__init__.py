"""Lambda as the local cloud runs it: warm workers, the SQS event source, the Invoke API, and logs.

- `executor`: a pool of warm workers per function; enforces the function timeout.
- `worker`: `python -m crr_cli.localcloud.lambda_.worker`, one warm execution environment.
- `protocol`: the JSON-lines messages between the executor and a worker.
- `poller`: the SQS event source (batches, partial batch failures, redrive through moto).
- `invoke_api`: Lambda's Invoke API over HTTP, for moto's Step Functions tasks.
- `log_metrics`: CloudWatch Logs' EMF extraction from the functions' logs.
- `faults`: fault injection into the functions' botocore calls (a test seam of ours, not moto's).
- `latency`: the latency model, AWS's round trips waited by the functions' and pollers' clients.

Kept import-free so the worker processes start fast.
"""
