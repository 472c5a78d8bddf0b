"""`crr rules add|list|show|pause|resume|remove`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from crr.adapters.clients import ClientFactory
from crr.adapters.dynamodb import DynamoBreakerStore, DynamoRules
from crr.adapters.notifications import ChangeRoute, S3BucketNotifications
from crr.adapters.s3_buckets import S3Buckets
from crr.adapters.sqs import SqsQueueSender
from crr.breaker import ReleaseReport, discard_held_deletes, release_held_deletes
from crr.rules import ReplicationRule
from crr_cli.adapters.kms import KmsKeys
from crr_cli.backfill_command import describe_start, start_backfill
from crr_cli.operations.catalog import PairRemoval, RuleCatalog, RuleRequest, StackScope
from crr_cli.stack import discover_stack


def add_rules_parser(subparsers: Any) -> None:
    rules = subparsers.add_parser("rules", help="manage replication rules")
    actions = rules.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="replicate a source bucket into a destination bucket")
    add.add_argument("--source", required=True, help="source bucket (in the stack's region)")
    add.add_argument("--destination", required=True, help="destination bucket (in another region)")
    add.add_argument("--id", dest="rule_id", help="rule id (default: the source bucket's name)")
    add.add_argument("--source-region", help="expected region of the source bucket (checked)")
    add.add_argument("--destination-region", help="expected region of the destination bucket (checked)")
    add.add_argument("--prefix", dest="prefixes", action="append", default=[], help="replicate only keys under it")
    add.add_argument("--no-deletes", dest="replicate_deletes", action="store_false", help="do not replicate deletions")
    add.add_argument("--storage-class", help="write replicas in this storage class")
    add.add_argument(
        "--replica-kms-key",
        dest="replica_kms_key_arn",
        help="KMS key ARN (destination region) that re-encrypts SSE-KMS objects",
    )
    add.add_argument(
        "--two-way",
        metavar="PEER_STACK",
        help="also replicate back: add the reverse rule to PEER_STACK, the crr stack of the destination region",
    )
    add.add_argument("--reverse-id", help="id of the reverse rule of --two-way (default: the destination's name)")
    add.add_argument(
        "--backfill",
        action="store_true",
        help="once the rule is active, start copying the objects already in the source (crr backfill start)",
    )
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=_add)

    resume = actions.add_parser("resume-deletes", help="release (or --discard) deletes held by the mass-delete breaker")
    resume.add_argument("rule_id", metavar="RULE")
    resume.add_argument(
        "--discard",
        action="store_true",
        help="drop the held deletes and the rest of their burst: the replica keeps those objects",
    )
    resume.add_argument("--yes", action="store_true", help="do not ask for confirmation of --discard")
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(func=_resume_deletes)

    listing = actions.add_parser("list", help="list rules")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)

    for name, function, text in (
        ("show", _show, "show one rule"),
        ("pause", _pause, "stop replicating (records are acknowledged)"),
        ("resume", _resume, "replicate again"),
        ("remove", _remove, "delete the rule and unwire its notifications"),
        ("rewire", _rewire, "wire the source bucket into the queue again (crr status shows rules that are not)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("rule_id", metavar="RULE")
        action.add_argument("--json", action="store_true")
        action.set_defaults(func=function)
        if name == "remove":
            which = action.add_mutually_exclusive_group()
            which.add_argument(
                "--pair", dest="pair", action="store_const", const=PairRemoval.BOTH, help="two-way: remove both"
            )
            which.add_argument(
                "--one-direction",
                dest="pair",
                action="store_const",
                const=PairRemoval.ONE_DIRECTION,
                help="two-way: remove this direction only; the reverse rule stays as a one-way rule",
            )


def _resume_deletes(args: argparse.Namespace) -> int:
    clients = ClientFactory()
    stack = discover_stack(clients, args.stack, args.region)
    rule = _catalog(args).show(args.rule_id)
    store = DynamoBreakerStore(clients.client("dynamodb", stack.region), stack.rules_table)
    held = sum(1 for _ in store.held_keys(rule.rule_id))
    if held == 0 and not store.read(rule.rule_id).held:
        # Resuming a breaker that holds nothing must not weaken it for the deletes that follow.
        if args.json:
            nothing = ReleaseReport(rule.rule_id, released=0, discarded=0, was_held=False)
            print(json.dumps({**vars(nothing), "nothing_held": nothing.nothing_held}))
        else:
            print(f"rule {rule.rule_id}: no deletes are held; nothing changed")
        return 0
    settings = stack.breaker_settings
    if args.discard:
        if not args.yes:
            answer = input(
                f"discard {held} held delete(s) of rule {rule.rule_id}, and every later delete of the same "
                f"burst? The replica keeps those objects. Type the rule id to confirm: "
            )
            if answer.strip() != rule.rule_id:
                print("not confirmed; nothing changed")
                return 1
        report = discard_held_deletes(rule, store, settings, datetime.now(UTC))
    else:
        sender = SqsQueueSender(clients.client("sqs", stack.region), stack.queue_url)
        report = release_held_deletes(rule, store, sender, settings, datetime.now(UTC))
    if args.json:
        print(json.dumps({**vars(report), "nothing_held": report.nothing_held}))
    elif args.discard:
        print(
            f"rule {report.rule_id}: {report.discarded} held delete(s) discarded; the rest of the burst will be "
            "discarded as it arrives, and deletes replicate again once it is over"
        )
    else:
        print(f"rule {report.rule_id}: {report.released} held delete(s) released; delete replication resumed")
    return 0


def _catalog(args: argparse.Namespace, stack_name: str | None = None, region: str | None = None) -> RuleCatalog:
    clients = ClientFactory()
    stack = discover_stack(clients, stack_name or args.stack, region or args.region)
    return _catalog_of(clients, stack.scope, stack.change_route)


def _catalog_of(
    clients: ClientFactory, scope: StackScope, route: ChangeRoute = ChangeRoute.S3_NOTIFICATIONS
) -> RuleCatalog:
    """The rules of one stack; buckets are wired by the stack's route (removing works by either)."""
    rules = DynamoRules(clients.client("dynamodb", scope.region), scope.rules_table, cache_seconds=0)
    return RuleCatalog(
        rules, S3Buckets(clients, scope.region), S3BucketNotifications(clients, route), scope, KmsKeys(clients)
    )


