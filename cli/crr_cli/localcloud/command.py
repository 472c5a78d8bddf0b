"""`crr local up`: run the embedded local cloud in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from crr_cli.localcloud.clients import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, ROUTED_SERVICES
from crr_cli.localcloud.cloud import LocalCloud, LocalCloudError
from crr_cli.localcloud.deploy import DeployError

DEFAULT_PORT = 4566  # the port tools preconfigured for LocalStack already point at
DEFAULT_DYNAMODB_PORT = 4569  # LocalStack's former DynamoDB port
DEFAULT_STACK = "crr-local"
DEFAULT_REGION = "us-east-1"
DEFAULT_TEMPLATE = Path("template.yaml")


def _parameter(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


def run_local_up(
    port: int | None,
    stack_name: str,
    region: str,
    parameters: Mapping[str, str],
    template: Path,
    *,
    dynamodb_port: int | None = None,
    state_dir: Path | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Start the local cloud, deploy `template`, print how to reach it, serve until interrupted.

    `port` and `dynamodb_port` are the main and the DynamoDB endpoints' ports (None or 0: free
    ports). Returns 0 after a clean stop (Ctrl-C, SIGTERM or `stop` set), 1 when start or deploy
    fails. `ready` is set once everything serves; `stop` lets a caller (a test) end the run.
    """
    stop = stop or threading.Event()
    previous = _install_stop_signals(stop)
    cloud = LocalCloud(state_dir=state_dir)
    try:
        started = time.monotonic()
        endpoint = cloud.start(port or None, dynamodb_port=dynamodb_port or None)
        stack = cloud.deploy(template, stack_name, region, parameters)
        elapsed = time.monotonic() - started
        print(f"crr local cloud ready in {elapsed:.1f}s on {endpoint} (DynamoDB on {cloud.dynamodb_endpoint_url})")
        print(f"stack {stack.stack_name} in {region}; function logs in {cloud.log_dir}")
        for key, value in sorted(stack.outputs.items()):
            print(f"  {key} = {value}")
        for note in stack.fixups:
            print(f"  local: {note}")
        print("point the AWS CLI, SDKs and crr at it with:")
        print(f"export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID={LOCAL_ACCESS_KEY_ID} ", end="")
        print(f"AWS_SECRET_ACCESS_KEY={LOCAL_SECRET_ACCESS_KEY} AWS_REGION={region}")
        # The service-specific variables win over AWS_ENDPOINT_URL in the AWS SDKs and CLI.
        routed = " ".join(f"{ROUTED_SERVICES[name]}={url}" for name, url in cloud.service_endpoints.items())
        print(f"export {routed}")
        print("Ctrl-C stops it.", flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    except (LocalCloudError, DeployError, ClientError, BotoCoreError, OSError) as error:
        print(f"crr local up failed: {error}", file=sys.stderr)
        return 1
    finally:
        cloud.stop()
        _restore_signals(previous)
    print("crr local cloud stopped.", flush=True)
    return 0


def _install_stop_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM (and SIGINT) set `stop`; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {number: signal.signal(number, request_stop) for number in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: Mapping[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


def _run_from_arguments(arguments: argparse.Namespace) -> int:
    return run_local_up(
        arguments.port,
        arguments.stack,
        arguments.region,
        dict(arguments.parameter),
        arguments.template,
        dynamodb_port=arguments.dynamodb_port,
    )


def add_local_parser(subparsers: Any) -> None:
    """Register `local up` on an argparse subparsers object; the parsed namespace's `func` runs it."""
    local = subparsers.add_parser("local", help="the embedded local cloud (moto + local Lambda)")
    commands = local.add_subparsers(dest="local_command", required=True)
    up = commands.add_parser(
        "up",
        help="start moto, deploy the template, run the functions locally; Ctrl-C stops",
        description="Runs in the foreground and prints the AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_DYNAMODB) to export.",
    )
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"0 picks a free port (default {DEFAULT_PORT})")
    up.add_argument(
        "--dynamodb-port",
        type=int,
        default=DEFAULT_DYNAMODB_PORT,
        help=f"port of the DynamoDB endpoint (a moto process of its own); 0 picks a free port "
        f"(default {DEFAULT_DYNAMODB_PORT})",
    )
    up.add_argument("--stack", default=DEFAULT_STACK, help=f"stack name (default {DEFAULT_STACK})")
    up.add_argument("--region", default=DEFAULT_REGION, help=f"stack region (default {DEFAULT_REGION})")
    up.add_argument(
        "--parameter",
        action="append",
        type=_parameter,
        default=[],
        metavar="KEY=VALUE",
        help="template parameter, repeatable",
    )
    up.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template (default ./template.yaml)")
    up.set_defaults(func=_run_from_arguments)
