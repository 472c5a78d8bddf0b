"""Real-time replication on the embedded local cloud: latency and API calls per object.

Writes N small objects into the source bucket at a steady rate, watches the destination, and prints
p50/p95/p99 of "PutObject returned → replica visible", plus the S3 requests and DynamoDB writes the
replicator made per object, counted where the requests arrive (the local cloud's server side).

    python bench/replicate.py [--objects 2000] [--rate 50] [--size 1024] [--latency-ms 10,60]

`--latency-ms SAME,CROSS` turns on the local cloud's latency model (crr_cli.localcloud.lambda_.latency):
the functions' and pollers' calls wait those round trips, as on AWS, so the figures show what
latency does to throughput on this machine.

Prints figures; never fails on time. Targets for the core issue: ≤ 2 S3 requests and ≤ 1 DynamoDB
write per object, p50 ≤ 200 ms and p99 ≤ 1 s.

    python bench/replicate.py --per-invocation [--objects 300] [--batch 10] [--record-concurrency 1,10]
                              [--latency-ms 10,60]

`--per-invocation` measures one invocation at a time instead: the objects' notifications are left in
the queue (no poller), then handed to the ReplicateFunction in full batches of `--batch`, one
invocation after another, at each record concurrency (RecordConcurrency) in turn. It prints objects
per second of one invocation, Lambda milliseconds per object, and the requests per object, so the
figures show what applying a batch's records concurrently buys and costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_ import latency as latency_model
from crr_cli.localcloud.lambda_.latency import LatencyModel
from crr_cli.localcloud.lambda_.poller import failed_message_ids, sqs_event
from crr_cli.localcloud.scenario import create_bucket, run_cli

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION, STACK = "crr-bench-source", "crr-bench-replica", "crr-bench"
TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# Operations the replicator makes (the benchmark's own PutObject / ListObjectsV2 are not counted).
S3_REPLICATOR_OPS = ("HeadObject", "CopyObject", "DeleteObject", "GetObjectAcl", "GetBucketOwnershipControls")
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def queue_drained(cloud: LocalCloud, queue_url: str) -> bool:
    attributes = cloud.client("sqs", SOURCE_REGION).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return bool(attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0")


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def deploy(
    cloud: LocalCloud, concurrency: int, extra: dict[str, str] | None = None, *, event_sources: bool = True
) -> str:
    """The real template and a rule, as in the demo; returns the replication queue's URL."""
    stack = cloud.deploy(
        TEMPLATE,
        STACK,
        SOURCE_REGION,
        {
            "SourceBuckets": SOURCE,
            "DestinationBuckets": DESTINATION,
            "FunctionTimeoutSeconds": "30",
            "MaximumConcurrency": str(concurrency),
            **(extra or {}),
        },
        event_sources=event_sources,
    )
    create_bucket(cloud.client("s3", SOURCE_REGION), SOURCE, SOURCE_REGION, versioned=True)
    create_bucket(cloud.client("s3", DESTINATION_REGION), DESTINATION, DESTINATION_REGION, versioned=False)
    with redirect_stdout(StringIO()):
        run_cli(cloud, STACK, SOURCE_REGION, ["rules", "add", "--source", SOURCE, "--destination", DESTINATION])
    return stack.outputs["ReplicationQueueUrl"]


def warm_up(cloud: LocalCloud, queue_url: str) -> bool:
    """Warm every worker as a steady stream would, then wait until all is quiet."""
    source_s3 = cloud.client("s3", SOURCE_REGION)
    for index in range(20):
        source_s3.put_object(Bucket=SOURCE, Key=f"warmup/{index}", Body=b"w")
    warm = {f"warmup/{index}" for index in range(20)}
    return wait_for(lambda: warm <= set(cloud.write_times(DESTINATION)), 60) and wait_for(
        lambda: queue_drained(cloud, queue_url), 60
    )


def write_steadily(cloud: LocalCloud, keys: list[str], rate: float, size: int) -> dict[str, float]:
    """PutObject each key on schedule; returns when each put returned (epoch seconds)."""
    source_s3, body = cloud.client("s3", SOURCE_REGION), os.urandom(size)
    put_at: dict[str, float] = {}

    def put(key: str) -> None:
        source_s3.put_object(Bucket=SOURCE, Key=key, Body=body)
        put_at[key] = time.time()

    # Puts are issued on schedule from a pool, so the server's latency does not slow the rate.
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as writers:
        for index, key in enumerate(keys):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            writers.submit(put, key)
    return put_at


