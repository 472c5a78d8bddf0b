"""Large-object copy on a real S3 server (SeaweedFS): crr vs `aws s3 cp` vs `rclone copy`, same run, same server.

A source object (1 GiB by default) is uploaded in parts with content headers, user metadata and tags. Each
tool then copies it server side into a bucket of its own:
- ``crr``          the Replicator with its S3 adapter (HEAD, a HEAD per source part, GetObjectTagging, then
                   CreateMultipartUpload + parallel UploadPartCopy in the source's layout + Complete), its
                   rule, ledger and progress in memory (tests/support/fakes/);
- ``aws s3 cp``    awscli v1 from .bench-venv (bench/peers.sh creates it), as a user would type it;
- ``rclone copy``  rclone from .bench-venv, a server-side copy on one remote.
For each it prints the wall time, MiB/s, the ratio to `aws s3 cp`, the S3 requests the server counted (by
HTTP kind; crr's are also counted by operation with botocore event hooks), and whether the replica kept
the source's user metadata, tags, Content-Type, content headers and ETag.

    python -m bench.large [--size-mib 1024] [--part-mib 16] [--runs 1] [--no-peers] [--latency-ms 10,60]

Run it from the repository root with the project's venv (it reuses tests/support). Prints figures; never
fails on time. Target (issue 5): crr >= 1.0x `aws s3 cp` throughput, with full fidelity.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from crr.adapters.clients import ClientFactory
from crr.adapters.s3 import S3ObjectStore
from crr.events import ChangeEvent, ChangeKind
from crr.part_planning import MIB
from crr.replication import Outcome, Replicator
from crr.rules import ReplicationRule
from crr_cli.localcloud.lambda_.latency import LatencyModel

try:
    from tests.support.fakes import FakeLedger, FakeProgress, FakeRules
    from tests.support.seaweedfs import SeaweedFS, running_seaweedfs, with_latency
except ModuleNotFoundError as missing:  # run as a file, the repository root is not importable
    raise SystemExit("run from the repository root as: python -m bench.large [options]") from missing

ROOT = Path(__file__).resolve().parents[1]
SOURCE_REGION, DESTINATION_REGION = "us-west-1", "us-east-1"  # nominal: SeaweedFS has one region
SOURCE, KEY = "bench-large-source", "media/large object.bin"
HEADERS = {
    "ContentType": "video/mp4",
    "CacheControl": "max-age=3600",
    "ContentDisposition": 'attachment; filename="large.bin"',
    "ContentLanguage": "en",
}
METADATA = {"owner": "bench", "checksum-note": "kept by crr"}
TAGS = {"team": "media", "retention": "long term"}
UPLOAD_THREADS = 8


@dataclass
class Row:
    tool: str
    seconds: list[float] = field(default_factory=list)
    server_requests: dict[str, int] = field(default_factory=dict)
    client_requests: dict[str, int] = field(default_factory=dict)
    fidelity: dict[str, bool] = field(default_factory=dict)
    note: str = ""
    copy: Callable[[str], None] | None = None  # copies the source into the bucket it is given

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# ---- the source -----------------------------------------------------------------------------------


def upload_source(s3: Any, size: int, part: int) -> None:
    """``size`` random bytes in parts of ``part`` (the last one shorter), uploaded in parallel."""
    upload = s3.create_multipart_upload(Bucket=SOURCE, Key=KEY, Metadata=METADATA, Tagging=urlencode(TAGS), **HEADERS)[
        "UploadId"
    ]
    sizes = [part] * (size // part) + ([size % part] if size % part else [])

    def send(number: int) -> dict[str, Any]:
        body = os.urandom(sizes[number - 1])
        sent = s3.upload_part(Bucket=SOURCE, Key=KEY, UploadId=upload, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": sent["ETag"]}

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        parts = list(pool.map(send, range(1, len(sizes) + 1)))
    s3.complete_multipart_upload(Bucket=SOURCE, Key=KEY, UploadId=upload, MultipartUpload={"Parts": parts})


# ---- the tools ------------------------------------------------------------------------------------


def run_crr(server: SeaweedFS, destination: str, counts: Counter[str], latency: LatencyModel | None = None) -> None:
    """The Replicator applying one creation event, as the replicate function does; with `latency`, its
    calls wait the model's round trips (the destination bucket is the cross-region side)."""
    session = server.session()
    if latency is not None:
        with_latency(session, latency, destination)
    lock = threading.Lock()

    def count(event_name: str, **_: Any) -> None:
        with lock:
            counts[event_name.rsplit(".", 1)[-1]] += 1

    session.events.register("before-call.s3", count)  # every client the factory builds inherits it
    rule = ReplicationRule.create(
        rule_id="bench-large",
        source_bucket=SOURCE,
        source_region=SOURCE_REGION,
        destination_bucket=destination,
        destination_region=DESTINATION_REGION,
    )
    replicator = Replicator(
        FakeRules(rule), S3ObjectStore(ClientFactory(session=session)), FakeLedger(), FakeProgress()
    )
    event = ChangeEvent(
        bucket=SOURCE,
        key=KEY,
        kind=ChangeKind.CREATED,
        event_name="ObjectCreated:CompleteMultipartUpload",
        event_time=datetime.now(UTC),
        sequencer="0A",
    )
    result = replicator.apply(event)
    if result.outcome is not Outcome.COPIED:
        raise RuntimeError(f"crr did not copy: {result}")


