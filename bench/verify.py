"""Memory of `crr verify`: peak RSS of a streaming verify over N objects stays flat as N grows.

Each figure comes from a fresh process, because ``ru_maxrss`` is a per-process high-water mark:
- ``baseline``  imports and a rule, no listing: the floor every row shares;
- ``stream``    ``crr_cli.operations.verify.verify`` over two listings that generate their pages lazily (keys
                ``obj/00000000``..., with one missing, one stale and one extra key per 1000);
- ``naive``     the same listings read into two dicts and compared as sets, for contrast: what a
                verify that holds both buckets would cost.
The Python-heap peak (tracemalloc) of ``stream`` and ``naive`` is measured in separate runs, since
tracing slows them down. ``--moto N`` adds a run over the S3 adapter against the embedded local cloud
(moto in its own process, so its storage is not in our RSS), with N objects per bucket; its "over
base" is measured against a process that has loaded the S3 client and listed nothing.

    python bench/verify.py [--objects 10000 50000] [--page-size 1000] [--moto 0]

Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crr.models import ListedObject
from crr.rules import ReplicationRule
from crr_cli.operations.verify import verify

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"
SOURCE, DESTINATION = "bench-verify-source", "bench-verify-replica"
EVERY = 1000  # one missing, one stale and one extra key per EVERY objects


class SyntheticListing:
    """Pages of ``obj/%08d`` keys made on demand; the destination differs in a fixed pattern."""

    def __init__(self, objects: int, page_size: int) -> None:
        self.objects = objects
        self.page_size = page_size

    def _entries(self, bucket: str) -> Iterator[ListedObject]:
        replica = bucket == DESTINATION
        for index in range(self.objects):
            key = f"obj/{index:08d}"
            if replica and index % EVERY == 1:
                continue  # missing
            stale = replica and index % EVERY == 2
            yield ListedObject(key, 1024, f"{index + (1 << 60 if stale else 0):032x}")
            if replica and index % EVERY == 3:
                yield ListedObject(key + "x", 1, "0" * 32)  # extra: sorts right after its neighbour

    def pages(self, bucket: str, region: str, prefix: str) -> Iterator[list[ListedObject]]:
        page: list[ListedObject] = []
        for entry in self._entries(bucket):
            page.append(entry)
            if len(page) == self.page_size:
                yield page
                page = []
        if page:
            yield page


def the_rule() -> ReplicationRule:
    return ReplicationRule.create(
        rule_id="bench",
        source_bucket=SOURCE,
        source_region=SOURCE_REGION,
        destination_bucket=DESTINATION,
        destination_region=DESTINATION_REGION,
    )


def naive_compare(listing: Any, rule: ReplicationRule) -> dict[str, int]:
    """Hold both buckets as dicts, then compare: memory grows with the buckets."""
    source = {item.key: (item.size, item.etag) for page in listing.pages(SOURCE, SOURCE_REGION, "") for item in page}
    replica = {
        item.key: (item.size, item.etag) for page in listing.pages(DESTINATION, DESTINATION_REGION, "") for item in page
    }
    both = source.keys() & replica.keys()
    stale = sum(1 for key in both if source[key] != replica[key])
    return {
        "matching": len(both) - stale,
        "missing": len(source.keys() - replica.keys()),
        "stale": stale,
        "extra": len(replica.keys() - source.keys()),
    }


def child(mode: str, objects: int, page_size: int, trace: bool) -> dict[str, Any]:
    """One measurement, run in its own process."""
    rule = the_rule()
    listing: Any = SyntheticListing(objects, page_size)
    if mode.startswith("moto"):
        from crr.adapters.clients import ClientFactory
        from crr.adapters.listing import S3Listing

        listing = S3Listing(ClientFactory(), page_size=page_size)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    counts: dict[str, int] = {}
    if mode in {"stream", "moto"}:
        report = verify(rule, listing, listing, samples=10)
        counts = {
            "matching": report.matching,
            "missing": report.missing.count,
            "stale": report.stale.count,
            "extra": report.extra.count,
        }
    elif mode == "naive":
        counts = naive_compare(listing, rule)
    elif mode == "moto-baseline":
        # The S3 client and its service model, with one (empty) listing per region: the floor of "moto".
        for bucket, region in ((SOURCE, SOURCE_REGION), (DESTINATION, DESTINATION_REGION)):
            list(listing.pages(bucket, region, "nothing-here/"))
    elapsed = time.perf_counter() - started
    heap_peak = tracemalloc.get_traced_memory()[1] if trace else None
    return {
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
        "seconds": elapsed,
        "heap_peak_bytes": heap_peak,
        "counts": counts,
    }


def measure(
    mode: str, objects: int, page_size: int, *, trace: bool = False, env: dict[str, str] | None = None
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, str(objects), "--page-size", str(page_size)]
    if trace:
        command.append("--trace")
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def fill_local_cloud(objects: int) -> tuple[Any, dict[str, str]]:
    """Start the embedded local cloud with both buckets holding ``objects`` keys (same pattern of
    differences as the synthetic listing); returns the cloud and the environment pointing at it."""
    from crr_cli.localcloud.cloud import LocalCloud
    from crr_cli.localcloud.scenario import create_bucket

    cloud = LocalCloud(state_dir=Path(".local-cloud/bench-verify"))
    cloud.start()
    west, east = cloud.client("s3", SOURCE_REGION), cloud.client("s3", DESTINATION_REGION)
    create_bucket(west, SOURCE, SOURCE_REGION, versioned=False)
    create_bucket(east, DESTINATION, DESTINATION_REGION, versioned=False)

    def put(index: int) -> None:
        key, body = f"obj/{index:08d}", f"{index:08d}".encode()
        west.put_object(Bucket=SOURCE, Key=key, Body=body)
        if index % EVERY != 1:
            east.put_object(Bucket=DESTINATION, Key=key, Body=body if index % EVERY != 2 else b"stale!!!")
        if index % EVERY == 3:
            east.put_object(Bucket=DESTINATION, Key=key + "x", Body=b"x")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(put, range(objects)))
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_ENDPOINT_URL")}
    environment.update(cloud.aws_environment(), AWS_REGION=SOURCE_REGION)
    environment.pop("AWS_PROFILE", None)
    return cloud, environment


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def run(sizes: list[int], page_size: int, moto_objects: int) -> None:
    baseline = measure("baseline", 0, page_size)
    print(f"crr verify memory, page size {page_size}; each row is a fresh process (peak RSS = ru_maxrss)")
    print(f"  baseline (imports, no listing): peak RSS {mib(baseline['max_rss_kib'])}")
    print(
        f"  {'objects':>8}  {'mode':<7} {'peak RSS':>11} {'over base':>11} {'heap peak':>11} {'seconds':>8}  "
        "counts (matching/missing/stale/extra)"
    )
    for objects in sizes:
        for mode in ("stream", "naive"):
            plain = measure(mode, objects, page_size)
            traced = measure(mode, objects, page_size, trace=True)
            counts = plain["counts"]
            print(
                f"  {objects:>8}  {mode:<7} {mib(plain['max_rss_kib']):>11} "
                f"{mib(plain['max_rss_kib'] - baseline['max_rss_kib']):>11} "
                f"{mib(traced['heap_peak_bytes'] / 1024):>11} {plain['seconds']:>8.2f}  "
                f"{counts['matching']}/{counts['missing']}/{counts['stale']}/{counts['extra']}"
            )
    if moto_objects:
        print(f"  filling the embedded local cloud with {moto_objects} objects per bucket ...")
        cloud, environment = fill_local_cloud(moto_objects)
        try:
            floor = measure("moto-baseline", 0, page_size, env=environment)
            over_s3 = measure("moto", moto_objects, page_size, env=environment)
            counts = over_s3["counts"]
            print(f"  over S3 (moto): baseline with the S3 client loaded: peak RSS {mib(floor['max_rss_kib'])}")
            print(
                f"  {moto_objects:>8}  {'S3/moto':<7} {mib(over_s3['max_rss_kib']):>11} "
                f"{mib(over_s3['max_rss_kib'] - floor['max_rss_kib']):>11} {'-':>11} "
                f"{over_s3['seconds']:>8.2f}  {counts['matching']}/{counts['missing']}/{counts['stale']}/"
                f"{counts['extra']}  ({2 * -(-moto_objects // page_size)} ListObjectsV2 pages or so)"
            )
        finally:
            cloud.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--moto", type=int, default=0, help="also verify N objects per bucket over moto (slow)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OBJECTS"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.page_size, args.trace)))
        return 0
    run(args.objects, args.page_size, args.moto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
