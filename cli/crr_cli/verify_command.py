"""`crr verify RULE [--repair] [--json] [--samples N] [--attributes none|sample|all] [--sample-every N]`:
does the replica equal the source?"""

from __future__ import annotations

import argparse
from typing import Any

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoLedger, DynamoRules
from crr.adapters.listing import S3Listing
from crr.adapters.s3 import S3ObjectStore
from crr.adapters.sqs_batch import SqsBatchSender
from crr_cli.operations.verify import (
    DEFAULT_SAMPLE_EVERY,
    AttributeCheck,
    AttributeMode,
    KeyCount,
    VerifyReport,
    verify,
)
from crr_cli.stack import discover_stack

DEFAULT_SAMPLES = 10


def add_verify_parser(subparsers: Any) -> None:
    command = subparsers.add_parser(
        "verify",
        help="compare a rule's source and destination: keys, bytes, and metadata, content headers and tags",
        description=(
            "Stream both buckets' listings (under the rule's prefixes) and count matching, missing, stale "
            "and extra keys. Where ETags differ, a replica the rule's ledger says crr copied between exactly these "
            "ETags (one BatchGetItem per 100 such keys), or whose crr marker names the source's ETag (one HEAD "
            "per such key), holds the same bytes. Exits 0 when the destination equals the source, 1 when it "
            "does not."
        ),
    )
    command.add_argument("rule_id", metavar="RULE")
    command.add_argument(
        "--repair",
        action="store_true",
        help="queue every missing, stale or extra key for replication through the replication queue",
    )
    command.add_argument(
        "--samples",
        type=_count,
        default=DEFAULT_SAMPLES,
        metavar="N",
        help=f"sample keys to show per kind of difference (default {DEFAULT_SAMPLES})",
    )
    command.add_argument(
        "--attributes",
        choices=[mode.value for mode in AttributeMode],
        default=AttributeMode.SAMPLE.value,
        help=(
            "also compare user metadata, content headers and tags of keys present on both sides: none, a random "
            "sample (default), or all; each compared key costs 4 requests (HEAD and GetObjectTagging per side)"
        ),
    )
    command.add_argument(
        "--sample-every",
        type=_positive,
        default=DEFAULT_SAMPLE_EVERY,
        metavar="N",
        help=f"with --attributes sample, compare about one key in N (default {DEFAULT_SAMPLE_EVERY})",
    )
    command.add_argument("--json", action="store_true")
    command.set_defaults(func=_verify)


def _positive(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _verify(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    stack = discover_stack(clients, args.stack, args.region)
    dynamodb = clients.client("dynamodb", stack.region)
    rule = DynamoRules(dynamodb, stack.rules_table, cache_seconds=0).get(args.rule_id)
    listing = S3Listing(clients)
    repair = SqsBatchSender(clients.client("sqs", stack.region), stack.queue_url) if args.repair else None
    check = AttributeCheck(S3ObjectStore(clients), AttributeMode(args.attributes), args.sample_every)
    ledger = DynamoLedger(dynamodb, stack.rules_table)
    report = verify(rule, listing, listing, args.samples, repair=repair, check=check, ledger=ledger)
    _print_report(report, args.json, paused=not rule.enabled)
    return 0 if report.equal else 1


def _line(name: str, count: int, samples: list[str]) -> str:
    keys = ", ".join(repr(key) for key in samples)
    more = ", ..." if count > len(samples) else ""
    return f"  {name:<9} {count:>10}" + (f"   {keys}{more}" if keys else "")


def _print_report(report: VerifyReport, as_json: bool, *, paused: bool) -> None:
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    prefixes = ", ".join(report.prefixes) or "every key"
    deletes = "deletes replicate" if report.replicate_deletes else "deletes do not replicate"
    print(
        f"rule {report.rule_id}{' (paused)' if paused else ''}: {report.source_bucket} ({report.source_region}) -> "
        f"{report.destination_bucket} ({report.destination_region}); prefixes: {prefixes}; {deletes}"
    )
    print(_line("matching", report.matching, []))
    kinds: list[tuple[str, KeyCount]] = [
        ("missing", report.missing),
        ("stale", report.stale),
        ("extra", report.extra),
    ]
    for name, tally in kinds:
        print(_line(name, tally.count, tally.samples))
    for attribute, tally in sorted(report.differences.items()):
        print(_line(f"  {attribute}", tally.count, tally.samples))
    if report.kept.count:
        print(_line("kept", report.kept.count, report.kept.samples) + "   (only in the replica; not a difference)")
    compared = f"; metadata, headers and tags compared for {report.inspected} ({report.attributes.value})"
    if report.equal:
        print(f"EQUAL: {report.matching} object(s) match by key, size and bytes{compared}")
    else:
        print(f"DIFFERENT: {report.differing} key(s) differ by presence, size, bytes or attributes{compared}")
    if report.queued is not None:
        print(
            f"queued {report.queued} key(s) for replication; run `crr verify {report.rule_id}` again once the "
            "replication queue has drained"
        )
