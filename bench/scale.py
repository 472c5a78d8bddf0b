"""Scale-out in one run (issue 13): the live path per invocation, the fanned-out backfill at 1-16 ranges, a
cost model per million 1 KiB objects at AWS list prices, and a projection of large backfills.

    python -m bench.scale [--quick] [--copy-threads 4] [--page-size N] [--backfill-objects N]
                          [--live-objects N] [--rounds N] [--no-backfill]

Prints, under the latency model (10 ms same-region, 60 ms cross-region round trips):
1. Live path (bench/replicate.py's --per-invocation machinery on the local cloud, IAM off): objects/s per
   invocation and Lambda ms per object, one record at a time vs RecordConcurrency 10, at batch 10 and at
   batch 50 (with a 1 s window); the S3 requests and DynamoDB writes per object the local cloud's server
   side counted. Full mode measures each setting in 3 interleaved rounds and keeps the median, and adds
   put → replica p99 at 50 PutObject/s (bench/replicate.py's rate mode).
2. Backfill (tests/support/backfill_runner.run_fanned_out on SeaweedFS, as bench/backfill.py: the real S3
   adapters over HTTP, the latency model on the clients, the destination bucket the cross-region side;
   ledger, job store and queue in memory): objects/s at 1, 2, 4, 8 (and 16 in full mode) ranges, each as a
   multiple of the 1-range rate, and S3 requests per object. Each range copies on an engine of its own with
   a small pool (--copy-threads, default 4): this machine's 2 cores would otherwise bind 8 ranges x 32
   threads on CPU, while on AWS each range is a Lambda with its own CPU, so the ratio printed is what
   fan-out buys when every range waits on latency. Pages default to 1000 x copy threads / 32 keys, as
   long in time as a page of 1000 on AWS. The job is 36,000 objects in full mode (4,000 quick), so that
   its start and end weigh as little as in a large backfill; the 1-range baseline stops after 48 pages.
3. Cost per million 1 KiB objects, live and backfilled, from the requests counted and the durations
   measured, at the list prices below, beside S3 Replication and AWS Data Transfer Hub, and the floor of
   a live copy with a per-key ledger (the copy, its notification, one on-demand DynamoDB write).
4. A projection (assumptions printed): hours to backfill 100 M and 1 B objects at the default fan-out and
   at the template's maximum (BackfillMaxRanges' MaxValue).
5. The issue's targets with met / NOT met, and a last line:
   scale: backfill <x>x at 8 ranges, live <y>x per invocation, <z> USD per million objects

--quick finishes in under 5 minutes here (fewer objects, no 16 ranges, no p99 run). Prints figures; never
fails on time; exits non-zero only on errors. Run from the repository root with the project's venv.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crr.adapters.clients import ClientFactory
from crr.adapters.listing import S3Listing
from crr.backfill.engine import DEFAULT_CONCURRENCY as DEFAULT_COPY_THREADS
from crr.backfill.engine import BackfillEngine
from crr.backfill.models import DEFAULT_PAGE_SIZE, MAX_WORKERS, BackfillJob, PageRequest, PageResult
from crr.backfill.workflow import BackfillSteps, StepResult
from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template
from crr_cli.localcloud.lambda_.latency import LatencyModel

try:
    from bench import backfill as backfill_bench
    from bench import replicate
    from tests.support.backfill_runner import run_fanned_out
    from tests.support.fakes import FakeBackfillJobs, FakeLedger, FakeRules
    from tests.support.seaweedfs import SeaweedFS, running_seaweedfs
except ModuleNotFoundError as missing:  # run as a file, the repository root is not importable
    raise SystemExit("run from the repository root as: python -m bench.scale [options]") from missing

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
BACKFILL_ASL = ROOT / "statemachine" / "backfill.asl.json"
LATENCY = LatencyModel(10, 60)
OBJECT_BYTES = 1024
MILLION = 1_000_000

# ---- AWS list prices, us-east-1, as checked on 2026-12-04 --------------------------------------------
# Each was looked up with the search tool that day; `checked` says what was found and where. The AWS pages
# for S3 and Lambda render their price cells by script, so their figures were read from the pages named.


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    checked: str


PRICES_AS_OF = "2026-12-04"
S3_CLASS_A = Price(
    0.005,
    "per 1,000 PUT, COPY, POST, LIST requests (S3 Standard)",
    "confirmed: c3x.dev/blog/s3-request-fees-explained, cloudkaramchari.com (source page "
    "aws.amazon.com/s3/pricing renders its cells by script)",
)
S3_CLASS_B = Price(
    0.0004,
    "per 1,000 GET, HEAD and all other requests (S3 Standard)",
    "confirmed: c3x.dev/blog/s3-request-fees-explained (same source page)",
)
INTER_REGION_TRANSFER = Price(
    0.02,
    "per GB, S3 to another US region",
    "confirmed: repost.aws/articles/ARjzluyMS8RbeOOK4MGXRG6Q (verified Jan 2026), bitsand.cloud",
)
DYNAMODB_WRITE = Price(
    0.625,
    "per million DynamoDB on-demand write request units",
    "confirmed: airbyte.com/data-engineering-resources/dynamodb-pricing (after the Nov 2024 50% cut, "
    "AWS News Blog post updated 2025-01-31)",
)
DYNAMODB_READ = Price(
    0.125,
    "per million DynamoDB on-demand read request units",
    "confirmed: same page as the write price",
)
SQS_STANDARD = Price(
    0.40,
    "per million SQS requests, standard queue (each 64 KB chunk a request)",
    "confirmed: cloudburn.io/blog/amazon-sqs-pricing (March 2026), factualminds.com (June 2026)",
)
LAMBDA_ARM_GB_SECOND = Price(
    0.0000133334,
    "per Lambda GB-second, Arm, first 7.5 billion GB-s a month",
    "confirmed: cloudchipr.com/blog/aws-lambda-pricing (source page aws.amazon.com/lambda/pricing)",
)
LAMBDA_X86_GB_SECOND = Price(
    0.0000166667,
    "per Lambda GB-second, x86, first 6 billion GB-s a month",
    "confirmed: cloudchipr.com/blog/aws-lambda-pricing",
)
LAMBDA_REQUESTS = Price(
    0.20,
    "per million Lambda requests",
    "confirmed: git.mcrn.ar lambda cost notes, kodekloud (source page aws.amazon.com/lambda/pricing)",
)
STEP_FUNCTIONS_STANDARD = Price(
    0.025,
    "per 1,000 Step Functions Standard state transitions",
    "confirmed: aws.amazon.com/step-functions/pricing (US East (N. Virginia) $0.0250)",
)
# Comparisons. S3 Replication bills the replica's PUT (one class A request per object) plus the transfer.
DATA_TRANSFER_HUB_PER_MILLION = Price(
    10.4,
    "per million small objects, AWS Data Transfer Hub",
    "NOT confirmed: issue 13's figure; no published source was found by search on 2026-12-04",
)
PRICE_TABLE = (
    S3_CLASS_A,
    S3_CLASS_B,
    INTER_REGION_TRANSFER,
    DYNAMODB_WRITE,
    DYNAMODB_READ,
    SQS_STANDARD,
    LAMBDA_ARM_GB_SECOND,
    LAMBDA_X86_GB_SECOND,
    LAMBDA_REQUESTS,
    STEP_FUNCTIONS_STANDARD,
    DATA_TRANSFER_HUB_PER_MILLION,
)

# ---- the targets --------------------------------------------------------------------------------
TARGET_BACKFILL_RATIO_AT_8 = 6.0
TARGET_BACKFILL_REQUESTS_PER_OBJECT = 1.1
TARGET_LIVE_RATIO = 6.0
TARGET_LIVE_USD_PER_MILLION = 6.0
TARGET_BILLION_HOURS = 24.0
# docs/performance.md, "A batch applied concurrently": at 50 PutObject/s, 1000 objects, --latency-ms 10,60
# --no-iam, MaximumConcurrency 2, one record at a time ("1 (before)"), p99 was 52.9 s.
P99_BEFORE_MS = 52_900.0
P99_RUN = {"objects": 1000, "rate": 50.0, "concurrency": 2}

# ---- what a request costs, by kind ------------------------------------------------------------------------
# S3 bills DELETE and the abort of a multipart upload nothing; GET, HEAD and the other reads are class B;
# every write and every LIST is class A (https://aws.amazon.com/s3/pricing/, "Requests & data retrievals").
S3_FREE_PREFIXES = ("Delete", "Abort")
S3_CLASS_B_PREFIXES = ("Get", "Head")


def s3_request_class(operation: str) -> str:
    """'A', 'B' or 'free': how S3 prices one request of ``operation`` (a boto3 operation name)."""
    if operation.startswith(S3_FREE_PREFIXES):
        return "free"
    if operation.startswith(S3_CLASS_B_PREFIXES):
        return "B"
    return "A"


@dataclass(frozen=True)
class Usage:
    """What replicating or backfilling one object consumes, in the units AWS bills."""

    s3_class_a: float = 0.0
    s3_class_b: float = 0.0
    transfer_gb: float = 0.0
    dynamodb_write_units: float = 0.0
    dynamodb_read_units: float = 0.0
    sqs_requests: float = 0.0
    lambda_gb_seconds: float = 0.0
    lambda_requests: float = 0.0
    state_transitions: float = 0.0
    lambda_arm: bool = True


# The lines any replicator pays for a copy across regions: what a cost target cannot be met without.
ANY_REPLICATOR_PAYS = ("S3 PUT/COPY/LIST requests", "inter-region transfer")
# A page is recorded by one TransactWriteItems of the range and its worker's tally: 2 write units per item.
JOB_WRITE_UNITS_PER_PAGE = 4.0


def cost_per_million(usage: Usage) -> dict[str, float]:
    """USD per million objects, by line of the bill (in print order)."""
    lambda_price = LAMBDA_ARM_GB_SECOND if usage.lambda_arm else LAMBDA_X86_GB_SECOND
    return {
        "S3 PUT/COPY/LIST requests": usage.s3_class_a * MILLION / 1000 * S3_CLASS_A.usd,
        "S3 GET/HEAD requests": usage.s3_class_b * MILLION / 1000 * S3_CLASS_B.usd,
        "inter-region transfer": usage.transfer_gb * MILLION * INTER_REGION_TRANSFER.usd,
        "DynamoDB writes": usage.dynamodb_write_units * DYNAMODB_WRITE.usd,
        "DynamoDB reads": usage.dynamodb_read_units * DYNAMODB_READ.usd,
        "SQS requests": usage.sqs_requests * SQS_STANDARD.usd,
        "Lambda duration": usage.lambda_gb_seconds * MILLION * lambda_price.usd,
        "Lambda requests": usage.lambda_requests * LAMBDA_REQUESTS.usd,
        "Step Functions transitions": usage.state_transitions * MILLION / 1000 * STEP_FUNCTIONS_STANDARD.usd,
    }


def s3_replication_per_million(object_bytes: int = OBJECT_BYTES) -> dict[str, float]:
    """S3 Replication's bill per million objects: the replica's PUT and the inter-region transfer."""
    return cost_per_million(Usage(s3_class_a=1.0, transfer_gb=object_bytes / 2**30))


def ledger_floor_per_million(object_bytes: int = OBJECT_BYTES) -> dict[str, float]:
    """The least a live copy costs with a per-key ledger, before any read, receive or compute: the copy, its
    transfer, S3's SendMessage of the notification and one on-demand DynamoDB write, the ledger's record of
    the sequencer applied (DESIGN.md section 3.2: what fences duplicates and out-of-order events)."""
    return cost_per_million(
        Usage(s3_class_a=1.0, transfer_gb=object_bytes / 2**30, sqs_requests=1.0, dynamodb_write_units=1.0)
    )


def split_requests(per_object: Mapping[str, float]) -> tuple[float, float, float, float]:
    """(S3 class A, S3 class B, DynamoDB writes, DynamoDB reads) per object from ``<service>:<op>``
    counts per object. A DynamoDB request is counted as one request unit: crr's items are under 1 KB
    (a write unit) and 4 KB (a strongly consistent read unit); a transaction costs two units per item."""
    class_a = class_b = writes = reads = 0.0
    for name, count in per_object.items():
        service, _, operation = name.partition(":")
        if service == "s3":
            kind = s3_request_class(operation)
            class_a += count if kind == "A" else 0.0
            class_b += count if kind == "B" else 0.0
        elif service == "dynamodb" and operation in replicate.DYNAMODB_WRITES:
            writes += count * (2 if operation == "TransactWriteItems" else 1)
        elif service == "dynamodb" and operation in ("GetItem", "BatchGetItem", "Query"):
            reads += count
    return class_a, class_b, writes, reads


def sqs_requests_per_live_object(batch: int) -> float:
    """S3's SendMessage of the notification, then the event source's ReceiveMessage (at most 10 messages
    a call) and DeleteMessageBatch (at most 10 entries) of its batch. The event source's empty long polls
    of an idle queue are not per object and are left out."""
    calls_per_batch = math.ceil(batch / 10)
    return 1.0 + 2 * calls_per_batch / batch


def live_usage(
    requests_per_object: Mapping[str, float], lambda_ms_per_object: float, *, batch: int, memory_mb: int, arm: bool
) -> Usage:
    class_a, class_b, writes, reads = split_requests(requests_per_object)
    return Usage(
        s3_class_a=class_a,
        s3_class_b=class_b,
        transfer_gb=OBJECT_BYTES / 2**30,
        dynamodb_write_units=writes,
        dynamodb_read_units=reads,
        sqs_requests=sqs_requests_per_live_object(batch),
        lambda_gb_seconds=lambda_ms_per_object / 1000 * memory_mb / 1024,
        lambda_requests=1 / batch,
        lambda_arm=arm,
    )


@dataclass(frozen=True)
class BackfillUsageInputs:
    """A backfill's measured or modelled consumption, per object."""

    s3_per_object: Mapping[str, float]  # "s3:<op>" → requests / object, as the clients counted them
    ledger_writes: float  # conditional PutItem per object
    ledger_reads: float  # items read by BatchGetItem per object (one read unit each)
    job_write_units_per_page: float  # the range and the worker's tally, updated in one transaction per page
    objects_per_page: float
    lambda_seconds_per_object: float
    lambda_invocations_per_page: float
    transitions_per_page: int


