"""The local cloud's routes in front of moto: one process per service, and the control routes `/_crr/...`.

`LocalCloudRoutes` wraps each moto server process's WSGI app. Requests signed for a service the
process does not serve are refused (400 `LocalCloudWrongEndpoint`), so a client pointed at the wrong
process fails loudly. Paths under `/_crr/` are the local cloud's own, which no AWS client calls:

    POST /_crr/endpoints        {boto3 service: endpoint}: served elsewhere; Step Functions tasks go there
    POST /_crr/task-endpoints   the same, for the Step Functions tasks only (the API stays here)
    POST /_crr/iam              {"managed_policies": [...], "enforce": bool}: IAM enforcement (`seams.iam`)
    POST /_crr/assume-role      {"RoleArn", "Service", "SessionName"}: a role's session for a service
    GET  /_crr/region-misses    requests refused for signing the wrong region (`seams.s3_fidelity`)
    GET/POST /_crr/seams        the SQS and copy seams' settings (`seams.queues_and_copies`)
    GET/POST /_crr/requests, GET /_crr/writes    the request counter's (`request_counter`)

All but the last are served by the main process only. The seams are imported when a route first
needs them: they load moto's S3, SQS and IAM, which a DynamoDB-only process never needs.

DynamoDB requests are served one at a time. DynamoDB makes each write atomic and isolates each
transaction from every other request
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation);
moto, served by a threaded server, does neither: a conditional write checks and writes in two steps, and
TransactWriteItems deep-copies the whole table first and puts that copy back when the transaction is
cancelled, erasing what other requests wrote meanwhile, or fails with a 500 when one writes while it
copies. crr's backfill workers and copy threads write at once, so the local cloud serialises them
(tests/parity/test_parity_dynamodb.py).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable

from crr_cli.localcloud.server.request_counter import Environ, StartResponse, WsgiApp, signing_service

CONTROL_PREFIX = "/_crr/"
ENDPOINTS_PATH = "/_crr/endpoints"
TASK_ENDPOINTS_PATH = "/_crr/task-endpoints"
IAM_PATH = "/_crr/iam"  # POST {"managed_policies": [...]}: enforce IAM (seams.iam.enable)
ASSUME_ROLE_PATH = "/_crr/assume-role"  # POST {"RoleArn", "Service", "SessionName"}: role credentials
REGION_MISSES_PATH = "/_crr/region-misses"
SEAMS_PATH = "/_crr/seams"


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
        self._dynamodb_serial = threading.Lock()

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
        if service == "dynamodb":
            with self._dynamodb_serial:
                # The body is read inside the lock: a WSGI app may do its work as it is iterated.
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)

    def _control(self, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The local cloud's own endpoints (under /_crr/), which no AWS client calls; the request
        counter inside answers the rest."""
        if path in (ENDPOINTS_PATH, TASK_ENDPOINTS_PATH):
            return self._set_endpoints(environ, start_response, served_here=path == TASK_ENDPOINTS_PATH)
        if path in (IAM_PATH, ASSUME_ROLE_PATH):
            return self._iam(path, environ, start_response)
        if path == REGION_MISSES_PATH and self._services is None:
            from crr_cli.localcloud.seams import s3_fidelity  # noqa: PLC0415 - see the module docstring

            return _answer(start_response, "200 OK", {"region_misses": s3_fidelity.region_misses()})
        if path == SEAMS_PATH and self._services is None:
            return self._configure_seams(environ, start_response)
        return self._app(environ, start_response)  # the request counter's own endpoints

    def _refuse(self, start_response: StartResponse, reason: str) -> Iterable[bytes]:
        message = f"wrong local cloud endpoint: {reason} (see `LocalCloud.aws_environment()`)"
        print(message, file=sys.stderr, flush=True)
        return _answer(start_response, "400 Bad Request", {"__type": "LocalCloudWrongEndpoint", "message": message})

    def _configure_seams(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """GET: the SQS and copy seams' settings; POST: change them (`queues_and_copies.configure`)."""
        from crr_cli.localcloud.seams import queues_and_copies  # noqa: PLC0415 - see the module docstring

        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = (
            json.loads(environ["wsgi.input"].read(length) or b"{}") if environ["REQUEST_METHOD"] == "POST" else {}
        )
        return _answer(start_response, "200 OK", queues_and_copies.configure(document))

    def _set_endpoints(self, environ: Environ, start_response: StartResponse, served_here: bool) -> Iterable[bytes]:
        """Route Step Functions tasks of the posted services; unless `served_here`, refuse their API here."""
        if self._services is not None or environ["REQUEST_METHOD"] != "POST":
            return _answer(start_response, "404 Not Found", {"message": "only the main process routes endpoints"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = json.loads(environ["wsgi.input"].read(length) or b"{}")
        endpoints = {str(name): str(url) for name, url in document.items()}
        from crr_cli.localcloud.seams import stepfunctions_tasks  # noqa: PLC0415 - see the module docstring

        stepfunctions_tasks.route_step_functions_tasks(endpoints)
        if not served_here:
            self._elsewhere.update(endpoints)
        return _answer(start_response, "200 OK", endpoints)

    def _iam(self, path: str, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Switch IAM enforcement on, or hand out a role's credentials to a service (see `seams.iam`)."""
        if self._services is not None or environ["REQUEST_METHOD"] != "POST":
            return _answer(start_response, "404 Not Found", {"message": "only the main process holds IAM"})
        length = int(environ.get("CONTENT_LENGTH") or 0)
        document = json.loads(environ["wsgi.input"].read(length) or b"{}")
        from crr_cli.localcloud.seams import iam  # noqa: PLC0415 - see the module docstring

        if path == IAM_PATH:
            policies = [str(name) for name in document.get("managed_policies", [])]
            return _answer(start_response, "200 OK", iam.enable(policies, bool(document.get("enforce", True))))
        try:
            credentials = iam.assume_role_as_service(
                document["RoleArn"], document["Service"], document.get("SessionName", "local")
            )
        except iam.RoleNotAssumableError as error:
            return _answer(start_response, "403 Forbidden", {"__type": "AccessDenied", "message": str(error)})
        return _answer(start_response, "200 OK", credentials)
