"""`crr local up`: run the embedded local cloud in the foreground until Ctrl-C or SIGTERM.

`crr local deploy` deploys another stack into a running `local up` (a stack per region, as on AWS),
or redeploys one with new parameters, e.g. the peer's ARNs for two-way sync. `local up` serves a
control endpoint on 127.0.0.1 and names it in `<state dir>/control.json`; the deploy runs in the
`local up` process, which holds the functions' workers and the queues' pollers.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from crr_cli.localcloud.clients import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, ROUTED_SERVICES
from crr_cli.localcloud.cloud import LocalCloud, LocalCloudError
from crr_cli.localcloud.deploy import DeployError
from crr_cli.localcloud.lambda_.latency import LatencyModel

DEFAULT_PORT = 4566  # the port tools preconfigured for LocalStack already point at
DEFAULT_DYNAMODB_PORT = 4569  # LocalStack's former DynamoDB port
DEFAULT_STACK = "crr-local"
DEFAULT_REGION = "us-east-1"
DEFAULT_TEMPLATE = Path("template.yaml")
DEFAULT_STATE_DIR = Path(".local-cloud")
CONTROL_FILE = "control.json"
DEPLOY_TIMEOUT_S = 300.0


class _ControlHandler(BaseHTTPRequestHandler):
    """POST /deploy {"stack", "region", "parameters", "template"}: deploy (or redeploy) into the cloud."""

    server: _ControlServer

    def do_POST(self) -> None:
        if self.path != "/deploy":
            self._reply(404, {"message": "only POST /deploy"})
            return
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        try:
            stack = self.server.cloud.deploy(
                Path(request["template"]), request["stack"], request["region"], request.get("parameters", {})
            )
        except (LocalCloudError, DeployError, ClientError, BotoCoreError, OSError, KeyError) as error:
            self._reply(400, {"message": f"deploy failed: {error}"})
            return
        self._reply(200, {"stack": stack.stack_name, "region": stack.region, "outputs": dict(stack.outputs)})

    def _reply(self, status: int, document: object) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request would bury `local up`'s own output


class _ControlServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cloud: LocalCloud) -> None:
        super().__init__(("127.0.0.1", 0), _ControlHandler)
        self.cloud = cloud


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
    latency: LatencyModel | None = None,
) -> int:
    """Start the local cloud, deploy `template`, print how to reach it, serve until interrupted.

    `port` and `dynamodb_port` are the main and the DynamoDB endpoints' ports (None or 0: free
    ports). Returns 0 after a clean stop (Ctrl-C, SIGTERM or `stop` set), 1 when start or deploy
    fails. `ready` is set once everything serves; `stop` lets a caller (a test) end the run.
    `latency` turns on the latency model for the functions and the pollers.
    """
    stop = stop or threading.Event()
    previous = _install_stop_signals(stop)
    cloud = LocalCloud(state_dir=state_dir or DEFAULT_STATE_DIR, latency=latency)
    control: _ControlServer | None = None
    try:
        started = time.monotonic()
        endpoint = cloud.start(port or None, dynamodb_port=dynamodb_port or None)
        stack = cloud.deploy(template, stack_name, region, parameters)
        control = _serve_control(cloud)
        elapsed = time.monotonic() - started
        print(f"crr local cloud ready in {elapsed:.1f}s on {endpoint} (DynamoDB on {cloud.dynamodb_endpoint_url})")
        print(f"stack {stack.stack_name} in {region}; function logs in {cloud.log_dir}")
        if latency is not None:
            print(
                f"latency model: the functions' calls wait {latency.same_region_ms:g} ms in their region, "
                f"{latency.cross_region_ms:g} ms to another"
            )
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
        print("`crr local deploy --stack NAME --region REGION --parameter KEY=VALUE ...` deploys another stack")
        print("(or redeploys one with new parameters). IAM is enforced: functions may do what their roles allow.")
        print("Ctrl-C stops it; everything (buckets, rules, queued notifications) lives in memory and goes with it.")
        sys.stdout.flush()
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
        if control is not None:
            control.shutdown()
            control.server_close()
            (cloud.state_dir / CONTROL_FILE).unlink(missing_ok=True)
        cloud.stop()
        _restore_signals(previous)
    print("crr local cloud stopped.", flush=True)
    return 0


def _serve_control(cloud: LocalCloud) -> _ControlServer:
    control = _ControlServer(cloud)
    threading.Thread(target=control.serve_forever, name="local-up-control", daemon=True).start()
    url = f"http://127.0.0.1:{control.server_address[1]}"
    (cloud.state_dir / CONTROL_FILE).write_text(json.dumps({"url": url}), encoding="utf-8")
    return control


def run_local_deploy(
    stack_name: str, region: str, parameters: Mapping[str, str], template: Path, *, state_dir: Path | None = None
) -> int:
    """Deploy (or redeploy) a stack into the `local up` running with `state_dir`; print its outputs.
    Returns 0, or 1 (with the reason on stderr) when no local cloud runs there or the deploy fails."""
    control = (state_dir or DEFAULT_STATE_DIR) / CONTROL_FILE
    try:
        url = json.loads(control.read_text(encoding="utf-8"))["url"]
    except (OSError, ValueError, KeyError):
        print(f"crr local deploy: no running `crr local up` found ({control} missing)", file=sys.stderr)
        return 1
    document = {
        "stack": stack_name,
        "region": region,
        "parameters": dict(parameters),
        "template": str(template.resolve()),
    }
    request = urllib.request.Request(  # noqa: S310 - the local control endpoint on 127.0.0.1
        f"{url}/deploy", data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=DEPLOY_TIMEOUT_S) as answer:  # noqa: S310
            deployed = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        print(f"crr local deploy: {json.loads(error.read() or b'{}').get('message', error)}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as error:
        print(f"crr local deploy: the local cloud did not answer: {error}", file=sys.stderr)
        return 1
    print(f"stack {deployed['stack']} deployed in {deployed['region']}")
    for key, value in sorted(deployed["outputs"].items()):
        print(f"  {key} = {value}")
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
        latency=arguments.latency_ms,
    )


def _deploy_from_arguments(arguments: argparse.Namespace) -> int:
    return run_local_deploy(arguments.stack, arguments.region, dict(arguments.parameter), arguments.template)


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
        "--latency-ms",
        type=LatencyModel.parse,
        metavar="SAME,CROSS",
        help="make the functions' AWS calls wait these round trips (ms) in their own region and to another "
        "one, e.g. 10,60 (default: off)",
    )
    _add_template_arguments(up)
    up.set_defaults(func=_run_from_arguments)
    deploy = commands.add_parser(
        "deploy",
        help="deploy another stack into the running `crr local up`, or redeploy one with new parameters",
        description="Like `sam deploy` against the local cloud started by `crr local up` in this directory.",
    )
    deploy.add_argument("--stack", required=True, help="stack name (an existing one is updated)")
    deploy.add_argument("--region", required=True, help="stack region")
    _add_template_arguments(deploy)
    deploy.set_defaults(func=_deploy_from_arguments)


def _add_template_arguments(parser: argparse.ArgumentParser) -> None:
    """--parameter and --template, as `sam deploy` takes them."""
    parser.add_argument(
        "--parameter",
        action="append",
        type=_parameter,
        default=[],
        metavar="KEY=VALUE",
        help="template parameter, repeatable",
    )
    parser.add_argument(
        "--template", type=Path, default=DEFAULT_TEMPLATE, help="SAM template (default ./template.yaml)"
    )