def backfill_usage(inputs: BackfillUsageInputs, *, memory_mb: int, arm: bool) -> Usage:
    class_a, class_b, _, _ = split_requests(inputs.s3_per_object)
    return Usage(
        s3_class_a=class_a,
        s3_class_b=class_b,
        transfer_gb=OBJECT_BYTES / 2**30,
        dynamodb_write_units=inputs.ledger_writes + inputs.job_write_units_per_page / inputs.objects_per_page,
        dynamodb_read_units=inputs.ledger_reads,
        lambda_gb_seconds=inputs.lambda_seconds_per_object * memory_mb / 1024,
        lambda_requests=inputs.lambda_invocations_per_page / inputs.objects_per_page,
        state_transitions=inputs.transitions_per_page / inputs.objects_per_page,
        lambda_arm=arm,
    )


def over_target(lines: Mapping[str, float], target: float, *, kept: Iterable[str]) -> list[tuple[str, float]]:
    """The lines beyond ``kept`` (the ones any replicator pays, e.g. the copy itself and its transfer),
    largest first, that together make up how far ``lines`` total above ``target``; [] when at or under."""
    excess = sum(lines.values()) - target
    if excess <= 0:
        return []
    kept_lines = set(kept)
    found: list[tuple[str, float]] = []
    for name, usd in sorted(lines.items(), key=lambda item: -item[1]):
        if name in kept_lines or usd <= 0:
            continue
        found.append((name, usd))
        excess -= usd
        if excess <= 0:
            break
    return found


