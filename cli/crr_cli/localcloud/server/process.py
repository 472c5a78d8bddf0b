"""A moto server process of the local cloud: `python -m crr_cli.localcloud.server.process --port N`.

Binds 127.0.0.1 (port 0 picks a free one), exports the bound port as `MOTO_PORT` (moto's Step
Functions interpreter calls back to it), writes the port to `--port-file` once it accepts
connections, and exits when SIGTERM/SIGINT arrives or its parent process goes away, so a crashed
parent leaves no orphan server behind.

The local cloud runs two: the main one serves every service, with our seams (`seams.install`); one
started with `--services dynamodb` serves DynamoDB (and DynamoDB Streams, signed as `dynamodb`)
only, so the two GIL-bound servers use two cores. The main one accepts `POST /_crr/endpoints` with
a JSON object `{boto3 service name: endpoint}`: Step Functions tasks for those services then go
there. Each refuses the requests of services the other serves (`routes.LocalCloudRoutes`). The main one
also accepts `POST /_crr/task-endpoints` with the same document: only the Step Functions tasks of
those services go there, and this process keeps serving their API (the local cloud sends Lambda
invocations to its own executor while moto keeps the functions), and `GET`/`POST /_crr/seams`
(the SQS and copy-rate seams' settings). Both count requests (`request_counter`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from crr_cli.localcloud.server.request_counter import RequestCounter
from crr_cli.localcloud.server.routes import LocalCloudRoutes

PARENT_CHECK_INTERVAL_S = 1.0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m crr_cli.localcloud.server.process")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="written with the bound port once serving")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument(
        "--services",
        type=lambda text: frozenset(filter(None, text.split(","))),
        help="comma-separated signing names to serve (e.g. dynamodb); others are refused. Default: all, with seams",
    )
    return parser.parse_args(argv)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _exit_when_orphaned(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Serve moto with our seams until SIGTERM/SIGINT; returns the process exit code."""
    args = _parse_args(argv)
    if args.port:
        os.environ["MOTO_PORT"] = str(args.port)
    if args.parent_pid:
        _exit_when_orphaned(args.parent_pid)

    if args.services is None:
        # Imported only here: the seams load moto's S3, SQS and IAM, which a DynamoDB-only process never needs.
        from crr_cli.localcloud import seams  # noqa: PLC0415

        seams.install()
    # One log line per request costs throughput and buries the errors that matter.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    # Counting at the server sees every process's requests (benchmarks read GET /_crr/requests).
    app = LocalCloudRoutes(RequestCounter(DomainDispatcherApplication(create_backend_app)), args.services)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.server_port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        _write_atomically(args.port_file, str(server.server_port))
    serving = "all services" if args.services is None else ", ".join(sorted(args.services))
    print(f"moto serving {serving} on http://{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of moto's many modules (most of a second); the server is
    # closed and nothing else holds state worth finalising.
    os._exit(exit_code)