def peer_environment(server: SeaweedFS, scratch: Path) -> dict[str, str]:
    """The process environment without AWS_CA_BUNDLE (old rclone rejects it; http needs none) or any
    AWS profile, plus this server's endpoint and credentials."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "AWS_CA_BUNDLE" and not name.startswith(("AWS_", "RCLONE_"))
    }
    environment.update(server.environment())
    environment["AWS_CONFIG_FILE"] = str(scratch / "aws-config")
    environment["AWS_SHARED_CREDENTIALS_FILE"] = str(scratch / "aws-credentials")
    environment.update(
        {
            "RCLONE_CONFIG": str(scratch / "rclone.conf"),
            "RCLONE_CONFIG_SW_TYPE": "s3",
            "RCLONE_CONFIG_SW_PROVIDER": "SeaweedFS",
            "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint_url,
            "RCLONE_CONFIG_SW_ACCESS_KEY_ID": server.access_key,
            "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": server.secret_key,
            "RCLONE_CONFIG_SW_REGION": "us-east-1",
        }
    )
    return environment


def run_command(command: list[str], environment: dict[str, str]) -> None:
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")


def peers_bin() -> Path:
    """.bench-venv/bin, created by bench/peers.sh on first use."""
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "peers.sh")], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return Path(done.stdout.strip().splitlines()[-1])


# ---- measuring ------------------------------------------------------------------------------------


class Timed(Protocol):
    tool: str
    copy: Callable[[str], None] | None
    seconds: list[float]
    server_requests: dict[str, int]


def rotate_rounds(
    server: SeaweedFS, rows: Sequence[Timed], runs: int, *, bench: str, after: Callable[[Any, str], None]
) -> None:
    """``runs`` rounds; in each, every tool copies into a fresh bucket, in a rotating order so no tool
    always goes first (or last) on a server whose speed drifts. Keeps every time and the last round's
    server-side request counts; ``after(row, bucket)`` checks the copy and empties the bucket, so every
    round starts alike."""
    for run in range(runs):
        for row in [*rows[run % len(rows) :], *rows[: run % len(rows)]]:
            if row.copy is None:
                continue
            destination = f"bench-{bench}-{row.tool.split()[0]}-{run + 1}"
            server.create_bucket(destination)
            os.sync()  # the previous copy's dirty pages are written back now, not during this one
            before = server.s3_requests()
            started = time.perf_counter()
            row.copy(destination)
            row.seconds.append(time.perf_counter() - started)
            after_counts = server.s3_requests()
            row.server_requests = {
                kind: n - before.get(kind, 0) for kind, n in after_counts.items() if n - before.get(kind, 0)
            }
            after(row, destination)


def measure(server: SeaweedFS, rows: list[Row], runs: int) -> None:
    """Rotating rounds; each replica's fidelity is checked, then it is deleted."""

    def check(row: Any, destination: str) -> None:
        row.fidelity = fidelity(server.client(), destination)
        server.client().delete_object(Bucket=destination, Key=KEY)

    rotate_rounds(server, rows, runs, bench="large", after=check)


def fidelity(s3: Any, destination: str) -> dict[str, bool]:
    source = s3.head_object(Bucket=SOURCE, Key=KEY)
    replica = s3.head_object(Bucket=destination, Key=KEY)

    def tags(bucket: str) -> dict[str, str]:
        return {tag["Key"]: tag["Value"] for tag in s3.get_object_tagging(Bucket=bucket, Key=KEY)["TagSet"]}

    user_metadata = {k: v for k, v in replica.get("Metadata", {}).items() if not k.startswith("crr-")}
    return {
        "size": replica["ContentLength"] == source["ContentLength"],
        "metadata": user_metadata == source.get("Metadata", {}),
        "tags": tags(destination) == tags(SOURCE),
        "content-type": replica.get("ContentType") == source.get("ContentType"),
        "headers": all(replica.get(name) == source.get(name) for name in HEADERS if name != "ContentType"),
        "etag": replica["ETag"] == source["ETag"],
    }