# ---- the projection ---------------------------------------------------------------------------------------
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html: at least 3,500
# PUT/COPY/POST/DELETE and 5,500 GET/HEAD requests per second per partitioned prefix.
S3_COPIES_PER_SECOND_PER_PREFIX = 3500
# A 1000-key ListObjectsV2 page takes ~0.3 s (issue 13): one lister per range tops out near 3,300 keys/s.
LISTED_KEYS_PER_SECOND_PER_RANGE = 1000 / 0.3
# docs/performance.md: a boto3 request costs 1.0-1.3 ms of one core; Lambda gives one vCPU at 1,769 MB.
CPU_SECONDS_PER_COPY = 0.0012
MB_PER_VCPU = 1769


@dataclass(frozen=True)
class ProjectionAssumptions:
    copy_threads: int  # copies in flight per range on AWS (BackfillConcurrency's default)
    cross_region_copy_seconds: float  # one CopyObject's round trip
    efficiency: float  # the measured share of threads / latency one range reached on this machine
    memory_mb: int  # the BackfillFunction's MemorySize

    def latency_bound(self) -> float:
        return self.efficiency * self.copy_threads / self.cross_region_copy_seconds

    def cpu_bound(self) -> float:
        return (self.memory_mb / MB_PER_VCPU) / CPU_SECONDS_PER_COPY

    def per_range_rate(self) -> float:
        """Objects/s of one range on AWS: the least of what its copy threads wait for, what its share of a
        vCPU can issue, and what one lister can list."""
        return min(self.latency_bound(), self.cpu_bound(), LISTED_KEYS_PER_SECOND_PER_RANGE)


def job_rate(per_range: float, ranges: int) -> float:
    return per_range * ranges


def hours_to_backfill(objects: float, rate_per_second: float) -> float:
    return objects / rate_per_second / 3600


def prefixes_needed(rate_per_second: float) -> int:
    """Partitioned destination prefixes S3 needs to absorb ``rate_per_second`` copies."""
    return max(1, math.ceil(rate_per_second / S3_COPIES_PER_SECOND_PER_PREFIX))


# ---- what the template and the state machine say ------------------------------------------------------


@dataclass(frozen=True)
class TemplateFacts:
    replicate_memory_mb: int
    backfill_memory_mb: int
    arm: bool
    default_ranges: int
    max_ranges: int | None  # BackfillMaxRanges' MaxValue; None when the template has no such parameter
    default_copy_threads: int


def template_facts(template: Mapping[str, Any]) -> TemplateFacts:
    function_globals = template.get("Globals", {}).get("Function", {})
    resources, parameters = template["Resources"], template.get("Parameters", {})

    def memory(name: str) -> int:
        return int(resources[name]["Properties"].get("MemorySize", function_globals.get("MemorySize", 128)))

    architectures = resources["ReplicateFunction"]["Properties"].get(
        "Architectures", function_globals.get("Architectures", ["x86_64"])
    )
    max_ranges = parameters.get("BackfillMaxRanges", {})
    return TemplateFacts(
        replicate_memory_mb=memory("ReplicateFunction"),
        backfill_memory_mb=memory("BackfillFunction"),
        arm=architectures == ["arm64"],
        default_ranges=8,
        max_ranges=int(max_ranges["MaxValue"]) if "MaxValue" in max_ranges else None,
        default_copy_threads=int(parameters.get("BackfillConcurrency", {}).get("Default", 32)),
    )


