"""`make demo`: the real template and handler code on the embedded local cloud, end to end.

Starts the local cloud, deploys template.yaml in us-west-1, creates a source bucket there and a
destination bucket in us-east-1, adds a rule with the CLI, then creates, overwrites and deletes
objects (awkward keys, empty object, metadata, tags, content headers) and waits, polling with a
deadline, until the destination equals the source; objects written before the rule arrive through
the backfill `rules add --backfill` starts. Then a two-way pair: a stack in each region,
`crr rules add --two-way`, writes on both sides and a deliberate same-key race, until both sides are
identical. Exits 0 only if both parts converge.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from crr_cli.localcloud.cloud import LocalCloud
from crr_cli.localcloud.scenario import create_bucket, deploy_two_way_stacks, run_cli
from crr_cli.snapshot import Difference, compare, snapshot

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION = "crr-demo-source", "crr-demo-replica"
STACK = "crr-demo"
# The two-way part: one stack per region, each replicating its own site's bucket into the other.
WEST_SITE, EAST_SITE = "crr-demo-west-site", "crr-demo-east-site"
WEST_STACK, EAST_STACK = "crr-demo-west", "crr-demo-east"
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
# Written before the rule exists, so no notification ever names them: the backfill copies them.
HISTORY = [
    Put("history/2019/ledger.csv", b"year,total\n2019,42\n", {"ContentType": "text/csv", "Tagging": "era=2019"}),
    Put("history/2020/ledger.csv", b"year,total\n2020,43\n", {"ContentType": "text/csv", "Metadata": {"v": "1"}}),
    Put("history/README.txt", b"objects from before the rule\n"),
]


def abort_incomplete_uploads(s3: Any, bucket: str) -> None:
    """What `crr rules add` advises for a destination: no abandoned multipart upload lives forever."""
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket,
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


def wait_until_equal(source_s3: Any, replica_s3: Any, source: str, replica: str, deadline_s: float) -> Difference:
    """Poll until the replica equals the source or the deadline passes; returns the last comparison."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            difference = compare(snapshot(source_s3, source), snapshot(replica_s3, replica))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchKey":
                raise
            # A key went away between listing and reading it: the buckets are still moving.
            difference = Difference(missing=[], extra=[], different={"(moving)": ["listing"]})
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
        abort_incomplete_uploads(replica_s3, DESTINATION)
        print(f"  buckets: {SOURCE} ({SOURCE_REGION}, versioned) → {DESTINATION} ({DESTINATION_REGION})")
        for put in HISTORY:
            source_s3.put_object(Bucket=SOURCE, Key=put.key, Body=put.body, **put.extra)
        print(f"  {len(HISTORY)} objects already in {SOURCE} before the rule (history/): the backfill copies them")
        print("$ crr rules add --source crr-demo-source --destination crr-demo-replica --backfill")
        arguments = ["rules", "add", "--source", SOURCE, "--destination", DESTINATION, "--backfill"]
        if run_cli(cloud, STACK, SOURCE_REGION, arguments):
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
        wait_for_backfill_end(cloud, deadline_s)
        print(f"$ crr backfill status {SOURCE}")
        if run_cli(cloud, STACK, SOURCE_REGION, ["backfill", "status", SOURCE]):
            return 1
        return two_way(cloud, deadline_s)


def wait_for_backfill_end(cloud: LocalCloud, deadline_s: float) -> None:
    """The replica can equal the source before the backfill has recorded its last page: wait (up to
    the deadline) until the job is no longer running."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            run_cli(cloud, STACK, SOURCE_REGION, ["backfill", "status", SOURCE, "--json"])
        job = json.loads(printed.getvalue() or "null")
        if job is None or job.get("status") != "running":
            return
        time.sleep(0.2)


def two_way(cloud: LocalCloud, deadline_s: float) -> int:
    """Both regions write; a race on one key; both sides end identical (last writer wins)."""
    print(f"\ncrr demo, two-way: {WEST_SITE} ({SOURCE_REGION}) <-> {EAST_SITE} ({DESTINATION_REGION})")
    west_s3, east_s3 = cloud.client("s3", SOURCE_REGION), cloud.client("s3", DESTINATION_REGION)
    # As on AWS: each stack deployed, then redeployed with the other's PeerRulesTableArns/PeerQueueArns.
    deploy_two_way_stacks(
        cloud,
        TEMPLATE,
        [
            (WEST_STACK, SOURCE_REGION, {"SourceBuckets": WEST_SITE, "DestinationBuckets": EAST_SITE}),
            (EAST_STACK, DESTINATION_REGION, {"SourceBuckets": EAST_SITE, "DestinationBuckets": WEST_SITE}),
        ],
    )
    for region, source in ((SOURCE_REGION, WEST_SITE), (DESTINATION_REGION, EAST_SITE)):
        create_bucket(cloud.client("s3", region), source, region, versioned=True)
        abort_incomplete_uploads(cloud.client("s3", region), source)
    print(f"  stacks {WEST_STACK} ({SOURCE_REGION}) and {EAST_STACK} ({DESTINATION_REGION}) deployed, peered")
    print(f"$ crr rules add --source {WEST_SITE} --destination {EAST_SITE} --two-way {EAST_STACK}")
    arguments = ["rules", "add", "--source", WEST_SITE, "--destination", EAST_SITE, "--two-way", EAST_STACK]
    if run_cli(cloud, WEST_STACK, SOURCE_REGION, arguments):
        return 1
    started = time.monotonic()
    west_s3.put_object(Bucket=WEST_SITE, Key="reports/west.csv", Body=b"written in the west\n")
    east_s3.put_object(Bucket=EAST_SITE, Key="reports/east.csv", Body=b"written in the east\n")
    east_s3.put_object(Bucket=EAST_SITE, Key="reports/gone.csv", Body=b"deleted from the west soon\n")
    wait_until_equal(west_s3, east_s3, WEST_SITE, EAST_SITE, deadline_s)
    west_s3.delete_object(Bucket=WEST_SITE, Key="reports/gone.csv")
    # The race: both sites write one key at the same moment; the later write wins on both sides
    # (the same second: the bucket whose name sorts last wins, here the west site).
    west_s3.put_object(Bucket=WEST_SITE, Key="shared/config.json", Body=b'{"edited_in": "west"}\n')
    east_s3.put_object(Bucket=EAST_SITE, Key="shared/config.json", Body=b'{"edited_in": "east"}\n')
    print("  wrote on both sides, deleted one key in the west, and raced both sides on shared/config.json")
    difference = wait_until_equal(west_s3, east_s3, WEST_SITE, EAST_SITE, deadline_s)
    converged = time.monotonic()
    both = snapshot(west_s3, WEST_SITE)
    for key in sorted(both):
        body = west_s3.get_object(Bucket=WEST_SITE, Key=key)["Body"].read().decode().strip()
        print(f"  {key:<24} {body}")
    if not difference.equal:
        print(f"\nFAILED: the two sites differ after {deadline_s:.0f}s:\n{difference.describe()}")
        return 1
    print(f"\nOK: {len(both)} objects identical in {WEST_SITE} and {EAST_SITE} ({converged - started:.2f}s)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds to wait for convergence")
    return run(parser.parse_args().deadline)


if __name__ == "__main__":
    sys.exit(main())
