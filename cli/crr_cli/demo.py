"""`make demo`: the real template and handler code on the embedded local cloud, end to end.

Starts the local cloud, deploys template.yaml in us-west-1, creates a source bucket there and a
destination bucket in us-east-1, adds a rule with the CLI, then creates, overwrites and deletes
objects (awkward keys, empty object, metadata, tags, content headers) and waits, polling with a
deadline, until the destination equals the source. Exits 0 only if it does.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket, run_cli
from crr_cli.snapshot import Difference, compare, snapshot

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION = "crr-demo-source", "crr-demo-replica"
STACK = "crr-demo"
TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@dataclass(frozen=True)
class Put:
    key: str
    body: bytes
    extra: dict[str, Any] = field(default_factory=dict)


# Keys chosen for the encodings S3 notifications get wrong most often: space (→ '+'), a literal
# '+', '%', unicode, deep prefixes; plus a zero-byte object and every replicated header.
CREATES = [
    Put("hello world.txt", b"hello, replica\n", {"ContentType": "text/plain", "CacheControl": "max-age=300"}),
    Put("c++/a+b=c.txt", b"plus signs stay plus signs\n"),
    Put("100% done.txt", b"percent\n", {"ContentLanguage": "en"}),
    Put("unicode/日本語/ünïcödé ✓.txt", "utf-8 keys ✓\n".encode()),
    Put(
        "nested/deep/path/to/report.json",
        b'{"ok": true}\n',
        {"ContentType": "application/json", "ContentDisposition": 'attachment; filename="report.json"'},
    ),
    Put("empty/zero-byte.bin", b""),
    Put(
        "meta/tagged.csv",
        b"a,b\n1,2\n",
        {
            "ContentType": "text/csv",
            "Metadata": {"owner": "data-team", "pii": "no"},
            "Tagging": "classification=internal&retention=90d",
        },
    ),
    Put("to-delete/old.log", b"this will be deleted\n"),
    Put("to-delete/older.log", b"this too\n"),
]
OVERWRITES = [
    Put("hello world.txt", b"hello again, overwritten\n", {"ContentType": "text/plain; charset=utf-8"}),
    Put(
        "meta/tagged.csv",
        b"a,b\n3,4\n",
        {"ContentType": "text/csv", "Metadata": {"owner": "data-team", "v": "2"}, "Tagging": "classification=public"},
    ),
]
DELETES = ["to-delete/old.log", "to-delete/older.log"]


def wait_until_equal(source_s3: Any, replica_s3: Any, source: str, replica: str, deadline_s: float) -> Difference:
    """Poll until the replica equals the source or the deadline passes; returns the last comparison."""
    deadline = time.monotonic() + deadline_s
    while True:
        difference = compare(snapshot(source_s3, source), snapshot(replica_s3, replica))
        if difference.equal or time.monotonic() > deadline:
            return difference
        time.sleep(0.1)


def run(deadline_s: float) -> int:
    print("crr demo: starting the embedded local cloud (moto server + local Lambda executor + SQS poller)")
    started = time.monotonic()
    with LocalCloud() as cloud:
        endpoint = cloud.start()
        cloud.deploy(
            TEMPLATE,
            STACK,
            SOURCE_REGION,
            {
                "SourceBuckets": SOURCE,
                "DestinationBuckets": DESTINATION,
                "FunctionTimeoutSeconds": "30",
                "MaxReceiveCount": "3",
            },
        )
        print(
            f"  endpoint {endpoint}; stack {STACK} deployed in {SOURCE_REGION} "
            f"({time.monotonic() - started:.1f}s); function logs in {cloud.log_dir}"
        )
        source_s3, replica_s3 = cloud.client("s3", SOURCE_REGION), cloud.client("s3", DESTINATION_REGION)
        create_bucket(source_s3, SOURCE, SOURCE_REGION, versioned=True)
        create_bucket(replica_s3, DESTINATION, DESTINATION_REGION, versioned=False)
        # What `crr rules add` advises for a destination: no abandoned multipart upload lives forever.
        replica_s3.put_bucket_lifecycle_configuration(
            Bucket=DESTINATION,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "abort-incomplete-uploads",
                        "Status": "Enabled",
                        "Filter": {"Prefix": ""},
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                    }
                ]
            },
        )
        print(f"  buckets: {SOURCE} ({SOURCE_REGION}, versioned) → {DESTINATION} ({DESTINATION_REGION})")
        print("$ crr rules add --source crr-demo-source --destination crr-demo-replica")
        if run_cli(cloud, STACK, SOURCE_REGION, ["rules", "add", "--source", SOURCE, "--destination", DESTINATION]):
            return 1
        writes_started = time.monotonic()
        for put in CREATES:
            source_s3.put_object(Bucket=SOURCE, Key=put.key, Body=put.body, **put.extra)
        for put in OVERWRITES:
            source_s3.put_object(Bucket=SOURCE, Key=put.key, Body=put.body, **put.extra)
        for key in DELETES:
            source_s3.delete_object(Bucket=SOURCE, Key=key)
        writes_done = time.monotonic()
        print(
            f"  wrote {len(CREATES)} creates, {len(OVERWRITES)} overwrites, {len(DELETES)} deletes "
            f"in {writes_done - writes_started:.2f}s; waiting for the replica (deadline {deadline_s:.0f}s)"
        )
        difference = wait_until_equal(source_s3, replica_s3, SOURCE, DESTINATION, deadline_s)
        converged = time.monotonic()
        replica = snapshot(replica_s3, DESTINATION)
        print(f"\n  {'KEY':<36} {'BYTES':>6}  CONTENT-TYPE / METADATA / TAGS")
        for key, item in sorted(replica.items()):
            headers = dict(item.headers)
            details = [headers.get("ContentType", "")] + [f"{k}={v}" for k, v in item.metadata + item.tags]
            print(f"  {key:<36} {item.size:>6}  {' '.join(filter(None, details))}")
        if not difference.equal:
            print(f"\nFAILED: the replica does not equal the source after {deadline_s:.0f}s:\n{difference.describe()}")
            return 1
        print(
            f"\nOK: {len(replica)} objects in {DESTINATION} equal {SOURCE} in keys, bytes, content headers, "
            f"user metadata and tags; deletes applied."
        )
        print(
            f"  converged {converged - writes_done:.2f}s after the last write "
            f"({converged - writes_started:.2f}s after the first); whole demo {converged - started:.1f}s"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds to wait for convergence")
    return run(parser.parse_args().deadline)


if __name__ == "__main__":
    sys.exit(main())