def _states(definition: Mapping[str, Any]) -> Iterable[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(states, name, state) of a definition and of every Map's processor inside it."""
    states = definition.get("States", {})
    for name, state in states.items():
        yield states, name, state
        for inner in ("ItemProcessor", "Iterator"):
            if inner in state:
                yield from _states(state[inner])


def transitions_per_page(definition: Mapping[str, Any]) -> int:
    """State transitions a page costs in steady state: from the state that runs the copy_page step,
    following Next (a Choice's Default: another page of the same range) until it runs again."""
    for states, name, state in _states(definition):
        payload = state.get("Parameters", {}).get("Payload", {})
        if payload.get("action") != "copy_page":
            continue
        transitions, current = 0, name
        while transitions < len(states):
            transitions += 1
            step = states[current]
            current = step.get("Next") or step.get("Default")
            if current is None or current == name:
                return transitions
        raise ValueError(f"the page loop from {name} does not come back to it")
    raise ValueError("no state runs the copy_page step")


# ---- the last line ----------------------------------------------------------------------------------------


def last_line(backfill_ratio: float | None, live_ratio: float | None, live_usd_per_million: float | None) -> str:
    def number(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    return (
        f"scale: backfill {number(backfill_ratio, 1)}x at 8 ranges, live {number(live_ratio, 1)}x per invocation, "
        f"{number(live_usd_per_million, 2)} USD per million objects"
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# ---- measurements -----------------------------------------------------------------------------------------


@dataclass
class LiveFigures:
    rows: list[replicate.InvocationFigures] = field(default_factory=list)
    stream: replicate.StreamFigures | None = None

    def row(self, batch: int, record_concurrency: int) -> replicate.InvocationFigures | None:
        return next(
            (r for r in self.rows if r.batch == batch and r.record_concurrency == record_concurrency),
            None,
        )

    def ratio(self, batch: int = 10) -> tuple[float, float] | None:
        """(objects/s per invocation, Lambda ms per object) of 10 at once over one at a time."""
        sequential, parallel = self.row(batch, 1), self.row(batch, 10)
        if sequential is None or parallel is None or not sequential.objects_per_second:
            return None
        return (
            parallel.objects_per_second / sequential.objects_per_second,
            sequential.lambda_ms_per_object / max(parallel.lambda_ms_per_object, 1e-9),
        )


def median_round(rounds: list[replicate.InvocationFigures]) -> replicate.InvocationFigures:
    """The round whose objects/s per invocation is the median (the lower middle of an even count)."""
    ordered = sorted(rounds, key=lambda figures: figures.objects_per_second)
    return ordered[(len(ordered) - 1) // 2]


def measure_live(objects: int, batches: list[tuple[int, list[int]]], *, p99: bool, rounds: int = 1) -> LiveFigures:
    """Each setting ``rounds`` times, the settings interleaved within a round so that the other load on
    this machine, which drifts over minutes, weighs on each alike; the median round of each is kept."""
    settings = [(batch, record_concurrency) for batch, concurrencies in batches for record_concurrency in concurrencies]
    measured: dict[tuple[int, int], list[replicate.InvocationFigures]] = {setting: [] for setting in settings}
    for round_number in range(1, rounds + 1):
        for batch, record_concurrency in settings:
            print(
                f"  measuring: batch {batch}, {record_concurrency} record(s) at once, round {round_number}/{rounds}"
                " ...",
                flush=True,
            )
            measured[(batch, record_concurrency)].append(
                replicate.measure_invocations(objects, batch, record_concurrency, enforce_iam=False, latency=LATENCY)
            )
    figures = LiveFigures(rows=[median_round(measured[setting]) for setting in settings])
    if p99:
        print(f"  measuring: put → replica at {P99_RUN['rate']:g}/s ...", flush=True)
        figures.stream = replicate.measure_stream(
            int(P99_RUN["objects"]),
            P99_RUN["rate"],
            OBJECT_BYTES,
            180.0,
            int(P99_RUN["concurrency"]),
            enforce_iam=False,
            latency=LATENCY,
        )
    return figures


def print_live(figures: LiveFigures, objects: int) -> None:
    print(
        f"\n== live path: ReplicateFunction per invocation ({objects} x 1 KiB objects, local cloud, IAM off;"
        " the median round of each setting) =="
    )
    print(
        "  batch | window | records at once | ms/invocation | objects/s per invocation | Lambda ms/object |"
        " S3 req/object | DynamoDB writes/object | GetItem/object"
    )
    for row in figures.rows:
        window = "1 s" if row.batch > 10 else "0"
        print(
            f"  {row.batch:>5} | {window:>6} | {row.record_concurrency:>15} | {row.ms_per_invocation:>13.0f} |"
            f" {row.objects_per_second:>24.1f} | {row.lambda_ms_per_object:>16.1f} | {row.s3_per_object:>13.3f} |"
            f" {row.dynamodb_writes_per_object:>22.3f} | {row.dynamodb_reads_per_object:>14.3f}"
        )
    for batch in sorted({row.batch for row in figures.rows}):
        if (ratio := figures.ratio(batch)) is not None:
            print(
                f"  batch {batch}: 10 at once is {ratio[0]:.1f}x the objects/s per invocation of one at a time,"
                f" Lambda ms per object / {ratio[1]:.1f}"
            )
    if figures.stream is not None:
        stream = figures.stream
        p50, p95, p99 = (stream.percentile_ms(f) for f in (0.5, 0.95, 0.99))
        print(
            f"  put → replica at {P99_RUN['rate']:g} PutObject/s, {stream.objects} objects, RecordConcurrency 10"
            f" (default), MaximumConcurrency {P99_RUN['concurrency']} (as the before figure):"
            f" {stream.objects_per_second:.1f} objects/s; {_ms(p50)} p50, {_ms(p95)} p95, {_ms(p99)} p99"
        )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


@dataclass(frozen=True)
class BackfillRun:
    ranges: int
    objects: int
    seconds: float
    s3_per_object: dict[str, float]
    ledger_writes_per_object: float
    ledger_reads_per_object: float
    pages: int
    active_seconds: float
    steps: dict[str, int]
    ranges_made: int = 0

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds

    @property
    def s3_requests_per_object(self) -> float:
        return sum(self.s3_per_object.values())

    @property
    def busy(self) -> float:
        """The share of the workers' time spent in page steps (the rest: waiting for a range)."""
        return self.active_seconds / (self.seconds * self.ranges)


class CountingLedger(FakeLedger):
    """The in-memory ledger, also counting the items the backfill reads a page at a time (BatchGetItem:
    one read unit per item on AWS)."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_read_items = 0
        self._count_lock = threading.Lock()

    def read_many(self, rule_id: str, keys: list[str]) -> dict[str, Any]:
        with self._count_lock:
            self.batch_read_items += len(keys)
        return super().read_many(rule_id, keys)


class RangeEngines:
    """One engine per worker thread, each with its own pool of ``copy_threads``, as each range's Lambda
    has its own: on one shared pool a range alone would borrow every idle thread, and the measured ratio
    would be the pool's size, not the fan-out's."""

    def __init__(self, make: Callable[[], BackfillEngine]) -> None:
        self._make = make
        self._engines: dict[int, BackfillEngine] = {}
        self._lock = threading.Lock()
        self._exits = ExitStack()

    def mine(self) -> BackfillEngine:
        with self._lock:
            worker = threading.get_ident()
            if worker not in self._engines:
                self._engines[worker] = self._exits.enter_context(self._make())
            return self._engines[worker]

    def __enter__(self) -> RangeEngines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._exits.close()


@dataclass(frozen=True)
class PerRangeSteps(BackfillSteps):
    """The workflow's steps, each worker's pages copied on its own engine (``RangeEngines``), counting the
    steps run by action (each one a Lambda invocation on AWS)."""

    engines: RangeEngines | None = None
    counted: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, step: Any, *args: Any, **kwargs: Any) -> StepResult:
        with self.lock:
            self.counted[step.action] += 1
        return super().run(step, *args, **kwargs)

    def copy_page(self, request: PageRequest, remaining_seconds: Callable[[], float]) -> PageResult:
        if self.engines is None:
            return super().copy_page(request, remaining_seconds)
        return BackfillSteps.copy_page(replace(self, engine=self.engines.mine()), request, remaining_seconds)


def measure_backfill_run(
    server: SeaweedFS, objects: int, ranges: int, copy_threads: int, page_size: int, *, pages: int | None = None
) -> BackfillRun:  # pragma: no cover - needs SeaweedFS
    """A job over the whole source at ``ranges`` workers, to its end, or for ``pages`` pages per worker."""
    destination = f"bench-scale-{ranges}-ranges"
    server.create_bucket(destination)
    counts: Counter[str] = Counter()
    clients = ClientFactory(session=backfill_bench.counting_session(server, counts, LATENCY, destination))
    # The whole bucket, not one range per prefix: the ranges come from probing and splitting alone.
    rule = backfill_bench.bench_rule(destination, 0)
    ledger = CountingLedger()
    jobs = FakeBackfillJobs(clock=lambda: datetime.now(UTC))
    job = BackfillJob.start(rule, at=datetime.now(UTC), page_size=page_size, workers=ranges)
    jobs.create(job)
    listing = S3Listing(clients)

    def engine() -> BackfillEngine:
        return backfill_bench.make_engine(clients, listing, ledger, rule, copy_threads)

    # The plan's probes run on a shared engine; each worker's pages on its own (RangeEngines).
    with engine() as planner, RangeEngines(engine) as engines:
        steps = PerRangeSteps(planner, jobs, FakeRules(rule), max_workers=MAX_WORKERS, engines=engines)
        started = time.perf_counter()
        finished = run_fanned_out(steps, job, workers=ranges, steps_per_worker=pages)
        seconds = time.perf_counter() - started
    copied = backfill_bench.empty(server, destination)
    expected = objects if pages is None else finished.totals.listed
    if copied != expected or finished.totals.listed != expected:
        raise RuntimeError(f"{ranges} ranges: listed {finished.totals.listed}, copied {copied} of {expected}")
    objects = expected
    page_steps = ("claim", "copy_page", "record_page", "release")
    return BackfillRun(
        ranges=ranges,
        objects=objects,
        seconds=seconds,
        s3_per_object={f"s3:{op}": n / objects for op, n in counts.items()},
        ledger_writes_per_object=ledger.writes / objects,
        ledger_reads_per_object=ledger.batch_read_items / objects,
        pages=finished.pages,
        active_seconds=finished.active_seconds,
        steps={action: n for action, n in steps.counted.items() if action in page_steps},
        ranges_made=finished.ranges_made,
    )


# The 1-range baseline copies at most this many pages (or half the job): its rate is steady from the first
# page, so the rest of a large job would only lengthen the run.
ONE_RANGE_PAGES = 48
# Objects in the backfill's source. A fanned-out job starts (the plan's probes, the first splits) and ends
# (its last ranges) with workers idle; on a real backfill of millions of objects both are a few pages of
# thousands, so full mode gives each of 8 workers about 36 pages (36,000 objects in pages of 125), where the
# start and the end weigh about as much as their share of a large job. Quick mode's 4,000 give them 4.
QUICK_BACKFILL_OBJECTS = 4000
FULL_BACKFILL_OBJECTS = 36_000


def measure_backfill(
    objects: int, fan_outs: list[int], copy_threads: int, page_size: int
) -> list[BackfillRun]:  # pragma: no cover - needs SeaweedFS
    keys = backfill_bench.source_keys(objects, 50)
    runs: list[BackfillRun] = []
    shm = backfill_bench.SHM if backfill_bench.SHM.is_dir() else None
    with (
        tempfile.TemporaryDirectory(prefix="crr-bench-scale-", dir=shm) as scratch,
        running_seaweedfs(Path(scratch) / "seaweedfs") as server,
    ):
        server.create_bucket(backfill_bench.SOURCE)
        print(f"  uploading {objects} objects of 1 KiB under 50 prefixes to SeaweedFS ...", flush=True)
        backfill_bench.upload(server, keys, OBJECT_BYTES)
        backfill_bench.warm_up(server, keys)
        for ranges in fan_outs:
            # One worker copies page after page at a steady rate: a share of the job measures it in less time.
            pages = min(math.ceil(objects / page_size / 2), ONE_RANGE_PAGES) if ranges == 1 else None
            print(f"  measuring: {ranges} range(s){f' ({pages} pages)' if pages else ''} ...", flush=True)
            runs.append(measure_backfill_run(server, objects, ranges, copy_threads, page_size, pages=pages))
    return runs


def print_backfill(runs: list[BackfillRun], copy_threads: int, page_size: int) -> None:
    print(
        f"\n== backfill: fanned out over ranges (SeaweedFS, {copy_threads} copy threads per range, pages of"
        f" {page_size}, the whole bucket as one rule: no ranges known in advance) =="
    )
    print(
        f"  why {copy_threads} copy threads per range (each range its own engine and pool): on AWS each range is a"
        " Lambda with its own CPU, waiting on latency; here 2 cores serve every range and the server, so 8 x 32"
        " threads would measure this machine's CPU. The ratio is what fan-out buys when each range waits on"
        " latency."
    )
    print(
        f"  why pages of {page_size}: a range splits after a page, so the page's duration sets how soon idle"
        f" workers get work; {page_size} keys at {copy_threads} threads take as long as 1000 at"
        f" {DEFAULT_COPY_THREADS} on AWS."
    )
    if not runs:
        print("  not measured (--no-backfill)")
        return
    eight = next((run for run in runs if run.ranges == 8), runs[-1])
    print(
        f"  why {eight.objects} objects: {eight.pages / eight.ranges:.0f} pages per worker at {eight.ranges} ranges;"
        " the job's start (the plan's probes, the first splits) and its last ranges leave workers idle for a few"
        " pages whatever the job's size, so a small job understates what fan-out gives a backfill of millions"
        f" (the 1-range baseline copies at most {ONE_RANGE_PAGES} pages: its rate is steady)"
    )
    base = runs[0].objects_per_second
    print(
        "  ranges | objects | seconds | objects/s | vs 1 range | S3 req/object | pages | ranges made | busy |"
        " s/page | S3 requests per object"
    )
    for run in runs:
        ops = " ".join(f"{name.split(':', 1)[1]}={n:.4f}" for name, n in sorted(run.s3_per_object.items()))
        print(
            f"  {run.ranges:>6} | {run.objects:>7} | {run.seconds:>7.1f} | {run.objects_per_second:>9.0f} |"
            f" {run.objects_per_second / base:>9.1f}x | {run.s3_requests_per_object:>13.3f} | {run.pages:>5} |"
            f" {run.ranges_made:>11} | {run.busy:>4.0%} | {run.active_seconds / max(run.pages, 1):>6.2f} | {ops}"
        )
    print(
        "  busy: the workers' share of time in page steps (the rest they wait for a range to be split off);"
        " s/page: a page step's time (it grows when this machine's CPU binds, not latency)"
    )


def backfill_ratio_at(runs: list[BackfillRun], ranges: int) -> float | None:
    base = next((run for run in runs if run.ranges == 1), None)
    found = next((run for run in runs if run.ranges == ranges), None)
    if base is None or found is None:
        return None
    return found.objects_per_second / base.objects_per_second


# ---- report ---------------------------------------------------------------------------------------------


def print_prices() -> None:
    print(f"\n  list prices, us-east-1, checked {PRICES_AS_OF}:")
    for price in PRICE_TABLE:
        usd = f"{price.usd:.10f}".rstrip("0").rstrip(".")
        print(f"    ${usd:<13} {price.unit}  [{price.checked}]")


def cost_table(columns: Mapping[str, Mapping[str, float]]) -> list[str]:
    """The cost lines of each column side by side (USD per million objects), with a total row."""
    names = list(dict.fromkeys(name for lines in columns.values() for name in lines))
    width = max(len(title) for title in columns) + 2
    rows = ["  " + f"{'USD per million objects':<28}" + "".join(f"{title:>{width}}" for title in columns)]
    for name in [*names, "total"]:
        cells = []
        for lines in columns.values():
            usd = sum(lines.values()) if name == "total" else lines.get(name, 0.0)
            cells.append(f"{usd:>{width}.3f}" if usd else f"{'-':>{width}}")
        rows.append(f"  {name:<28}" + "".join(cells))
    return rows


@dataclass
class Outcome:
    backfill_ratio: float | None = None
    live_ratio: float | None = None
    live_usd: float | None = None
    verdicts: list[tuple[str, str, bool | None]] = field(default_factory=list)


def live_cost(row: replicate.InvocationFigures, facts: TemplateFacts) -> dict[str, float]:
    usage = live_usage(
        row.requests_per_object,
        row.lambda_ms_per_object,
        batch=row.batch,
        memory_mb=facts.replicate_memory_mb,
        arm=facts.arm,
    )
    print(
        f"  assumptions (live, batch {row.batch}, RecordConcurrency {row.record_concurrency}): requests per object"
        f" as counted ({usage.s3_class_a:.3f} class A, {usage.s3_class_b:.3f} class B S3,"
        f" {usage.dynamodb_write_units:.3f} DynamoDB writes, {usage.dynamodb_read_units:.3f} reads, one unit"
        f" each); SQS {usage.sqs_requests:.2f} requests (S3's SendMessage, the event source's receive and delete"
        f" per 10); Lambda {row.lambda_ms_per_object:.1f} ms per object at {facts.replicate_memory_mb} MB"
        f" {'arm64' if facts.arm else 'x86_64'}, {usage.lambda_requests:.2f} invocations per object"
    )
    return cost_per_million(usage)


def at_page_size(per_object: Mapping[str, float], objects_per_page: float, page_size: int) -> dict[str, float]:
    """S3 requests per object as they would be in pages of ``page_size``: CopyObject is made per object,
    every other request (the listings, the bucket's settings) per page."""
    return {
        name: count if name == "s3:CopyObject" else count * objects_per_page / page_size
        for name, count in per_object.items()
    }


def backfill_cost(run: BackfillRun, facts: TemplateFacts, per_range_rate: float) -> dict[str, float]:
    """Priced as on AWS: the requests per page counted here spread over the product's pages of 1000, and
    the Lambda time per object the projection's per-range rate gives (the bench's small pools and pages
    are there to measure the fan-out's ratio, not a Lambda's duration)."""
    try:
        transitions, where = transitions_per_page(json.loads(BACKFILL_ASL.read_text())), "its page loop"
    except ValueError as unreadable:
        # The design's loop: CopyPage, RecordProgress, More?, the step count, CopyPage again.
        transitions, where = 4, f"the design's loop; the file's could not be walked: {unreadable}"
    pages = max(run.pages, 1)
    objects_per_page = run.objects / pages
    # copy_page, record_page and release as counted, and one claim per range: the idle polls of a worker
    # waiting for a range (the state machine's 1 s Wait, 50 ms in the runner) are left out.
    counted = sum(n for action, n in run.steps.items() if action != "claim")
    invocations = (counted + run.ranges_made) / pages if run.steps else 2.0
    s3 = at_page_size(run.s3_per_object, objects_per_page, DEFAULT_PAGE_SIZE)
    inputs = BackfillUsageInputs(
        s3_per_object=s3,
        ledger_writes=run.ledger_writes_per_object,
        ledger_reads=run.ledger_reads_per_object,
        job_write_units_per_page=JOB_WRITE_UNITS_PER_PAGE,
        objects_per_page=DEFAULT_PAGE_SIZE,
        lambda_seconds_per_object=1 / per_range_rate,
        lambda_invocations_per_page=invocations,
        transitions_per_page=transitions,
    )
    print(
        f"  assumptions (backfill, from the {run.ranges}-range run, in pages of {DEFAULT_PAGE_SIZE} as on AWS):"
        f" S3 {sum(s3.values()):.4f} requests per object ({run.s3_requests_per_object:.4f} counted in pages of"
        f" {objects_per_page:.0f}: the per-page ones spread over {DEFAULT_PAGE_SIZE}); ledger"
        f" {run.ledger_writes_per_object:.3f} writes and {run.ledger_reads_per_object:.3f} item reads per object"
        f" as counted; {JOB_WRITE_UNITS_PER_PAGE:g} write units per page (one transaction of the range and its"
        f" worker's tally, 2 units per item: modelled, the job store is in memory); {invocations:.1f} Lambda"
        f" invocations and {transitions} state transitions per page (statemachine/backfill.asl.json, {where}; idle"
        f" polls left out); Lambda {1000 / per_range_rate:.2f} ms per object at {facts.backfill_memory_mb} MB (the"
        f" projection's {per_range_rate:.0f} objects/s per range; {run.active_seconds / run.objects * 1000:.1f} ms"
        " measured here with the bench's small pool)"
    )
    return cost_per_million(backfill_usage(inputs, memory_mb=facts.backfill_memory_mb, arm=facts.arm))


def projection_assumptions(
    runs: list[BackfillRun], facts: TemplateFacts, copy_threads: int
) -> tuple[ProjectionAssumptions, str]:
    """The assumptions of a range on AWS, and how the efficiency was found."""
    cross_seconds = LATENCY.cross_region_ms / 1000
    base = next((run for run in runs if run.ranges == 1), None)
    if base is None:
        efficiency, measured = 1.0, "no 1-range rate measured: threads / latency alone"
    else:
        ideal = copy_threads / cross_seconds
        efficiency = min(base.objects_per_second / ideal, 1.0)
        measured = (
            f"1 range measured {base.objects_per_second:.0f} objects/s of {copy_threads} / {cross_seconds * 1000:g}"
            f" ms = {ideal:.0f}"
        )
    assumptions = ProjectionAssumptions(
        copy_threads=facts.default_copy_threads,
        cross_region_copy_seconds=cross_seconds,
        efficiency=efficiency,
        memory_mb=facts.backfill_memory_mb,
    )
    return assumptions, measured


def report_cost(live: LiveFigures, runs: list[BackfillRun], facts: TemplateFacts, per_range_rate: float) -> Outcome:
    outcome = Outcome()
    print("\n== cost per million 1 KiB objects ==")
    print_prices()
    print()
    columns: dict[str, Mapping[str, float]] = {}
    if (default_row := live.row(10, 10)) is not None:
        lines = columns["crr live"] = live_cost(default_row, facts)
        outcome.live_usd = sum(lines.values())
        difference = over_target(lines, TARGET_LIVE_USD_PER_MILLION, kept=ANY_REPLICATOR_PAYS)
        floor = sum(ledger_floor_per_million().values())
        outcome.verdicts.append(
            (
                f"live <= ${TARGET_LIVE_USD_PER_MILLION:.2f} per million, all-in: ${outcome.live_usd:.2f}",
                ""
                if not difference
                else f"over by ${outcome.live_usd - TARGET_LIVE_USD_PER_MILLION:.2f}: beyond the copy and its"
                " transfer, "
                + ", ".join(f"{name} ${usd:.2f}" for name, usd in difference)
                + f"; the copy, its notification and one on-demand ledger write alone are ${floor:.2f}",
                outcome.live_usd <= TARGET_LIVE_USD_PER_MILLION,
            )
        )
    if (batch_50 := live.row(50, 10)) is not None:
        columns["crr live b50"] = live_cost(batch_50, facts)
    eight = next((run for run in runs if run.ranges == 8), runs[-1] if runs else None)
    if eight is not None:
        columns["crr backfill"] = backfill_cost(eight, facts, per_range_rate)
    columns["S3 Replication"] = s3_replication_per_million()
    print()
    for row in cost_table(columns):
        print(row)
    print("  S3 Replication: the replica's PUT and the transfer; crr's S3 PUT/COPY line is its CopyObject")
    print_ledger_floor()
    print(
        f"  AWS Data Transfer Hub: {DATA_TRANSFER_HUB_PER_MILLION.usd:.2f} USD per million small objects"
        f"  [{DATA_TRANSFER_HUB_PER_MILLION.checked}]"
    )
    return outcome


def print_ledger_floor() -> None:
    """The least a live copy with a per-key ledger costs, line by line, against the target."""
    floor = ledger_floor_per_million()
    total = sum(floor.values())
    named = {
        "S3 PUT/COPY/LIST requests": "CopyObject",
        "inter-region transfer": "transfer",
        "DynamoDB writes": "one on-demand ledger write",
        "SQS requests": "S3's SendMessage of the notification",
    }
    parts = ", ".join(f"{named[name]} ${usd:.3f}" for name, usd in floor.items() if usd)
    verdict_text = "over" if total > TARGET_LIVE_USD_PER_MILLION else "under"
    print(
        f"  floor of a live copy with a per-key ledger: ${total:.2f} ({parts}), {verdict_text} the"
        f" ${TARGET_LIVE_USD_PER_MILLION:.0f} target before the event source's receives, Lambda and the source"
        f" read that fidelity needs (metadata, headers, storage class and encryption, which an event record does"
        f" not carry: ${S3_CLASS_B.usd * MILLION / 1000:.2f})"
    )


def report_projection(
    assumptions: ProjectionAssumptions,
    measured: str,
    facts: TemplateFacts,
    outcome: Outcome,
    fan_out_share: float | None = None,
) -> None:
    """``fan_out_share``: the measured rate at 8 ranges over 8 x the 1-range rate, for a second, cautious
    figure beside the one that takes ranges as independent (each its own Lambda, always given work)."""
    print("\n== projection: hours to backfill on AWS ==")
    cross_seconds = assumptions.cross_region_copy_seconds
    efficiency = assumptions.efficiency
    per_range = assumptions.per_range_rate()
    print(
        f"  per range, computed as copy threads / latency x the efficiency measured here, capped by CPU and"
        f" listing: {facts.default_copy_threads} threads (BackfillConcurrency) / {cross_seconds * 1000:g} ms x"
        f" {efficiency:.2f} ({measured}) = {assumptions.latency_bound():.0f}/s; CPU: {facts.backfill_memory_mb} MB"
        f" / {MB_PER_VCPU} MB per vCPU / {CPU_SECONDS_PER_COPY * 1000:.1f} ms per copy ="
        f" {assumptions.cpu_bound():.0f}/s; one lister: {LISTED_KEYS_PER_SECOND_PER_RANGE:.0f} keys/s."
        f" So {per_range:.0f} objects/s per range"
    )
    print(
        f"  S3 absorbs {S3_COPIES_PER_SECOND_PER_PREFIX} COPY/s per partitioned prefix"
        " (https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html): a faster job needs"
        " its keys under several prefixes, which S3 partitions as the rate grows (503 SlowDown, retried,"
        " meanwhile); each range lists on its own, so listing grows with the ranges"
    )
    maximum, max_note = facts.max_ranges, "the template's maximum, BackfillMaxRanges MaxValue"
    if maximum is None:
        maximum, max_note = 40, "BackfillMaxRanges is not in template.yaml on this branch: the design's 40"
    print(
        "  ranges are taken as independent: each is a Lambda of its own, and in a job of millions of objects"
        " splitting keeps every worker in work (the ramp-up and the last range are a few pages of thousands)"
    )
    billion_hours = math.inf
    for ranges, label in ((facts.default_ranges, "the default"), (maximum, max_note)):
        rate = job_rate(per_range, ranges)
        billion_hours = hours_to_backfill(1e9, rate)
        print(
            f"  {ranges:>3} ranges ({label}): {rate:,.0f} objects/s; 100 M objects in"
            f" {hours_to_backfill(100e6, rate):.1f} h, 1 B in {billion_hours:.1f} h; >= {prefixes_needed(rate)}"
            " partitioned destination prefix(es)"
        )
        if fan_out_share is not None:
            cautious = rate * min(fan_out_share, 1.0)
            print(
                f"      at the fan-out measured here ({fan_out_share:.0%} of 8 x 1 range, this machine's CPU and the"
                f" job's start and end included): {cautious:,.0f} objects/s;"
                f" 100 M in {hours_to_backfill(100e6, cautious):.1f} h, 1 B in {hours_to_backfill(1e9, cautious):.1f} h"
            )
    outcome.verdicts.append(
        (
            f"1 B objects backfilled <= {TARGET_BILLION_HOURS:.0f} h at {maximum} ranges: {billion_hours:.1f} h",
            "",
            billion_hours <= TARGET_BILLION_HOURS,
        )
    )


def print_targets(live: LiveFigures, runs: list[BackfillRun], outcome: Outcome) -> None:
    print("\n== targets (issue 13) ==")
    ratio = backfill_ratio_at(runs, 8)
    outcome.backfill_ratio = ratio
    eight = next((run for run in runs if run.ranges == 8), None)
    if ratio is None or eight is None:
        print(f"  backfill at 8 ranges >= {TARGET_BACKFILL_RATIO_AT_8:.0f}x 1 range: not measured")
    else:
        requests = eight.s3_requests_per_object
        print(
            f"  backfill at 8 ranges >= {TARGET_BACKFILL_RATIO_AT_8:.0f}x 1 range: {ratio:.1f}x"
            f"  {verdict(ratio >= TARGET_BACKFILL_RATIO_AT_8)}"
        )
        print(
            f"  backfill <= {TARGET_BACKFILL_REQUESTS_PER_OBJECT} S3 requests per object at 8 ranges: {requests:.3f}"
            f"  {verdict(requests <= TARGET_BACKFILL_REQUESTS_PER_OBJECT)}"
        )
    live_ratio = live.ratio(10)
    if live_ratio is None:
        print(f"  live >= {TARGET_LIVE_RATIO:.0f}x per invocation at batch 10: not measured")
    else:
        outcome.live_ratio = live_ratio[0]
        print(
            f"  live >= {TARGET_LIVE_RATIO:.0f}x objects/s per invocation at batch 10: {live_ratio[0]:.1f}x"
            f"  {verdict(live_ratio[0] >= TARGET_LIVE_RATIO)}"
        )
        print(
            f"  live Lambda ms per object down by the same factor: / {live_ratio[1]:.1f}"
            f"  {verdict(live_ratio[1] >= TARGET_LIVE_RATIO)}"
        )
    if live.stream is None:
        print("  put → replica p99 at 50/s no worse than before: not measured (full mode only)")
    else:
        p99 = live.stream.percentile_ms(0.99)
        met = p99 is not None and len(live.stream.latencies) == live.stream.objects and p99 <= P99_BEFORE_MS
        print(
            f"  put → replica p99 at 50/s <= {P99_BEFORE_MS:.0f} ms (docs/performance.md, before): {_ms(p99)}"
            f" ({len(live.stream.latencies)}/{live.stream.objects} replicated)  {verdict(met)}"
        )
    for text, note, target_met in outcome.verdicts:
        print(f"  {text}  {verdict(bool(target_met))}" + (f"  ({note})" if note else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="under 5 minutes: fewer objects, no 16 ranges, no p99")
    parser.add_argument("--copy-threads", type=int, default=4, help="copy threads per range (default 4)")
    parser.add_argument("--rounds", type=int, help="rounds of each live setting, medians kept (1 quick, 3 full)")
    parser.add_argument(
        "--no-backfill", dest="backfill", action="store_false", help="skip the backfill (no SeaweedFS needed)"
    )
    parser.add_argument(
        "--page-size",
        type=int,
        help="keys per backfill page (default 1000 x copy threads / 32: a page as long as on AWS)",
    )
    parser.add_argument(
        "--backfill-objects",
        type=int,
        help=f"objects in the backfill's source ({QUICK_BACKFILL_OBJECTS} quick, {FULL_BACKFILL_OBJECTS})",
    )
    parser.add_argument("--live-objects", type=int, help="objects per live measurement (100 quick, 300)")
    args = parser.parse_args(argv)
    page_size = args.page_size or max(1, 1000 * args.copy_threads // DEFAULT_COPY_THREADS)
    backfill_objects = args.backfill_objects or (QUICK_BACKFILL_OBJECTS if args.quick else FULL_BACKFILL_OBJECTS)
    live_objects = args.live_objects or (100 if args.quick else 300)
    fan_outs = [1, 2, 4, 8] if args.quick else [1, 2, 4, 8, 16]
    batches = [(10, [1, 10]), (50, [10])] if args.quick else [(10, [1, 10]), (50, [1, 10])]
    facts = template_facts(load_cfn_template(TEMPLATE))
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    print(
        f"bench/scale ({mode}): latency model {LATENCY.same_region_ms:g} ms same-region,"
        f" {LATENCY.cross_region_ms:g} ms cross-region; 2-core machine shared by crr, the emulators and SeaweedFS"
    )

    live = measure_live(live_objects, batches, p99=not args.quick, rounds=args.rounds or (1 if args.quick else 3))
    print_live(live, live_objects)
    runs: list[BackfillRun] = []
    if args.backfill:
        runs = measure_backfill(backfill_objects, fan_outs, args.copy_threads, page_size)
    print_backfill(runs, args.copy_threads, page_size)
    assumptions, measured = projection_assumptions(runs, facts, args.copy_threads)
    outcome = report_cost(live, runs, facts, assumptions.per_range_rate())
    ratio_at_8 = backfill_ratio_at(runs, 8)
    report_projection(assumptions, measured, facts, outcome, None if ratio_at_8 is None else ratio_at_8 / 8)
    print_targets(live, runs, outcome)
    print(f"\n({mode} run: {time.monotonic() - started:.0f} s)")
    print(last_line(outcome.backfill_ratio, outcome.live_ratio, outcome.live_usd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
