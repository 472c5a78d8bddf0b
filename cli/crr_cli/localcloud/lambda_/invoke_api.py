"""Lambda's Invoke API over HTTP, answered by the local cloud's own executor.

moto's Step Functions interpreter invokes functions (`arn:aws:states:::lambda:invoke` tasks, Task
states whose Resource is a function ARN, `aws-sdk:lambda:invoke`) with a boto3 Lambda client, and
moto's own Lambda needs Docker to run code. The local cloud serves this API from its own process
and points those clients at it (`seams.stepfunctions_tasks`), so the handlers run in
the same warm workers as everything else (`LambdaExecutor`).

`POST /2015-03-31/functions/{FunctionName}/invocations` answers as Lambda does:
* FunctionName is a name, an ARN or a partial ARN (`account:function:name`), with or without a
  qualifier; every qualifier runs the deployed code (there is only `$LATEST` locally);
* the request body is the event, as JSON (empty means `{}`), and the handler's result comes back
  as JSON;
* a handler exception, an init failure, a crash or a timeout answers 200 with
  `X-Amz-Function-Error: Unhandled` and the payload `{"errorMessage", "errorType", "requestId",
  "stackTrace"}` (a timeout's errorType is `Sandbox.Timedout`), which Step Functions turns into
  the error name that Retry and Catch match;
* `X-Amz-Invocation-Type: Event` answers 202 and runs the invocation in the background,
  `DryRun` answers 204; an unknown function is a 404 `ResourceNotFoundException`.
`X-Amz-Log-Type: Tail` is accepted, but no log tail comes back (the logs are in the function's
log file). Every other request (GetFunction, ...) is forwarded unchanged to moto.

Dev and test tool only; never deployed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crr_cli.localcloud.lambda_.executor import ExecutorClosedError, FunctionPool, Invocation, LambdaExecutor

logger = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
FORWARD_TIMEOUT_S = 60.0
# Hop-by-hop headers, and those the forwarding request sets itself.
_NOT_FORWARDED = frozenset(("host", "connection", "keep-alive", "transfer-encoding", "content-length", "te"))


def resolve_function(executor: LambdaExecutor, function_name: str) -> FunctionPool | None:
    """The pool of the function Lambda would invoke for `function_name` (name, ARN or partial ARN,
    qualifier optional), or None when no deployed function has that name or ARN."""
    parts = function_name.split(":")
    if function_name.startswith("arn:"):
        wanted = ":".join(parts[:7])  # arn:aws:lambda:<region>:<account>:function:<name>[:qualifier]
    elif len(parts) >= 3 and parts[1] == "function":
        wanted = parts[2]  # <account>:function:<name>[:qualifier]
    else:
        wanted = parts[0]  # <name>[:qualifier]
    try:
        pool = executor.pool(wanted)
    except KeyError:
        return None
    # The executor also knows pools by logical id, which Lambda does not.
    return pool if wanted in (pool.spec.name, pool.spec.arn) else None


def error_document(invocation: Invocation) -> dict[str, Any]:
    """The payload Lambda returns for a failed invocation (the Python runtime's field order)."""
    error = invocation.error or {"errorType": "Unknown", "errorMessage": "", "stackTrace": []}
    return {
        "errorMessage": error["errorMessage"],
        "errorType": error["errorType"],
        "requestId": invocation.request_id,
        "stackTrace": error["stackTrace"],
    }


class _LambdaHandler(BaseHTTPRequestHandler):
    """One HTTP request to the local Lambda API (see the module docstring)."""

    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK, about 40 ms per invocation.
    disable_nagle_algorithm = True
    server: _LambdaHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # the base class's parameter name
        logger.debug("%s " + format, self.address_string(), *args)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fail(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode("utf-8")
        self._reply(status, body, {"Content-Type": "application/json", "X-Amzn-ErrorType": error_type})

    def do_POST(self) -> None:
        match = INVOKE_PATH.match(urllib.parse.urlsplit(self.path).path)
        if match is None:
            self._forward()
            return
        body = self._body()
        function_name = urllib.parse.unquote(match.group("function"))
        pool = resolve_function(self.server.executor, function_name)
        if pool is None:
            self._fail(404, "ResourceNotFoundException", f"Function not found: {function_name}")
            return
        try:
            event = json.loads(body) if body.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self._fail(400, "InvalidRequestContentException", f"Could not parse request body into json: {error}")
            return
        self._invoke(pool, event, self.headers.get("X-Amz-Invocation-Type", "RequestResponse"))

    def _invoke(self, pool: FunctionPool, event: Any, invocation_type: str) -> None:
        request_id = str(uuid.uuid4())
        if invocation_type == "DryRun":
            self._reply(204, b"", {"X-Amzn-RequestId": request_id})
            return
        if invocation_type == "Event":
            threading.Thread(
                target=_invoke_in_background, args=(pool, event, request_id), name="lambda-event", daemon=True
            ).start()
            self._reply(202, b"", {"X-Amzn-RequestId": request_id})
            return
        if invocation_type != "RequestResponse":
            self._fail(400, "InvalidParameterValueException", f"Unsupported invocation type {invocation_type}")
            return
        try:
            invocation = pool.invoke(event, request_id)
        except ExecutorClosedError as error:
            self._fail(503, "ServiceException", f"the local cloud is stopping: {error}")
            return
        headers = {
            "Content-Type": "application/json",
            "X-Amzn-RequestId": request_id,
            "X-Amz-Executed-Version": "$LATEST",
        }
        if invocation.ok:
            body = json.dumps(invocation.payload, separators=(",", ":")).encode("utf-8")
        else:
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = json.dumps(error_document(invocation), separators=(",", ":")).encode("utf-8")
        self._reply(200, body, headers)

    def _forward(self) -> None:
        """Send the request on to moto unchanged and relay its answer."""
        body = self._body()
        # Host stays: it is signed, and moto checks the signature (IAM is enforced).
        kept = _NOT_FORWARDED - {"host"}
        headers = {name: value for name, value in self.headers.items() if name.lower() not in kept}
        request = urllib.request.Request(  # noqa: S310 - moto's http URL on 127.0.0.1
            self.server.fallback_url + self.path, data=body or None, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=FORWARD_TIMEOUT_S) as answer:  # noqa: S310
                status, answer_headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, answer_headers, data = error.code, error.headers, error.read()
        except (urllib.error.URLError, OSError) as error:
            self._fail(502, "ServiceException", f"moto did not answer: {error}")
            return
        relayed = {name: value for name, value in answer_headers.items() if name.lower() not in _NOT_FORWARDED}
        self._reply(status, data, relayed)

    do_GET = do_PUT = do_DELETE = do_PATCH = _forward  # noqa: N815 - BaseHTTPRequestHandler's naming


def _invoke_in_background(pool: FunctionPool, event: Any, request_id: str) -> None:
    try:
        invocation = pool.invoke(event, request_id)
    except ExecutorClosedError:
        return
    if not invocation.ok:
        logger.warning("asynchronous invocation %s of %s failed: %s", request_id, pool.spec.name, invocation.error)


class _LambdaHttpServer(ThreadingHTTPServer):
    daemon_threads = True  # an invocation in flight must not keep the process alive

    def __init__(self, address: tuple[str, int], executor: LambdaExecutor, fallback_url: str) -> None:
        super().__init__(address, _LambdaHandler)
        self.executor = executor
        self.fallback_url = fallback_url.rstrip("/")

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client closed its keep-alive connection
            return
        logger.exception("local Lambda API: a request from %s failed", client_address)


class LambdaApiServer:
    """The local Lambda API (see the module docstring) on 127.0.0.1, served from a thread.

    server = LambdaApiServer(executor, moto_endpoint)
    url = server.start()   # http://127.0.0.1:<free port>
    ...
    server.stop()
    """

    def __init__(self, executor: LambdaExecutor, fallback_url: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _LambdaHttpServer((host, port), executor, fallback_url)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint URL (for a boto3 Lambda client's `endpoint_url`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Serve from a daemon thread; returns `url`. Raises RuntimeError when already started."""
        if self._thread is not None:
            raise RuntimeError("the local Lambda API is already started")
        self._thread = threading.Thread(target=self._server.serve_forever, name="lambda-api", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); invocations in flight are abandoned."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
