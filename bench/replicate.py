"""Real-time replication on the embedded local cloud: latency and API calls per object.

Writes N small objects into the source bucket at a steady rate, watches the destination, and prints
p50/p95/p99 of "PutObject returned → replica visible", plus the S3 requests and DynamoDB writes the
replicator made per object, counted where the requests arrive (the local cloud's server side).

    python bench/replicate.py [--objects 2000] [--rate 50] [--size 1024]

Prints figures; never fails on time. Targets for the core issue: ≤ 2 S3 requests and ≤ 1 DynamoDB
write per object, p50 ≤ 200 ms and p99 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from crr_cli.demo import create_bucket, local_aws_environment
from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.main import main as crr

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION, STACK = "crr-bench-source", "crr-bench-replica", "crr-bench"
TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
# Operations the replicator makes (the benchmark's own PutObject / ListObjectsV2 are not counted).
S3_REPLICATOR_OPS = ("HeadObject", "CopyObject", "DeleteObject", "GetObjectAcl", "GetBucketOwnershipControls")
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem")


def request_counts(endpoint: str, reset: bool = False) -> dict[str, int]:
    request = urllib.request.Request(f"{endpoint}/_crr/requests", method="POST" if reset else "GET")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local endpoint
        counts: dict[str, int] = json.loads(answer.read())
    return counts


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Watcher(threading.Thread):
    """Lists the destination from just below the oldest key not yet seen, so each poll is a small page."""

    def __init__(self, s3: Any, keys: list[str]) -> None:
        super().__init__(daemon=True)
        self._s3 = s3
        self._pending = sorted(keys)
        self.seen_at: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while self._pending and not self._halt.is_set():
            params: dict[str, Any] = {"Bucket": DESTINATION, "Prefix": "bench/", "MaxKeys": 1000}
            position = self._pending[0]
            if position > "bench/":
                params["StartAfter"] = position[:-1]
            page = self._s3.list_objects_v2(**params)
            now = time.monotonic()
            for item in page.get("Contents", []):
                self.seen_at.setdefault(item["Key"], now)
            self._pending = [key for key in self._pending if key not in self.seen_at]
            time.sleep(0.01)

    def stop(self) -> None:
        self._halt.set()


def run(objects: int, rate: float, size: int, deadline_s: float) -> int:
    with LocalCloud() as cloud:
        endpoint = cloud.start()
        cloud.deploy(
            TEMPLATE,
            STACK,
            SOURCE_REGION,
            {"SourceBuckets": SOURCE, "DestinationBuckets": DESTINATION, "FunctionTimeoutSeconds": "30"},
        )
        source_s3, replica_s3 = cloud.client("s3", SOURCE_REGION), cloud.client("s3", DESTINATION_REGION)
        create_bucket(source_s3, SOURCE, SOURCE_REGION, versioned=True)
        create_bucket(replica_s3, DESTINATION, DESTINATION_REGION, versioned=False)
        with local_aws_environment(endpoint):
            crr(
                [
                    "--stack",
                    STACK,
                    "--region",
                    SOURCE_REGION,
                    "rules",
                    "add",
                    "--source",
                    SOURCE,
                    "--destination",
                    DESTINATION,
                    "--json",
                ]
            )
        # Warm the workers as a steady stream would, then count only the measured objects.
        for index in range(20):
            source_s3.put_object(Bucket=SOURCE, Key=f"warmup/{index}", Body=b"w")
        warm_deadline = time.monotonic() + 60
        while replica_s3.list_objects_v2(Bucket=DESTINATION, Prefix="warmup/").get("KeyCount", 0) < 20:
            if time.monotonic() > warm_deadline:
                print("warm-up objects never replicated; see .local-cloud/logs", file=sys.stderr)
                return 1
            time.sleep(0.05)
        time.sleep(1.0)  # let the warm-up's last acknowledgements settle before zeroing the counters
        request_counts(endpoint, reset=True)

        keys = [f"bench/{index:06d}" for index in range(objects)]
        body = os.urandom(size)
        watcher = Watcher(replica_s3, keys)
        put_at: dict[str, float] = {}
        watcher.start()
        started = time.monotonic()
        for index, key in enumerate(keys):
            due = started + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            source_s3.put_object(Bucket=SOURCE, Key=key, Body=body)
            put_at[key] = time.monotonic()
        written = time.monotonic()
        watcher.join(timeout=deadline_s)
        watcher.stop()
        finished = time.monotonic()
        time.sleep(1.0)  # the last batch's acknowledgements and progress write
        counts = request_counts(endpoint)

    latencies = [(watcher.seen_at[key] - put_at[key]) * 1000 for key in keys if key in watcher.seen_at]
    replicated = len(latencies)
    s3_ops = {op: counts.get(f"s3:{op}", 0) for op in S3_REPLICATOR_OPS if counts.get(f"s3:{op}")}
    ddb_writes = {op: counts.get(f"dynamodb:{op}", 0) for op in DYNAMODB_WRITES if counts.get(f"dynamodb:{op}")}
    ddb_reads = counts.get("dynamodb:GetItem", 0)
    print(f"\ncrr real-time replication, local cloud (moto server), {objects} x {size} B objects at {rate:g}/s")
    print(
        f"  written in {written - started:.1f}s; replicated {replicated}/{objects}; "
        f"all visible {finished - started:.1f}s after the first put"
    )
    if latencies:
        print(
            f"  put → replica visible: p50 {percentile(latencies, 0.5):.0f} ms, "
            f"p95 {percentile(latencies, 0.95):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms, "
            f"max {max(latencies):.0f} ms, "
            f"mean {statistics.fmean(latencies):.0f} ms"
        )
    per_object = max(replicated, 1)
    s3_total = sum(s3_ops.values())
    print(
        f"  S3 requests per object: {s3_total / per_object:.3f}  "
        + " ".join(f"{op}={n / per_object:.3f}" for op, n in s3_ops.items())
    )
    print(
        f"  DynamoDB writes per object: {sum(ddb_writes.values()) / per_object:.3f}  "
        + " ".join(f"{op}={n / per_object:.3f}" for op, n in ddb_writes.items())
        + f"   (reads {ddb_reads / per_object:.3f})"
    )
    sqs = {op.split(":")[1]: n for op, n in counts.items() if op.startswith("sqs:")}
    print("  SQS requests per object (poller): " + " ".join(f"{op}={n / per_object:.3f}" for op, n in sqs.items()))
    print("  targets: ≤ 2 S3 requests, ≤ 1 DynamoDB write per object; p50 ≤ 200 ms, p99 ≤ 1000 ms")
    return 0 if replicated == objects else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="PutObject calls per second")
    parser.add_argument("--size", type=int, default=1024, help="object size in bytes")
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for the last replica")
    args = parser.parse_args()
    return run(args.objects, args.rate, args.size, args.deadline)


if __name__ == "__main__":
    sys.exit(main())
