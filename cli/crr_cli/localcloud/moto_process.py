"""A moto server process of the local cloud: `python -m crr_cli.localcloud.moto_process --port N`.

Binds 127.0.0.1 (port 0 picks a free one), exports the bound port as `MOTO_PORT` (moto's Step
Functions interpreter calls back to it), writes the port to `--port-file` once it accepts
connections, and exits when SIGTERM/SIGINT arrives or its parent process goes away, so a crashed
parent leaves no orphan server behind.

The local cloud runs two: the main one serves every service, with our seams (`moto_seams`); one
started with `--services dynamodb` serves DynamoDB (and DynamoDB Streams, signed as `dynamodb`)
only, so the two GIL-bound servers use two cores. The main one accepts `POST /_crr/endpoints` with
a JSON object `{boto3 service name: endpoint}`: Step Functions tasks for those services then go
there. Each refuses the requests of services the other serves (`LocalCloudRoutes`). The main one
also accepts `POST /_crr/task-endpoints` with the same document: only the Step Functions tasks of
those services go there, and this process keeps serving their API (the local cloud sends Lambda
invocations to its own executor while moto keeps the functions), and `GET`/`POST /_crr/seams`
(the SQS and copy-rate seams' settings, `sqs_seams`). Both count requests (`request_counter`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from crr_cli.localcloud.request_counter import Environ, RequestCounter, StartResponse, WsgiApp, signing_service

PARENT_CHECK_INTERVAL_S = 1.0
CONTROL_PREFIX = "/_crr/"
ENDPOINTS_PATH = "/_crr/endpoints"
TASK_ENDPOINTS_PATH = "/_crr/task-endpoints"
IAM_PATH = "/_crr/iam"  # POST {"managed_policies": [...]}: enforce IAM (iam_seams.enable)
ASSUME_ROLE_PATH = "/_crr/assume-role"  # POST {"RoleArn", "Service", "SessionName"}: role credentials
REGION_MISSES_PATH = "/_crr/region-misses"
SEAMS_PATH = "/_crr/seams"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m crr_cli.localcloud.moto_process")
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


def _answer(start_response: StartResponse, status: str, document: object) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class LocalCloudRoutes:
    """WSGI wrapper that keeps every service in exactly one process of the local cloud.

    With `services` (a DynamoDB process), requests signed for any other service are refused. Without
    (the main process), `POST /_crr/endpoints` names the services served elsewhere: from then on their
    requests are refused here, and Step Functions tasks for them go there. A client pointed at the
    wrong process thus fails loudly instead of finding (or filling) state nobody else sees, such as
    the orphan tables moto's CloudFormation creates here. `POST /_crr/task-endpoints` routes only the
    Step Functions tasks of the named services and refuses nothing.
    """

    def __init__(self, app: WsgiApp, services: frozenset[str] | None) -> None:
        self._app = app
        self._services = services
        self._elsewhere: dict[str, str] = {}  # boto3 service name -> endpoint

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if path.startswith(CONTROL_PREFIX):
            return self._control(path, environ, start_response)
        service = signing_service(environ)  # DynamoDB Streams signs as dynamodb, like DynamoDB
        if service is None:
            return self._app(environ, start_response)
        if self._services is not None and service not in self._services:
            served = ", ".join(sorted(self._services))
            return self._refuse(
                start_response, f"this process serves only {served}; send {service} to AWS_ENDPOINT_URL"
            )
        if service in self._elsewhere:
            return self._refuse(start_response, f"{service} is served at {self._elsewhere[service]}, not here")
        return self._app(environ, start_response)

    def _control(self, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The local cloud's own endpoints (under /_crr/), which no AWS client calls; the request
        counter inside answers the rest."""
        if path in (ENDPOINTS_PATH, TASK_ENDPOINTS_PATH):
            return self._set_endpoints(environ, start_response, served_here=path == TASK_ENDPOINTS_PATH)
        if path in (IAM_PATH, ASSUME_ROLE_PATH):
            return self._iam(path, environ, start_response)
        if path == REGION_MISSES_PATH and self._services is None:
            from crr_cli.localcloud import s3_fidelity  # noqa: PLC0415 - see main()

            return _answer(start_response, "200 OK", {"region_misses": s3_fidelity.region_misses()})
        if path == SEAMS_PATH and self._services is None:
            return self._configure_seams(environ, start_response)
        return self._app(environ, start_response)  # the request counter's own endpoints

    def _refuse(self, start_response: StartResponse, reason: str) -> Iterable[bytes]:
        message = f"wrong local cloud endpoint: {reason} (see `LocalCloud.aws_environment()`)"
        print(message, file=sys.stderr, flush=True)
        return _answer(start_response, "400 Bad Request", {"__type": "LocalCloudWrongEndpoint", "message": message})

    def _configure_seams(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """GET: the SQS and copy seams' settings; POST: change them (`sqs_seams.configure`)."""
        from crr_cli.localcloud import sqs_seams  # noqa: PLC0415 - see main()

        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = (
            json.loads(environ["wsgi.input"].read(length) or b"{}") if environ["REQUEST_METHOD"] == "POST" else {}
        )
        return _answer(start_response, "200 OK", sqs_seams.configure(document))

    def _set_endpoints(self, environ: Environ, start_response: StartResponse, served_here: bool) -> Iterable[bytes]:
        """Route Step Functions tasks of the posted services; unless `served_here`, refuse their API here."""
        if self._services is not None or environ["REQUEST_METHOD"] != "POST":
            return _answer(start_response, "404 Not Found", {"message": "only the main process routes endpoints"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = json.loads(environ["wsgi.input"].read(length) or b"{}")
        endpoints = {str(name): str(url) for name, url in document.items()}
        from crr_cli.localcloud import moto_seams  # noqa: PLC0415 - see main()

        moto_seams.route_step_functions_tasks(endpoints)
        if not served_here:
            self._elsewhere.update(endpoints)
        return _answer(start_response, "200 OK", endpoints)

    def _iam(self, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Switch IAM enforcement on, or hand out a role's credentials to a service (see iam_seams)."""
        if self._services is not None or environ["REQUEST_METHOD"] != "POST":
            return _answer(start_response, "404 Not Found", {"message": "only the main process holds IAM"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = json.loads(environ["wsgi.input"].read(length) or b"{}")
        from crr_cli.localcloud import iam_seams  # noqa: PLC0415 - see main()

        if path == IAM_PATH:
            policies = [str(name) for name in document.get("managed_policies", [])]
            return _answer(start_response, "200 OK", iam_seams.enable(policies, bool(document.get("enforce", True))))
        try:
            credentials = iam_seams.assume_role_as_service(
                document["RoleArn"], document["Service"], document.get("SessionName", "local")
            )
        except iam_seams.RoleNotAssumableError as error:
            return _answer(start_response, "403 Forbidden", {"__type": "AccessDenied", "message": str(error)})
        return _answer(start_response, "200 OK", credentials)


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
        # Imported only here: the seams load moto's S3 and SQS, which a DynamoDB-only process never needs.
        from crr_cli.localcloud import moto_seams, sqs_seams  # noqa: PLC0415

        moto_seams.install()
        sqs_seams.install()
        from crr_cli.localcloud import iam_seams  # noqa: PLC0415 - moto's IAM and STS, as above

        iam_seams.install()
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