@dataclass(frozen=True)
class StreamFigures:
    """What one steady-rate run measured: each replicated object's put → replica latency (ms) and the
    requests the replicator made, counted on the server side."""

    objects: int
    latencies: list[float]
    counts: dict[str, int]
    spans: str
    objects_per_second: float
    latency_line: str

    def percentile_ms(self, fraction: float) -> float | None:
        return percentile(self.latencies, fraction) if self.latencies else None


def report(figures: StreamFigures, *, rate: float, size: int) -> None:
    objects, latencies, counts = figures.objects, figures.latencies, figures.counts
    replicated = max(len(latencies), 1)
    s3_ops = {op: counts[f"s3:{op}"] for op in S3_REPLICATOR_OPS if counts.get(f"s3:{op}")}
    writes = {op: counts[f"dynamodb:{op}"] for op in DYNAMODB_WRITES if counts.get(f"dynamodb:{op}")}
    sqs = {op.split(":")[1]: n for op, n in counts.items() if op.startswith("sqs:")}
    print(f"\ncrr real-time replication, local cloud (moto server), {objects} x {size} B objects at {rate:g}/s")
    print(f"  {figures.latency_line}")
    print(f"  {figures.spans}; replicated {len(latencies)}/{objects}, {figures.objects_per_second:.1f} objects/s")
    if latencies:
        print(
            f"  put → replica visible: p50 {percentile(latencies, 0.5):.0f} ms, p95 {percentile(latencies, 0.95):.0f}"
            f" ms, p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms"
        )
    print(
        f"  S3 requests per object: {sum(s3_ops.values()) / replicated:.3f}  "
        + " ".join(f"{op}={n / replicated:.3f}" for op, n in s3_ops.items())
    )
    print(
        f"  DynamoDB writes per object: {sum(writes.values()) / replicated:.3f}  "
        + " ".join(f"{op}={n / replicated:.3f}" for op, n in writes.items())
        + f"   (GetItem reads {counts.get('dynamodb:GetItem', 0) / replicated:.3f})"
    )
    print(
        "  SQS requests per object (event source poller): "
        + " ".join(f"{op}={n / replicated:.3f}" for op, n in sqs.items())
    )
    print("  targets: ≤ 2 S3 requests and ≤ 1 DynamoDB write per object; p50 ≤ 200 ms, p99 ≤ 1000 ms")


def measure_stream(
    objects: int,
    rate: float,
    size: int,
    deadline_s: float,
    concurrency: int,
    *,
    enforce_iam: bool,
    latency: LatencyModel | None = None,
    record_concurrency: int | None = None,
) -> StreamFigures | None:
    """Write ``objects`` at ``rate`` per second into a stack on a fresh local cloud and time each replica;
    None when the warm-up never replicated (the stack is broken, see .local-cloud/logs)."""
    keys = [f"bench/{index:06d}" for index in range(objects)]
    with LocalCloud(enforce_iam=enforce_iam, latency=latency) as cloud:
        cloud.start()
        extra = {"RecordConcurrency": str(record_concurrency)} if record_concurrency else None
        queue_url = deploy(cloud, concurrency, extra)
        if not warm_up(cloud, queue_url):
            return None
        cloud.request_counts(reset=True)
        delayed_before = cloud.latency_counts()
        started = time.time()
        put_at = write_steadily(cloud, keys, rate, size)
        written = time.time()
        wait_for(lambda: set(keys) <= set(cloud.write_times(DESTINATION)), deadline_s)
        wait_for(lambda: queue_drained(cloud, queue_url), 30)  # the last acknowledgements and progress
        replicas = cloud.write_times(DESTINATION)
        counts = cloud.request_counts()
        delayed = _since(cloud.latency_counts(), delayed_before)
    # A replica is visible once its CopyObject is stored (S3 reads are strongly consistent).
    latencies = [(replicas[key] - put_at[key]) * 1000 for key in keys if key in replicas and key in put_at]
    last = max((replicas[key] for key in keys if key in replicas), default=written)
    return StreamFigures(
        objects=objects,
        latencies=latencies,
        counts=counts,
        spans=f"written in {written - started:.1f}s, last replica {last - started:.1f}s after the first put",
        objects_per_second=len(latencies) / max(last - started, 1e-9),
        latency_line=latency_model.summary(delayed, latency) if latency else "latency model: off",
    )