def _print_rules(rules: list[ReplicationRule], as_json: bool) -> None:
    if as_json:
        print(json.dumps([rule.model_dump(mode="json") for rule in rules], indent=2))
        return
    if not rules:
        print("no rules")
        return
    print(f"{'RULE':<24} {'STATUS':<8} {'SOURCE':<40} {'DESTINATION':<40} {'PREFIXES':<20} DELETES")
    for rule in rules:
        source = f"{rule.source_bucket} ({rule.source_region})"
        destination = f"{rule.destination_bucket} ({rule.destination_region})"
        prefixes = ",".join(rule.prefixes) or "*"
        deletes = "yes" if rule.replicate_deletes else "no"
        print(f"{rule.rule_id:<24} {rule.status.value:<8} {source:<40} {destination:<40} {prefixes:<20} {deletes}")


def _add(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    request = RuleRequest(
        source_bucket=args.source,
        destination_bucket=args.destination,
        rule_id=args.rule_id,
        source_region=args.source_region,
        destination_region=args.destination_region,
        prefixes=tuple(args.prefixes),
        replicate_deletes=args.replicate_deletes,
        storage_class=args.storage_class,
        replica_kms_key_arn=args.replica_kms_key_arn,
    )
    if args.two_way is None:
        rules = [catalog.add(request)]
    else:
        destination_region = args.destination_region or S3Buckets(ClientFactory(), args.region).region_of(
            args.destination
        )
        peer = _catalog(args, args.two_way, destination_region)
        rules = list(catalog.add_two_way(request, peer, args.reverse_id))
    for warning in catalog.advice(rules[0]):
        print(f"warning: {warning}", file=sys.stderr)
    _print_rules(rules, args.json)
    if args.backfill:
        # Only now: the rule is active, so every object written from here on is replicated live, and the
        # backfill's listing, which starts after this, sees every object written before.
        clients = ClientFactory()
        started = start_backfill(clients, discover_stack(clients, args.stack, args.region), rules[0].rule_id)
        print(describe_start(started), file=sys.stderr if args.json else sys.stdout)
        if len(rules) == 2:
            reverse = rules[1]
            print(
                f"the reverse rule's older objects: crr --stack {args.two_way} --region {reverse.source_region} "
                f"backfill start {reverse.rule_id}",
                file=sys.stderr,
            )
    return 0


def _list(args: argparse.Namespace) -> int:
    _print_rules(_catalog(args).list(), args.json)
    return 0


def _show(args: argparse.Namespace) -> int:
    _print_rules([_catalog(args).show(args.rule_id)], args.json)
    return 0


def _pause(args: argparse.Namespace) -> int:
    _print_rules([_catalog(args).pause(args.rule_id)], args.json)
    return 0


def _resume(args: argparse.Namespace) -> int:
    _print_rules([_catalog(args).resume(args.rule_id)], args.json)
    return 0


def _rewire(args: argparse.Namespace) -> int:
    rule = _catalog(args).rewire(args.rule_id)
    if args.json:
        _print_rules([rule], args.json)
    else:
        print(f"rule {rule.rule_id}: {rule.source_bucket} wired into the replication queue again")
    return 0


def _remove(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    rule = catalog.show(args.rule_id)
    peer = None
    if rule.peer is not None and args.pair is not None:
        # The peer rule's stack is found through what the rule recorded of it.
        scope = StackScope(
            region=rule.destination_region,
            queue_arn="",
            rules_table=rule.peer.rules_table,
            queue_url=rule.peer.queue_url,
        )
        peer = _catalog_of(ClientFactory(), scope)
    catalog.remove(args.rule_id, args.pair, peer)
    if not args.json:
        print(f"removed rule {rule.rule_id}; notifications from {rule.source_bucket} unwired")
        if rule.peer is not None:
            kept = "removed too" if args.pair is PairRemoval.BOTH else "kept as a one-way rule"
            print(f"reverse rule {rule.peer.rule_id}: {kept}")
    return 0
