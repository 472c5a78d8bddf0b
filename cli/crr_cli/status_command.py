"""`crr status [RULE] [--watch [SECONDS]] [--json]`: how replication is doing, per rule and per stack."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoBackfillJobs, DynamoBreakerStore, DynamoRules
from crr.adapters.notifications import S3BucketNotifications, WiringCheck
from crr.errors import CrrError
from crr_cli.adapters.health import (
    CloudWatchBacklogAge,
    CloudWatchFailureMetric,
    DynamoFailureCounter,
    DynamoProgressReader,
    SqsQueueGauge,
    queue_name_from_url,
)
from crr_cli.operations.status import StackStatus, StatusReport, render_text
from crr_cli.stack import CrrStack, discover_stack

DEFAULT_WATCH_SECONDS = 2.0

# ANSI: cursor home, erase to the end of the line / of the screen. Redrawing over the old frame
# instead of clearing first keeps the picture from flickering.
_HOME, _ERASE_LINE, _ERASE_BELOW, _CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        # `crr status --watch RULE` lands here: the optional SECONDS takes the next word.
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds (write `crr status RULE --watch`)"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"refresh interval must be a positive number of seconds, not {text!r}")
    return value


def add_status_parser(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="replication health: per rule, and the stack's queue, DLQ and failures",
        description=(
            "Per rule: state, source -> destination, last sync, lag and counters. Once for the stack: "
            "replication queue depth and oldest message age (CloudWatch; '-' without a datapoint), DLQ depth, "
            "failures recorded in the last hour (rules table) and failed attempts in the last 15 minutes "
            "(CloudWatch, counted even when the table is down)."
        ),
    )
    status.add_argument("rule_id", metavar="RULE", nargs="?", help="only this rule (default: every rule)")
    status.add_argument(
        "--watch",
        metavar="SECONDS",
        nargs="?",
        type=_seconds,
        const=DEFAULT_WATCH_SECONDS,
        help=f"refresh in place every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C",
    )
    status.add_argument(
        "--json", action="store_true", help="print one JSON document (with --watch: one compact document per line)"
    )
    status.set_defaults(func=_status)


def stack_status(clients: ClientFactory, stack: CrrStack) -> StackStatus:
    """The status service for a deployed stack, over its table, queues and CloudWatch."""
    dynamodb = clients.client("dynamodb", stack.region)
    sqs = clients.client("sqs", stack.region)
    cloudwatch = clients.client("cloudwatch", stack.region)
    return StackStatus(
        stack=stack.name,
        region=stack.region,
        rules=DynamoRules(dynamodb, stack.rules_table, cache_seconds=0),
        progress=DynamoProgressReader(dynamodb, stack.rules_table),
        queue=SqsQueueGauge(sqs, stack.queue_url),
        dead_letters=SqsQueueGauge(sqs, stack.dlq_url),
        backlog_age=CloudWatchBacklogAge(cloudwatch, queue_name_from_url(stack.queue_url)),
        failures=DynamoFailureCounter(dynamodb, stack.rules_table),
        failure_metric=CloudWatchFailureMetric(cloudwatch, stack.name),
        backfills=DynamoBackfillJobs(dynamodb, stack.rules_table),
        breakers=(DynamoBreakerStore(dynamodb, stack.rules_table), stack.breaker_settings),
        wiring=WiringCheck(
            S3BucketNotifications(clients, stack.change_route, stack.source_changes_rule_arn), stack.queue_arn
        ),
    )


def format_report(report: StatusReport, as_json: bool, *, compact: bool = False) -> str:
    if as_json:
        return report.model_dump_json(indent=None if compact else 2)
    return render_text(report)


def watch(
    produce: Callable[[], StatusReport],
    interval: float,
    as_json: bool,
    out: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print a report every ``interval`` seconds until Ctrl-C; returns the exit status (0).

    The first report's errors propagate (a wrong rule id or stack should fail at once); later ones
    are shown in place of the report and the next refresh tries again.
    """
    redraw = out.isatty() and not as_json
    text = format_report(produce(), as_json, compact=True)
    if redraw:
        out.write(_CLEAR)
    try:
        while True:
            if redraw:
                footer = f"refreshing every {interval:g}s; Ctrl-C to stop"
                lines = [*text.splitlines(), "", footer]
                out.write(_HOME + "".join(f"{line}{_ERASE_LINE}\n" for line in lines) + _ERASE_BELOW)
            else:
                out.write(text + ("\n" if as_json else "\n\n"))
            out.flush()
            sleep(interval)
            try:
                text = format_report(produce(), as_json, compact=True)
            except CrrError as exc:
                text = json.dumps({"error": str(exc)}) if as_json else f"error: {exc}"
    except KeyboardInterrupt:
        if redraw:
            out.write("\n")
        return 0


def _status(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    status = stack_status(clients, discover_stack(clients, args.stack, args.region))
    if args.watch is not None:
        return watch(lambda: status.report(args.rule_id), args.watch, args.json, sys.stdout)
    print(format_report(status.report(args.rule_id), args.json))
    return 0