def print_table(rows: list[Row], size: int, part: int, runs: int) -> None:
    mib = size / MIB
    baseline = next((row for row in rows if row.tool == "aws s3 cp" and row.seconds), None)
    checks = ("size", "metadata", "tags", "content-type", "headers", "etag")
    parts = -(-size // part)
    print(f"\n{mib:.0f} MiB object in {parts} parts of {part // MIB} MiB; median of {runs} round(s), tools interleaved")
    head = f"{'tool':<12} {'seconds':>8} {'range':>11} {'MiB/s':>8} {'vs aws':>7} {'requests':>8}  {'by kind':<22}"
    print(head + "  " + " ".join(checks))
    for row in rows:
        if not row.seconds:
            print(f"{row.tool:<12} {'-':>8} {'-':>11} {'-':>8} {'-':>7} {'-':>8}  {row.note}")
            continue
        ratio = f"{baseline.median / row.median:.2f}x" if baseline else "-"
        spread = f"{min(row.seconds):.2f}-{max(row.seconds):.2f}"
        kinds = " ".join(f"{kind}={n}" for kind, n in sorted(row.server_requests.items()))
        print(
            f"{row.tool:<12} {row.median:>8.2f} {spread:>11} {mib / row.median:>8.1f} {ratio:>7} "
            f"{sum(row.server_requests.values()):>8}  {kinds:<22}  "
            + " ".join(f"{('yes' if row.fidelity.get(c) else 'NO'):<{len(c)}}" for c in checks)
        )
    for row in rows:
        if row.client_requests:
            calls = ", ".join(f"{name} {n}" for name, n in sorted(row.client_requests.items()))
            print(f"{row.tool} API calls (botocore hooks, last run): {calls}")
        if row.note and row.seconds:
            print(f"{row.tool}: {row.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the source object (default 1024)")
    parser.add_argument("--part-mib", type=int, default=16, help="part size of the source upload (default 16)")
    parser.add_argument(
        "--runs", type=int, default=1, help="rounds (one copy per tool each); the median time is printed"
    )
    parser.add_argument("--no-peers", action="store_true", help="measure crr only (no .bench-venv needed)")
    parser.add_argument(
        "--latency-ms",
        type=LatencyModel.parse,
        metavar="SAME,CROSS",
        help="round trips (ms) for the source and the destination bucket (e.g. 10,60; default off); skips peers",
    )
    args = parser.parse_args(argv)
    size, part = args.size_mib * MIB, args.part_mib * MIB
    if part < 5 * MIB or size <= part:
        parser.error("parts must be at least 5 MiB, and the object larger than one part")

    with tempfile.TemporaryDirectory(prefix="crr-bench-large-") as scratch_dir:
        scratch = Path(scratch_dir)
        # Chunks at least as large as a part: see tests/support/seaweedfs.py on SeaweedFS's UploadPartCopy ETags.
        with running_seaweedfs(scratch / "seaweedfs", chunk_mib=max(64, args.part_mib), metrics=True) as server:
            server.create_bucket(SOURCE)
            started = time.perf_counter()
            upload_source(server.client(), size, part)
            uploaded = time.perf_counter() - started
            print(f"source: {size / MIB:.0f} MiB uploaded in {uploaded:.1f}s to {server.endpoint_url}")

            counts: Counter[str] = Counter()

            def crr_copy(destination: str) -> None:
                counts.clear()
                run_crr(server, destination, counts, args.latency_ms)

            rows = [Row("crr", copy=crr_copy)]
            if args.no_peers or args.latency_ms is not None:
                why = "--no-peers" if args.no_peers else "the latency model cannot reach another process"
                rows += [Row("aws s3 cp", note=f"skipped ({why})"), Row("rclone copy", note=f"skipped ({why})")]
            else:
                rows += peers(server, scratch)
            measure(server, rows, args.runs)
            rows[0].client_requests = dict(counts)
            print_table(rows, size, part, args.runs)
    return 0


def startup(tool: Path) -> float:
    """Seconds a tool takes to start and print its version: part of every copy it makes from a shell."""
    started = time.perf_counter()
    subprocess.run([str(tool), "--version"], capture_output=True, check=True)
    return time.perf_counter() - started


def peers(server: SeaweedFS, scratch: Path) -> list[Row]:
    """`aws s3 cp` and `rclone copy` from .bench-venv, as a user would run them against this server."""
    tools = peers_bin()
    environment = peer_environment(server, scratch)
    (scratch / "rclone.conf").touch()
    key_folder = KEY.rsplit("/", 1)[0]
    aws = Row(
        "aws s3 cp",
        note=(
            "awscli v1 defaults: 8 MiB parts, 10 threads; "
            f"its time includes {startup(tools / 'aws'):.2f}s of process start"
        ),
        copy=lambda destination: run_command(
            [str(tools / "aws"), "s3", "cp", f"s3://{SOURCE}/{KEY}", f"s3://{destination}/{KEY}", "--only-show-errors"],
            environment,
        ),
    )
    rclone = Row(
        "rclone copy",
        note=(
            "server-side copy: below --s3-copy-cutoff (4.6 GiB) that is one CopyObject; "
            f"its time includes {startup(tools / 'rclone'):.2f}s of process start"
        ),
        copy=lambda destination: run_command(
            [str(tools / "rclone"), "copy", f"sw:{SOURCE}/{KEY}", f"sw:{destination}/{key_folder}"], environment
        ),
    )
    return [aws, rclone]


if __name__ == "__main__":
    sys.exit(main())
