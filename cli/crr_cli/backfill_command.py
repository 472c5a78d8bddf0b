"""`crr backfill start RULE [--ranges N] [--wait]` and `crr backfill status RULE [--ranges] [--json]`: copy what
predates a rule, over up to N key ranges at once."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoBackfillJobs, DynamoRules
from crr.adapters.stepfunctions import StepFunctionsExecutions
from crr.backfill.inventory import InventoryLocation
from crr.backfill.models import (
    DEFAULT_PAGE_SIZE,
    DEFAULT_WORKERS,
    MAX_WORKERS,
    BackfillJob,
    BackfillRange,
    BackfillStatus,
    WorkKind,
)
from crr.backfill.workflow import BackfillControl, StartedBackfill
from crr.errors import CrrError, InventoryManifestError
from crr.models import MAX_PAGE_SIZE
from crr_cli.operations.status import humanize_bytes, humanize_seconds
from crr_cli.stack import CrrStack, StackNotFoundError, discover_stack

POLL_SECONDS = 1.0
# An execution that ended while its job still runs is a hand-over to the next one (continue as new) for
# a moment; only this long without a running execution means the job was interrupted.
HANDOVER_GRACE_SECONDS = 10.0
BAR_WIDTH = 30


class BackfillInterruptedError(CrrError):
    """The job's execution ended without finishing or failing the job (it was stopped)."""


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"page size must be 1-{MAX_PAGE_SIZE}, not {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _ranges(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"ranges at once must be 1-{MAX_WORKERS}, not {text}")
    return value


def _manifest(text: str) -> str:
    try:
        return str(InventoryLocation.parse(text))
    except InventoryManifestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_backfill_parser(subparsers: Any) -> None:
    backfill = subparsers.add_parser(
        "backfill",
        help="copy the objects that predate a rule (a Step Functions workflow), with progress",
        description=(
            "Copies every object under the rule's prefixes that the destination lacks or holds differently, "
            "next to live replication (it never overwrites a newer write nor brings back a deleted object). "
            "The key space is divided into ranges, split further while the job runs, and up to --ranges of "
            "them are copied at once. An interrupted or failed job resumes every range from its own cursor."
        ),
    )
    actions = backfill.add_subparsers(dest="backfill_action", required=True)
    start = actions.add_parser("start", help="start the rule's backfill, or resume its unfinished job")
    start.add_argument("rule_id", metavar="RULE")
    start.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    start.add_argument(
        "--ranges",
        type=_ranges,
        default=DEFAULT_WORKERS,
        help=f"key ranges copied at once (1-{MAX_WORKERS}, at most the stack's BackfillMaxRanges; "
        f"default {DEFAULT_WORKERS}); a resumed job takes the new number",
    )
    start.add_argument(
        "--inventory",
        type=_manifest,
        metavar="s3://BUCKET/PATH/manifest.json",
        help="copy the objects an S3 Inventory report (CSV) of the source bucket lists instead of listing it: "
        "each data file of the report is a work item, --ranges of them copied at once (the stack needs "
        "InventoryBucket=BUCKET; see docs/backfill.md)",
    )
    start.add_argument("--page-size", type=_page_size, default=DEFAULT_PAGE_SIZE, help="keys per page (1-1000)")
    start.add_argument(
        "--steps-per-worker",
        type=_positive,
        default=None,
        help="steps each range worker runs before the execution continues as a new one (history limit; "
        "default 1000 / ranges)",
    )
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=_start)
    status = actions.add_parser("status", help="the rule's newest backfill job: counts, percent, rate, ETA")
    status.add_argument("rule_id", metavar="RULE")
    status.add_argument(
        "--ranges",
        action="store_true",
        help="a line per open key range: bounds, pages, listed, claim (a done range is gone; the job's totals keep it)",
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)


def backfill_control(clients: ClientFactory, stack: CrrStack) -> BackfillControl:
    if stack.backfill_state_machine_arn is None:
        raise StackNotFoundError(
            f"stack {stack.name!r} has no BackfillStateMachineArn output: update it with sam deploy"
        )
    dynamodb = clients.client("dynamodb", stack.region)
    return BackfillControl(
        DynamoBackfillJobs(dynamodb, stack.rules_table),
        DynamoRules(dynamodb, stack.rules_table, cache_seconds=0),
        StepFunctionsExecutions(clients.client("stepfunctions", stack.region), stack.backfill_state_machine_arn),
    )


