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
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.lambda_ import latency as latency_model
from crr_cli.localcloud.lambda_.latency import LatencyModel
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


def deploy(cloud: LocalCloud, concurrency: int) -> str:
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
        },
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


def report(
    *,
    objects: int,
    rate: float,
    size: int,
    latencies: list[float],
    counts: dict[str, int],
    spans: str,
    objects_per_second: float,
    latency_line: str,
) -> None:
    replicated = max(len(latencies), 1)
    s3_ops = {op: counts[f"s3:{op}"] for op in S3_REPLICATOR_OPS if counts.get(f"s3:{op}")}
    writes = {op: counts[f"dynamodb:{op}"] for op in DYNAMODB_WRITES if counts.get(f"dynamodb:{op}")}
    sqs = {op.split(":")[1]: n for op, n in counts.items() if op.startswith("sqs:")}
    print(f"\ncrr real-time replication, local cloud (moto server), {objects} x {size} B objects at {rate:g}/s")
    print(f"  {latency_line}")
    print(f"  {spans}; replicated {len(latencies)}/{objects}, {objects_per_second:.1f} objects/s")
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


def run(
    objects: int,
    rate: float,
    size: int,
    deadline_s: float,
    concurrency: int,
    *,
    enforce_iam: bool,
    latency: LatencyModel | None = None,
) -> int:
    keys = [f"bench/{index:06d}" for index in range(objects)]
    with LocalCloud(enforce_iam=enforce_iam, latency=latency) as cloud:
        cloud.start()
        queue_url = deploy(cloud, concurrency)
        if not warm_up(cloud, queue_url):
            print("warm-up objects never replicated; see .local-cloud/logs", file=sys.stderr)
            return 1
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
    spans = f"written in {written - started:.1f}s, last replica {last - started:.1f}s after the first put"
    latency_line = latency_model.summary(delayed, latency) if latency else "latency model: off"
    report(
        objects=objects,
        rate=rate,
        size=size,
        latencies=latencies,
        counts=counts,
        spans=spans,
        objects_per_second=len(latencies) / max(last - started, 1e-9),
        latency_line=latency_line,
    )
    return 0 if len(latencies) == objects else 1


def _since(now: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The delayed attempts counted between two readings (the warm-up's are not the run's)."""
    return {
        request_class: {op: n - before.get(request_class, {}).get(op, 0) for op, n in operations.items()}
        for request_class, operations in now.items()
    }


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
    args = parser.parse_args()
    return run(
        args.objects,
        args.rate,
        args.size,
        args.deadline,
        args.concurrency,
        enforce_iam=not args.no_iam,
        latency=args.latency_ms,
    )


if __name__ == "__main__":
    sys.exit(main())
