"""The operator CLI: `crr rules ...` against a deployed stack, `crr local up` for the embedded cloud."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from crr.errors import CrrError
from crr_cli.backfill_command import add_backfill_parser
from crr_cli.dlq_command import add_dlq_parser
from crr_cli.localcloud.command import add_local_parser
from crr_cli.rules_command import add_rules_parser
from crr_cli.status_command import add_status_parser
from crr_cli.verify_command import add_verify_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crr",
        description="Serverless cross-region replication for S3 buckets.",
        epilog="AWS settings come from the standard environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL).",
    )
    parser.add_argument(
        "--stack",
        default=os.environ.get("CRR_STACK", "crr-dev"),
        help="the crr stack to manage (default: $CRR_STACK or crr-dev)",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        help="the stack's region (default: $AWS_REGION)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_rules_parser(commands)
    add_dlq_parser(commands)
    add_backfill_parser(commands)
    add_status_parser(commands)
    add_verify_parser(commands)
    add_local_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "local" and not args.region:
        parser.error("no region: pass --region or set AWS_REGION")
    try:
        return int(args.func(args))
    except CrrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