def start_backfill(clients: ClientFactory, stack: CrrStack, rule_id: str, **options: Any) -> StartedBackfill:
    return backfill_control(clients, stack).start(rule_id, **options)


def _start(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    stack = discover_stack(clients, args.stack, args.region)
    control = backfill_control(clients, stack)
    started = control.start(
        args.rule_id,
        workers=args.ranges,
        page_size=args.page_size,
        steps_per_worker=args.steps_per_worker,
        inventory=args.inventory,
    )
    if args.json and not args.wait:
        print(json.dumps(_started_document(started), indent=2))
        return 0
    print(describe_start(started), file=sys.stderr if args.json else sys.stdout)
    if not args.wait:
        return 0
    job = follow(control, args.rule_id, sys.stdout if not args.json else sys.stderr)
    if args.json:
        print(json.dumps({**_started_document(started), "job": _job_document(job)}, indent=2))
    return 0 if job.status is BackfillStatus.SUCCEEDED else 1


def describe_start(started: StartedBackfill) -> str:
    job = started.job
    if started.already_running:
        return f"backfill {job.job_id} of rule {job.rule_id} is already running ({started.execution_arn})"
    verb = f"resumed with {job.ranges_open} open range(s) after {job.pages} page(s)" if started.resumed else "started"
    replaced = (
        f"; the unfinished single-cursor backfill {started.replaced} cannot be resumed by this release, "
        "so this job starts over (objects already copied are skipped)"
        if started.replaced
        else ""
    )
    source = f" from the S3 Inventory report {job.inventory}" if job.inventory else ""
    return (
        f"backfill {job.job_id} of rule {job.rule_id}{source} {verb}, {job.workers} range(s) at once "
        f"({started.execution_arn}){replaced}"
    )


def follow(
    control: BackfillControl,
    rule_id: str,
    out: TextIO,
    *,
    poll_seconds: float = POLL_SECONDS,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> BackfillJob:
    """Show the newest job's progress until it succeeds or fails; raises BackfillInterruptedError when no
    execution runs it any more."""
    interactive = out.isatty()
    idle_since: float | None = None
    while True:
        job = control.latest(rule_id)
        if job is None:
            raise BackfillInterruptedError(f"rule {rule_id} has no backfill job")
        line = progress_line(job)
        out.write(f"\r{line}\x1b[K" if interactive else f"{line}\n")
        out.flush()
        if job.status is not BackfillStatus.RUNNING:
            if interactive:
                out.write("\n")
            if job.failure_reason:
                out.write(f"failed: {job.failure_reason}\n")
            return job
        running = job.execution_arn is not None and control.executions.status(job.execution_arn) == "RUNNING"
        if running:
            idle_since = None
        elif idle_since is None:
            idle_since = monotonic()
        elif monotonic() - idle_since > HANDOVER_GRACE_SECONDS:
            raise BackfillInterruptedError(
                f"backfill {job.job_id} stopped after {job.pages} page(s) with {job.ranges_open} range(s) open "
                f"({job.execution_arn} is not running); "
                f"`crr backfill start {rule_id}` resumes it"
            )
        sleep(poll_seconds)


def progress_line(job: BackfillJob) -> str:
    """``[#######.......]  48.0%  4,800/10,000 objects  4.7 MiB  812/s  ETA 6.4s``; before every range is
    counted: ``4,800 objects (counting: 8,000 so far)``."""
    progress = job.progress()
    rate = f"{progress.objects_per_second:,.0f}/s" if progress.objects_per_second else "-/s"
    copied = humanize_bytes(progress.bytes_copied)
    if progress.percent is None:
        return f"{progress.processed:,} objects (counting: {progress.counted_so_far:,} so far)  {copied}  {rate}"
    filled = int(BAR_WIDTH * progress.percent / 100)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    total = f"{progress.total:,}" if progress.total is not None else "?"
    eta = humanize_seconds(progress.eta_seconds)
    return f"[{bar}] {progress.percent:5.1f}%  {progress.processed:,}/{total} objects  {copied}  {rate}  ETA {eta}"


def _status(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    control = backfill_control(clients, discover_stack(clients, args.stack, args.region))
    job = control.latest(args.rule_id)
    if job is None:
        print(json.dumps(None) if args.json else f"rule {args.rule_id} has no backfill job")
        return 0
    ranges = control.ranges(job.rule_id, job.job_id) if args.ranges else None
    if args.json:
        document = _job_document(job)
        if ranges is not None:
            document["ranges"] = [item.model_dump(mode="json") for item in ranges]
        print(json.dumps(document, indent=2))
        return 0
    print(describe_job(job))
    if ranges is not None:
        for line in range_lines(ranges):
            print(f"  {line}")
        if not job.legacy:
            # A range's item is deleted with its final page (the job's counts keep its totals).
            print(f"  {job.ranges_made - len(ranges)} done range(s) not listed: their counts are in the job's")
    return 0


def describe_job(job: BackfillJob) -> str:
    """What `crr backfill status` says of a job (read from its one item)."""
    totals = job.totals
    lines = [
        f"backfill {job.job_id} of rule {job.rule_id}: {job.status.value}",
        f"  {progress_line(job)}",
        f"  pages {job.pages}; listed {totals.listed:,} ({humanize_bytes(totals.bytes_listed)}): copied "
        f"{totals.copied:,} ({humanize_bytes(totals.bytes_copied)}), skipped {totals.skipped:,}, superseded "
        f"{totals.superseded:,}, failed {totals.failed:,} (handed to the replication queue)",
    ]
    if job.legacy:
        lines.append("  a single-cursor job of an earlier release: `crr backfill start` starts a new job")
    elif job.inventory:
        lines.append(
            f"  from the S3 Inventory report {job.inventory}: {job.ranges_made} data file(s), {job.ranges_open} "
            f"open, {job.ranges_uncounted} not read yet; {job.workers} at once"
        )
    else:
        lines.append(
            f"  ranges: {job.ranges_made} made, {job.ranges_open} open, {job.ranges_uncounted} still counting; "
            f"{job.workers} at once"
        )
    finished = f", finished {job.finished_at:%Y-%m-%d %H:%M:%S}Z" if job.finished_at else ""
    lines.append(f"  started {job.created_at:%Y-%m-%d %H:%M:%S}Z{finished}; execution {job.execution_arn or '-'}")
    if job.failure_reason:
        lines.append(f"  failure: {job.failure_reason}")
    return "\n".join(lines)


def range_lines(ranges: list[BackfillRange]) -> list[str]:
    """A line per range, in key order: ``(after, until]  pages 3  listed 3,000  done|open|counting  claim``."""

    def bound(key: str | None, default: str) -> str:
        return json.dumps(key, ensure_ascii=False) if key is not None else default

    ordered = sorted(
        ranges, key=lambda item: (item.prefix.encode(), item.after is not None, (item.after or "").encode())
    )
    lines = []
    for item in ordered:
        state = "done" if item.done else ("open" if item.count_complete else "open, counting")
        claim = (
            f"  held by worker {item.claim.rsplit('#', 1)[1]} of {item.claim.rsplit(':', 1)[-1].rsplit('#', 1)[0]}"
            if item.claim
            else ""
        )
        if item.kind is WorkKind.INVENTORY:
            lines.append(
                f"file {item.range_id} {bound(item.file, '')}: {item.row:,} rows read  pages {item.pages}  "
                f"listed {item.totals.listed:,}  {state}{claim}"
            )
            continue
        bounds = f"({bound(item.after, 'start')}, {bound(item.until, 'end')}]"
        lines.append(
            f"range {item.range_id} {bound(item.prefix, '')}: {bounds}  "
            f"pages {item.pages}  listed {item.totals.listed:,}  {state}{claim}"
        )
    return lines


def _job_document(job: BackfillJob) -> dict[str, Any]:
    return {**job.model_dump(mode="json"), "done": job.done, "progress": job.progress().model_dump(mode="json")}


def _started_document(started: StartedBackfill) -> dict[str, Any]:
    return {
        "job": _job_document(started.job),
        "execution_arn": started.execution_arn,
        "resumed": started.resumed,
        "already_running": started.already_running,
    }
