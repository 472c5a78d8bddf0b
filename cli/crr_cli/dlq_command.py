"""`crr dlq list` and `crr dlq replay`: what failed and why, and putting it back in line."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from crr.adapters.clients import ClientFactory
from crr.adapters.sqs import SqsQueueSender
from crr.composition import dead_letters
from crr.replay import DeadLetterSummary, ReplayReport, ReplayRequest
from crr_cli.stack import discover_stack


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def add_dlq_parser(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect and replay records that failed for good")
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="dead letters grouped by failure reason")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)
    replay = actions.add_parser("replay", help="send matching dead letters back to the replication queue")
    replay.add_argument("--reason", help="only this error code (as `dlq list` shows it)")
    replay.add_argument("--prefix", help="only records with a key under this prefix")
    replay.add_argument("--since", type=datetime.fromisoformat, help="only records dead-lettered since (ISO 8601)")
    replay.add_argument("--max", dest="max_messages", type=_positive, help="replay at most N records")
    replay.add_argument("--dry-run", action="store_true", help="count what would be replayed, change nothing")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=_replay)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"


def _print_summary(summary: DeadLetterSummary, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
        return
    print(f"{summary.total} dead-lettered record(s); oldest {_age(summary.oldest_age_seconds)}")
    if not summary.complete:
        print("  (incomplete: the DLQ still counts messages this walk could not receive; run it again)")
    for reason in summary.reasons:
        print(
            f"  {reason.code:<28} {reason.count:>6}  oldest {_age(reason.oldest_age_seconds):>8}  "
            f"keys: {', '.join(reason.sample_keys) or '-'}"
        )
        print(f"  {'':<28} {'':>6}  {reason.sample_message[:110]}")


def _print_report(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    verb = "would replay" if report.dry_run else "replayed"
    reasons = ", ".join(f"{code}={count}" for code, count in report.by_reason.items()) or "none"
    print(
        f"examined {report.examined}, matched {report.matched}, {verb} "
        f"{report.matched if report.dry_run else report.replayed} ({reasons})"
    )
    if not report.complete:
        print("incomplete: the DLQ still counts messages this walk could not receive; run it again")


def _list(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    stack = discover_stack(clients, args.stack, args.region)
    _print_summary(dead_letters(clients, stack.region, stack.rules_table, stack.dlq_url).summarize(), args.json)
    return 0


def _replay(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    stack = discover_stack(clients, args.stack, args.region)
    request = ReplayRequest(
        reason=args.reason, prefix=args.prefix, since=args.since, max=args.max_messages, dry_run=args.dry_run
    )
    letters = dead_letters(clients, stack.region, stack.rules_table, stack.dlq_url)
    report = letters.replay(request, SqsQueueSender(clients.client("sqs", stack.region), stack.queue_url))
    _print_report(report, args.json)
    return 0