def run(
    objects: int,
    rate: float,
    size: int,
    deadline_s: float,
    concurrency: int,
    *,
    enforce_iam: bool,
    latency: LatencyModel | None = None,
    record_concurrency: int | None = None,
) -> int:
    figures = measure_stream(
        objects,
        rate,
        size,
        deadline_s,
        concurrency,
        enforce_iam=enforce_iam,
        latency=latency,
        record_concurrency=record_concurrency,
    )
    if figures is None:
        print("warm-up objects never replicated; see .local-cloud/logs", file=sys.stderr)
        return 1
    report(figures, rate=rate, size=size)
    return 0 if len(figures.latencies) == objects else 1


def _since(now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The delayed attempts counted between two readings (the warm-up's are not the run's)."""
    return {
        request_class: {op: n - before.get(request_class, {}).get(op, 0) for op, n in operations.items()}
        for request_class, operations in now.items()
    }


def queued(cloud: LocalCloud, queue_url: str) -> int:
    attributes = cloud.client("sqs", SOURCE_REGION).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def receive_batch(cloud: LocalCloud, queue_url: str, size: int) -> list[dict[str, Any]]:
    """Up to ``size`` messages, as the event source gathers a batch (ReceiveMessage takes 10 at most)."""
    sqs = cloud.client("sqs", SOURCE_REGION)
    messages: list[dict[str, Any]] = []
    while len(messages) < size:
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, size - len(messages)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            VisibilityTimeout=120,
        )
        if not answer.get("Messages"):
            break
        messages += answer["Messages"]
    return messages


def invoke_batches(cloud: LocalCloud, queue_url: str, batch: int, function: str) -> tuple[int, list[float]]:
    """Hand the queue's messages to the function a batch at a time, deleting what it acknowledged;
    returns the objects handled and each invocation's duration (ms)."""
    sqs = cloud.client("sqs", SOURCE_REGION)
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    handled, durations = 0, []
    while messages := receive_batch(cloud, queue_url, batch):
        invocation = cloud.invoke(function, sqs_event(messages, queue_arn))
        if not invocation.ok:
            raise RuntimeError(f"invocation failed: {invocation.error}")
        failed = failed_message_ids(invocation.payload, [message["MessageId"] for message in messages]) or set()
        done = [message for message in messages if message["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(done[start : start + 10])
                ],
            )
        handled += len(done)
        durations.append(invocation.duration_ms)
    return handled, durations


@dataclass(frozen=True)
class InvocationFigures:
    """Full batches handed to the ReplicateFunction one invocation at a time: its durations, and the
    requests it made per object handled (``<service>:<operation>`` → requests / object)."""

    batch: int
    record_concurrency: int
    invocations: int
    handled: int
    replicated: int
    ms_per_invocation: float
    objects_per_second: float
    lambda_ms_per_object: float
    requests_per_object: dict[str, float]

    @property
    def s3_per_object(self) -> float:
        return sum(self.requests_per_object.get(f"s3:{op}", 0.0) for op in S3_REPLICATOR_OPS)

    @property
    def dynamodb_writes_per_object(self) -> float:
        return sum(self.requests_per_object.get(f"dynamodb:{op}", 0.0) for op in DYNAMODB_WRITES)

    @property
    def dynamodb_reads_per_object(self) -> float:
        return self.requests_per_object.get("dynamodb:GetItem", 0.0)


def measure_invocations(
    objects: int, batch: int, record_concurrency: int, *, enforce_iam: bool, latency: LatencyModel | None
) -> InvocationFigures:
    """One local cloud whose ReplicateFunction applies ``record_concurrency`` records at once: the
    figures of full batches handed to it one invocation at a time."""
    parameters = {"RecordConcurrency": str(record_concurrency), "BatchSize": str(batch)}
    if batch > 10:
        parameters["BatchingWindowSeconds"] = "1"
    with LocalCloud(enforce_iam=enforce_iam, latency=latency) as cloud:
        cloud.start()
        queue_url = deploy(cloud, 2, parameters, event_sources=False)
        function = f"{STACK}/ReplicateFunction"
        source_s3 = cloud.client("s3", SOURCE_REGION)
        # A first batch warms the function (its imports, clients and rule cache), as a steady stream would.
        for index in range(batch):
            source_s3.put_object(Bucket=SOURCE, Key=f"warmup/{index}", Body=b"w")
        wait_for(lambda: queued(cloud, queue_url) >= batch, 60)
        invoke_batches(cloud, queue_url, batch, function)
        body = os.urandom(1024)
        with ThreadPoolExecutor(max_workers=8) as writers:
            list(
                writers.map(
                    lambda index: source_s3.put_object(Bucket=SOURCE, Key=f"bench/{index:06d}", Body=body),
                    range(objects),
                )
            )
        wait_for(lambda: queued(cloud, queue_url) >= objects, 120)
        cloud.request_counts(reset=True)
        handled, durations = invoke_batches(cloud, queue_url, batch, function)
        counts = cloud.request_counts()
        replicated = len([key for key in cloud.write_times(DESTINATION) if key.startswith("bench/")])
    total_ms = sum(durations)
    per_object = max(handled, 1)
    return InvocationFigures(
        batch=batch,
        record_concurrency=record_concurrency,
        invocations=len(durations),
        handled=handled,
        replicated=replicated,
        ms_per_invocation=total_ms / max(len(durations), 1),
        objects_per_second=handled / (total_ms / 1000) if total_ms else 0.0,
        lambda_ms_per_object=total_ms / per_object,
        # The bench's own ReceiveMessage / DeleteMessageBatch stand in for the event source: not crr's.
        requests_per_object={
            operation: count / per_object for operation, count in counts.items() if not operation.startswith("sqs:")
        },
    )


def per_invocation(
    objects: int, batch: int, concurrencies: list[int], *, enforce_iam: bool, latency: LatencyModel | None
) -> int:
    rows = [
        measure_invocations(objects, batch, concurrency, enforce_iam=enforce_iam, latency=latency)
        for concurrency in concurrencies
    ]
    latency_line = (
        f"latency model {latency.same_region_ms:g} ms / {latency.cross_region_ms:g} ms" if latency else "latency: off"
    )
    print(
        f"\ncrr ReplicateFunction per invocation, local cloud, {objects} x 1 KiB objects, batch {batch}, {latency_line}"
    )
    print(
        "  records at once | invocations | ms/invocation | objects/s per invocation | Lambda ms/object |"
        " S3 req/object | DynamoDB writes/object | GetItem/object"
    )
    for row in rows:
        print(
            f"  {row.record_concurrency:>15d} | {row.invocations:>11d} | {row.ms_per_invocation:>13.0f} |"
            f" {row.objects_per_second:>24.1f} | {row.lambda_ms_per_object:>16.1f} |"
            f" {row.s3_per_object:>13.3f} | {row.dynamodb_writes_per_object:>22.3f} |"
            f" {row.dynamodb_reads_per_object:>14.3f}"
        )
    base = rows[0]
    for row in rows[1:]:
        print(
            f"  record concurrency {row.record_concurrency}: "
            f"{row.objects_per_second / max(base.objects_per_second, 1e-9):.1f}x objects/s per invocation, "
            f"Lambda ms per object / {base.lambda_ms_per_object / max(row.lambda_ms_per_object, 1e-9):.1f}"
        )
    return 0 if all(row.replicated == objects for row in rows) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="PutObject calls per second")
    parser.add_argument("--size", type=int, default=1024, help="object size in bytes")
    parser.add_argument("--concurrency", type=int, default=2, help="MaximumConcurrency of the event source")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for the last replica")
    parser.add_argument(
        "--no-iam",
        action="store_true",
        help="leave IAM unenforced: the emulator's SigV4 and policy checks cost it CPU that AWS does not bill to crr",
    )
    parser.add_argument(
        "--latency-ms",
        type=LatencyModel.parse,
        metavar="SAME,CROSS",
        help="the latency model's round trips in ms, in the function's region and to another (e.g. 10,60; default off)",
    )
    parser.add_argument("--per-invocation", action="store_true", help="measure full batches one invocation at a time")
    parser.add_argument("--batch", type=int, default=10, help="--per-invocation: messages per invocation")
    parser.add_argument(
        "--record-concurrency",
        default="1,10",
        help="RecordConcurrency; --per-invocation: values to compare, comma-separated (the first is the baseline)",
    )
    args = parser.parse_args()
    if args.per_invocation:
        return per_invocation(
            args.objects,
            args.batch,
            [int(value) for value in args.record_concurrency.split(",")],
            enforce_iam=not args.no_iam,
            latency=args.latency_ms,
        )
    return run(
        args.objects,
        args.rate,
        args.size,
        args.deadline,
        args.concurrency,
        enforce_iam=not args.no_iam,
        latency=args.latency_ms,
        record_concurrency=int(args.record_concurrency.split(",")[-1]),
    )


if __name__ == "__main__":
    sys.exit(main())
