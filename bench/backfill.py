"""Backfill throughput on a real S3 server (SeaweedFS): the crr copy engine vs `aws s3 sync` vs `rclone copy`
vs a bare boto3 CopyObject loop, same run, same server; then the engine's peak memory at two bucket sizes.

The source holds ``--objects`` objects (10,000 by default) of ``--size`` bytes (1 KiB) under ``--prefixes``
prefixes (50). Each tool copies the whole bucket server side into an empty bucket of its own:
- ``crr``           the fanned-out backfill in this process (tests/support/backfill_runner.run_fanned_out):
                    ``--ranges`` workers claiming key ranges and copying their pages through the workflow's
                    steps, sharing one engine (its real S3 adapters: ListObjectsV2 pages + one CopyObject
                    per object, ``--concurrency`` copy threads in all); the ledger, job store and
                    replication queue are IN MEMORY
                    (tests/support), so the figures are S3's share of a backfill (in AWS each copied object
                    also costs one conditional DynamoDB PutItem, made on the same worker thread);
- ``aws s3 sync``   awscli v1 from .bench-venv (bench/peers.sh creates it), as a user would type it;
- ``rclone copy``   rclone from .bench-venv, ``--transfers 16 --checkers 16``, server-side copy;
- ``ceiling``       16 threads calling CopyObject with boto3 (crr's client settings), handed the key list
                    (no listing): what the server gives a client that does nothing else.
Printed: objects/s, the ratio of crr's rate to each, S3 requests per object (counted by the server, and
for crr also by botocore event hooks, listing included), and the targets of issue 4 with met / NOT met.

Memory: tracemalloc's peak while the engine runs a whole job, (a) on SeaweedFS at ``--objects`` with a ledger
that keeps nothing (in AWS it is a table), and (b) on synthetic in-memory buckets (keys computed, nothing
stored) at 10,000 and 100,000 objects: creating 100,000 objects on SeaweedFS would take minutes here.

    python -m bench.backfill [--objects 10000] [--prefixes 50] [--size 1024] [--concurrency 32] [--ranges 8]
                             [--runs 1] [--data-dir DIR] [--no-peers] [--no-memory]
                             [--memory-objects 10000 100000] [--latency-ms 10,60]

``--latency-ms SAME,CROSS`` puts the latency model (crr_cli.localcloud.lambda_.latency) on crr's and the
ceiling's clients: SeaweedFS has one region, so the destination bucket is the cross-region side and the
source the same-region one. The peers run in other processes the model cannot reach: they are skipped.

SeaweedFS keeps its data in /dev/shm (tmpfs) when there is one (``--data-dir`` to choose): on this
machine's disk the same copy varied by a factor of two from run to run. Run from the repository root with
the project's venv (it reuses tests/support and bench/large.py). Prints figures; never fails on time.
Targets: crr >= 1.3x aws s3 sync, >= 1.0x rclone, >= 0.8x the ceiling, <= 1.1 S3 requests per object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from crr.adapters.backfill_s3 import S3FastCopier, fast_timestamps
from crr.adapters.clients import ClientFactory
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.backfill.engine import DEFAULT_CONCURRENCY, BackfillEngine
from crr.backfill.models import DEFAULT_WORKERS, MAX_WORKERS, BackfillJob
from crr.backfill.reconcile import reconciler
from crr.backfill.workflow import BackfillSteps
from crr.ports.objects import PageListing
from crr.ports.table import KeyLedger
from crr.replication import Replicator
from crr.rules import ReplicationRule
from crr_cli.localcloud.lambda_.latency import LatencyHook, LatencyModel
from crr_cli.localcloud.lambda_.latency import summary as latency_summary

try:
    from bench.large import peer_environment, peers_bin, rotate_rounds, run_command, startup
    from tests.support.backfill_runner import prefix_requests, run_fanned_out, run_range
    from tests.support.fakes import FakeBackfillJobs, FakeLedger, FakeProgress, FakeReplicationQueue, FakeRules
    from tests.support.seaweedfs import CONFIG, SeaweedFS, running_seaweedfs, with_latency
    from tests.support.synthetic import CountingCopier, DiscardingLedger, SyntheticListing
except ModuleNotFoundError as missing:  # run as a file, the repository root is not importable
    raise SystemExit("run from the repository root as: python -m bench.backfill [options]") from missing

SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"  # nominal: SeaweedFS has one region
SOURCE = "bench-backfill-source"
DELAYED: list[LatencyHook] = []  # crr's latency hooks, one per round, for the summary line
CEILING_THREADS = 16
RCLONE_FLAGS = ("--transfers", "16", "--checkers", "16")
UPLOAD_THREADS = 16
T0 = datetime(2026, 11, 25, tzinfo=UTC)
TARGETS = {"aws s3 sync": 1.3, "rclone copy": 1.0, "ceiling": 0.8}
MAX_REQUESTS_PER_OBJECT = 1.1
# SeaweedFS keeps its data in tmpfs when there is one: this machine's disk made runs vary by 2x.
SHM = Path("/dev/shm")  # noqa: S108 - a private directory is made inside it


@dataclass
class Row:
    tool: str
    copy: Callable[[str], None] | None = None  # copies the source bucket into the bucket it is given
    seconds: list[float] = field(default_factory=list)
    server_requests: dict[str, int] = field(default_factory=dict)
    client_requests: dict[str, int] = field(default_factory=dict)
    copied: int = 0
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def source_keys(objects: int, prefixes: int) -> list[str]:
    return [f"prefix-{index % prefixes:02d}/object-{index:06d}.bin" for index in range(objects)]


def upload(server: SeaweedFS, keys: list[str], size: int) -> None:
    s3 = server.client()
    body = os.urandom(size)

    def put(key: str) -> None:
        s3.put_object(Bucket=SOURCE, Key=key, Body=body, ContentType="application/octet-stream")

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        list(pool.map(put, keys))


def bench_rule(destination: str, prefixes: int) -> ReplicationRule:
    return ReplicationRule.create(
        rule_id="bench-backfill",
        source_bucket=SOURCE,
        source_region=SOURCE_REGION,
        destination_bucket=destination,
        destination_region=DESTINATION_REGION,
        prefixes=tuple(f"prefix-{index:02d}/" for index in range(prefixes)),
        created_at=T0,
    )


def counting_session(
    server: SeaweedFS, counts: Counter[str], latency: LatencyModel | None = None, destination: str = ""
) -> boto3.session.Session:
    """A session pointed at the server whose clients count their API calls by operation (and parse
    timestamps fast, as the backfill function's do), and wait the latency model's round trips if given."""
    session = fast_timestamps(server.session())
    if latency is not None:
        DELAYED.append(with_latency(session, latency, destination))
    lock = threading.Lock()

    def count(event_name: str, **_: Any) -> None:
        with lock:
            counts[event_name.rsplit(".", 1)[-1]] += 1

    session.events.register("before-call.s3", count)
    return session


def make_engine(
    clients: ClientFactory, listing: PageListing, ledger: KeyLedger, rule: ReplicationRule, concurrency: int
) -> BackfillEngine:
    live = Replicator(FakeRules(rule), S3ObjectStore(clients), ledger, FakeProgress())
    return BackfillEngine(
        listing, S3FastCopier(clients), ledger, reconciler(live), FakeReplicationQueue(), concurrency=concurrency
    )


def run_crr(
    server: SeaweedFS,
    destination: str,
    prefixes: int,
    concurrency: int,
    counts: Counter[str],
    *,
    ranges: int = DEFAULT_WORKERS,
    latency: LatencyModel | None = None,
) -> None:
    """A whole backfill job in this process, ``ranges`` workers recording pages in an in-memory job store."""
    counts.clear()
    clients = ClientFactory(session=counting_session(server, counts, latency, destination))
    rule = bench_rule(destination, prefixes)
    jobs = FakeBackfillJobs(clock=lambda: datetime.now(UTC))
    job = BackfillJob.start(rule, at=datetime.now(UTC), workers=ranges)
    jobs.create(job)
    with make_engine(clients, S3Listing(clients), FakeLedger(), rule, concurrency) as engine:
        steps = BackfillSteps(engine, jobs, FakeRules(rule), max_workers=MAX_WORKERS)
        finished = run_fanned_out(steps, job, workers=ranges)
    if finished.totals.copied != finished.totals.listed:
        raise RuntimeError(f"crr did not copy everything: {finished.totals}")


def run_ceiling(server: SeaweedFS, destination: str, keys: list[str], latency: LatencyModel | None = None) -> None:
    """CopyObject only, with the same client settings as crr's (fast timestamps included)."""
    session = fast_timestamps(server.session())
    if latency is not None:
        with_latency(session, latency, destination)
    s3 = session.client("s3", region_name="us-east-1", config=CONFIG)

    def copy(key: str) -> None:
        s3.copy_object(Bucket=destination, Key=key, CopySource={"Bucket": SOURCE, "Key": key})

    with ThreadPoolExecutor(max_workers=CEILING_THREADS) as pool:
        list(pool.map(copy, keys))


def warm_up(server: SeaweedFS, keys: list[str]) -> None:
    """An untimed copy of up to 1000 objects, so that no tool is the first to meet a server still busy
    with the upload (its first round would otherwise be slower, whichever tool it is)."""
    os.sync()
    server.create_bucket("bench-backfill-warm-up")
    run_ceiling(server, "bench-backfill-warm-up", keys[:1000])
    empty(server, "bench-backfill-warm-up")


def empty(server: SeaweedFS, bucket: str) -> int:
    """Delete every object of ``bucket`` (1000 per request); returns how many there were."""
    s3 = server.client()
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        contents = page.get("Contents", [])
        if contents:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": item["Key"]} for item in contents]})
            deleted += len(contents)
    return deleted


def measure(server: SeaweedFS, rows: list[Row], runs: int, objects: int) -> None:
    """Rotating rounds (``bench.large.rotate_rounds``); each copy's objects are counted and deleted, so
    each tool meets a server holding the same objects."""

    def check(row: Any, destination: str) -> None:
        row.copied = empty(server, destination)
        if row.copied != objects:
            row.note = f"copied {row.copied} of {objects} objects!"

    rotate_rounds(server, rows, runs, bench="backfill", after=check)


def print_table(rows: list[Row], objects: int, size: int, prefixes: int, runs: int) -> None:
    crr = next(row for row in rows if row.tool == "crr")
    print(f"\n{objects} objects of {size} B under {prefixes} prefixes; median of {runs} round(s), tools interleaved")
    print(f"{'tool':<12} {'seconds':>8} {'range':>13} {'objects/s':>10} {'crr is':>8} {'req/obj':>8}  server requests")
    for row in rows:
        if not row.seconds:
            print(f"{row.tool:<12} {'-':>8} {'-':>13} {'-':>10} {'-':>8} {'-':>8}  {row.note}")
            continue
        versus = f"{row.median / crr.median:.2f}x" if row is not crr else "-"
        spread = f"{min(row.seconds):.2f}-{max(row.seconds):.2f}"
        total = sum(row.server_requests.values())
        kinds = " ".join(f"{kind}={n}" for kind, n in sorted(row.server_requests.items()))
        print(
            f"{row.tool:<12} {row.median:>8.2f} {spread:>13} {objects / row.median:>10.0f} {versus:>8} "
            f"{total / objects:>8.3f}  {kinds}"
        )
    for row in rows:
        if row.note:
            print(f"  {row.tool}: {row.note}")
    if crr.client_requests:
        calls = ", ".join(f"{name} {n}" for name, n in sorted(crr.client_requests.items()))
        per_object = sum(crr.client_requests.values()) / objects
        print(f"crr API calls (botocore hooks, last round): {calls} = {per_object:.3f} per object")
    print("\ntargets (issue 4):")
    for tool, target in TARGETS.items():
        peer = next((r for r in rows if r.tool == tool and r.seconds), None)
        if peer is None:
            print(f"  crr >= {target:.1f}x {tool:<12} not measured")
            continue
        ratio = peer.median / crr.median
        print(f"  crr >= {target:.1f}x {tool:<12} {ratio:5.2f}x  {'met' if ratio >= target else 'NOT met'}")
    per_object = sum(crr.server_requests.values()) / objects
    verdict = "met" if per_object <= MAX_REQUESTS_PER_OBJECT else "NOT met"
    print(f"  crr <= {MAX_REQUESTS_PER_OBJECT} S3 requests per object    {per_object:5.3f}   {verdict}")


# ---- memory ------------------------------------------------------------------------------------------


def peak_on_server(server: SeaweedFS, prefixes: int, concurrency: int) -> tuple[float, int]:
    """tracemalloc's peak (MiB) while the engine copies the whole source into a fresh bucket."""
    destination = "bench-backfill-memory"
    server.create_bucket(destination)
    clients = ClientFactory(session=fast_timestamps(server.session()))
    rule = bench_rule(destination, prefixes)
    listing = S3Listing(clients)
    listing.list_page(SOURCE, SOURCE_REGION, "", start_after=None, max_keys=1)  # clients built before tracing
    with make_engine(clients, listing, DiscardingLedger(), rule, concurrency) as engine:
        tracemalloc.start()
        try:
            listed = sum(
                result.counts.listed for request in prefix_requests(rule) for result in run_range(engine, rule, request)
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    empty(server, destination)
    return peak / 2**20, listed


def peak_synthetic(objects: int, prefixes: int, concurrency: int) -> float:
    listing = SyntheticListing(SOURCE, objects, prefixes)
    rule = ReplicationRule.create(
        rule_id="bench-backfill",
        source_bucket=SOURCE,
        source_region=SOURCE_REGION,
        destination_bucket="bench-backfill-synthetic",
        destination_region=DESTINATION_REGION,
        prefixes=tuple(listing.prefixes()),
        created_at=T0,
    )
    engine = BackfillEngine(
        listing,
        CountingCopier(),
        DiscardingLedger(),
        lambda rule, key: (_ for _ in ()).throw(RuntimeError("no object needs the live path here")),
        FakeReplicationQueue(),
        concurrency=concurrency,
    )
    with engine:
        tracemalloc.start()
        try:
            listed = sum(
                result.counts.listed for request in prefix_requests(rule) for result in run_range(engine, rule, request)
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    if listed != objects:
        raise RuntimeError(f"the synthetic job listed {listed} of {objects} objects")
    return peak / 2**20


# ---- peers ---------------------------------------------------------------------------------------------


def peers(server: SeaweedFS, scratch: Path) -> list[Row]:
    tools = peers_bin()
    environment = peer_environment(server, scratch)
    (scratch / "rclone.conf").touch()
    aws = Row(
        "aws s3 sync",
        note=f"awscli v1 defaults (10 threads); its time includes {startup(tools / 'aws'):.2f}s of process start",
        copy=lambda destination: run_command(
            [str(tools / "aws"), "s3", "sync", f"s3://{SOURCE}", f"s3://{destination}", "--only-show-errors"],
            environment,
        ),
    )
    rclone = Row(
        "rclone copy",
        note=f"{' '.join(RCLONE_FLAGS)}; its time includes {startup(tools / 'rclone'):.2f}s of process start",
        copy=lambda destination: run_command(
            [str(tools / "rclone"), "copy", f"sw:{SOURCE}", f"sw:{destination}", *RCLONE_FLAGS],
            environment,
        ),
    )
    return [aws, rclone]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the source (default 10000)")
    parser.add_argument("--prefixes", type=int, default=50, help="prefixes they are spread over (default 50)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per object (default 1024)")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="crr's copy threads (default %(default)s)"
    )
    parser.add_argument(
        "--ranges",
        type=int,
        choices=range(1, MAX_WORKERS + 1),
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"key ranges crr copies at once, 1-{MAX_WORKERS} (default %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=1, help="rounds (one copy per tool each); medians printed")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="where SeaweedFS keeps its data (default: /dev/shm if present)"
    )
    parser.add_argument("--no-peers", action="store_true", help="crr and the ceiling only (no .bench-venv needed)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument(
        "--memory-objects", type=int, nargs="+", default=[10_000, 100_000], help="synthetic sizes for memory"
    )
    parser.add_argument(
        "--latency-ms",
        type=LatencyModel.parse,
        metavar="SAME,CROSS",
        help="round trips (ms) for the source and the destination bucket (e.g. 10,60; default off); skips peers",
    )
    args = parser.parse_args(argv)
    if args.objects < 1 or not 1 <= args.prefixes <= 100:
        parser.error("--objects must be positive and --prefixes 1-100 (a rule's limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)

    keys = source_keys(args.objects, args.prefixes)
    data_dir = args.data_dir or (SHM if SHM.is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="crr-bench-backfill-", dir=data_dir) as scratch_dir:
        scratch = Path(scratch_dir)
        print(f"SeaweedFS data in {scratch} ({'tmpfs: no disk I/O in the figures' if data_dir == SHM else 'on disk'})")
        with running_seaweedfs(scratch / "seaweedfs", metrics=True) as server:
            server.create_bucket(SOURCE)
            started = time.perf_counter()
            upload(server, keys, args.size)
            uploaded = time.perf_counter() - started
            print(f"source: {args.objects} objects uploaded in {uploaded:.1f}s to {server.endpoint_url}")
            warm_up(server, keys)

            counts: Counter[str] = Counter()
            crr = Row(
                "crr",
                note=f"{args.ranges} ranges at once, {args.concurrency} copy threads in all; ledger, job store and "
                "queue in memory",
                copy=lambda destination: run_crr(
                    server,
                    destination,
                    args.prefixes,
                    args.concurrency,
                    counts,
                    ranges=args.ranges,
                    latency=args.latency_ms,
                ),
            )
            ceiling = Row(
                "ceiling",
                note=f"{CEILING_THREADS} boto3 threads, CopyObject only, handed the key list",
                copy=lambda destination: run_ceiling(server, destination, keys, args.latency_ms),
            )
            rows = [crr]
            if args.no_peers or args.latency_ms is not None:
                why = "--no-peers" if args.no_peers else "the latency model cannot reach another process"
                rows += [Row("aws s3 sync", note=f"skipped ({why})"), Row("rclone copy", note=f"skipped ({why})")]
            else:
                rows += peers(server, scratch)
            rows.append(ceiling)
            measure(server, rows, args.runs, args.objects)
            crr.client_requests = dict(counts)
            print_table(rows, args.objects, args.size, args.prefixes, args.runs)
            if args.latency_ms is not None:
                delayed: dict[str, dict[str, int]] = {"same": {}, "cross": {}}
                for hook in DELAYED:
                    for request_class, operations in hook.counts().items():
                        for operation, count in operations.items():
                            delayed[request_class][operation] = delayed[request_class].get(operation, 0) + count
                print(f"crr, all rounds: {latency_summary(delayed, args.latency_ms)}")

            if not args.no_memory:
                print(
                    "\npeak memory of the engine (tracemalloc; Python allocations of the whole process while it runs):"
                )
                peak, listed = peak_on_server(server, args.prefixes, args.concurrency)
                print(f"  SeaweedFS, real S3 adapters, {listed:>7} objects: {peak:6.1f} MiB  (ledger keeps nothing)")
        if not args.no_memory:
            for objects in args.memory_objects:
                peak = peak_synthetic(objects, args.prefixes, args.concurrency)
                print(f"  synthetic in-memory buckets, {objects:>7} objects: {peak:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
