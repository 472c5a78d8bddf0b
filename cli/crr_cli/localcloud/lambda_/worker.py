"""A warm Lambda execution environment: `python -m crr_cli.localcloud.lambda_.worker --code-dir D --handler H`.

Started by the executor with the function's environment. It imports the handler once (the init
phase), then serves invocations read from stdin until stdin closes, answering on a private copy of
the original stdout (see `protocol`). fd 1 and `sys.stdout` are pointed at fd 2, the function's
log, so prints and Powertools' EMF lines cannot corrupt the protocol. The parent enforces the
timeout by killing this process; the worker also exits when its parent disappears.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from crr_cli.localcloud.lambda_ import faults, latency, protocol

PARENT_CHECK_INTERVAL_S = 1.0


class LambdaContext:
    """The attributes and method of the Lambda Python runtime's context object."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = invoked_function_arn
        # The runtime passes the memory size through as the environment's string.
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def _protocol_streams() -> tuple[BinaryIO, BinaryIO]:
    """Move the protocol off fds 0/1 and point fd 1 at the log (fd 2), fd 0 at /dev/null."""
    protocol_in = os.fdopen(os.dup(0), "rb")
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return protocol_in, protocol_out


def _load_handler(code_dir: Path, handler: str) -> Callable[[Any, LambdaContext], Any]:
    module_path, _, function_name = handler.rpartition(".")
    if not module_path or not function_name:
        raise ValueError(f"handler {handler!r} is not <module>.<function>")
    faults.install_from_environment()  # a no-op unless a test asked for injected faults
    latency.install_from_environment()  # a no-op unless the local cloud runs with the latency model
    sys.path.insert(0, str(code_dir))
    os.chdir(code_dir)
    module = importlib.import_module(module_path.replace("/", "."))
    function = getattr(module, function_name)
    if not callable(function):
        raise TypeError(f"{handler} is not callable")
    return function  # type: ignore[no-any-return]


def _exit_when_orphaned() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _send(stream: BinaryIO, line: bytes) -> None:
    stream.write(line)
    stream.flush()


def _error_of(error: BaseException) -> protocol.ErrorPayload:
    stack = traceback.format_tb(error.__traceback__)
    return protocol.error_payload(type(error).__name__, str(error), [line.rstrip() for line in stack])


def _invoke(handler: Callable[[Any, LambdaContext], Any], request: dict[str, Any], function_arn: str) -> bytes:
    """Run one invocation; returns the encoded answer line (result or Lambda-shaped error)."""
    request_id = str(request["request_id"])
    context = LambdaContext(request_id, int(request["deadline_ms"]), function_arn)
    print(f"START RequestId: {request_id} Version: {context.function_version}", flush=True)
    started = time.perf_counter()
    failure: protocol.ErrorPayload | None = None
    try:
        payload = handler(request["event"], context)
    except Exception as error:  # noqa: BLE001 - any handler exception is the invocation's error
        traceback.print_exception(error, file=sys.stderr)
        failure = _error_of(error)
    line = b""
    if failure is None:
        try:
            line = protocol.encode({"type": "result", "request_id": request_id, "payload": payload})
        except (TypeError, ValueError) as error:  # the handler returned something JSON cannot carry
            failure = protocol.error_payload("Runtime.MarshalError", f"Unable to marshal response: {error}")
    if failure is not None:
        print(f"[ERROR] {failure['errorType']}: {failure['errorMessage']}", file=sys.stderr, flush=True)
        line = protocol.encode({"type": "error", "request_id": request_id, "error": failure})
    duration_ms = (time.perf_counter() - started) * 1000
    print(f"END RequestId: {request_id}", flush=True)
    print(f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms", flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    """Run the worker until the parent closes stdin; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m crr_cli.localcloud.lambda_.worker")
    parser.add_argument("--code-dir", type=Path, required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--function-arn", default="")
    args = parser.parse_args(argv)

    protocol_in, protocol_out = _protocol_streams()
    _exit_when_orphaned()
    started = time.perf_counter()
    try:
        handler = _load_handler(args.code_dir, args.handler)
    except Exception as error:  # noqa: BLE001 - any import-time error is the function's init error
        traceback.print_exception(error, file=sys.stderr)
        failure = _error_of(error)
        failure["errorType"] = f"Runtime.ImportModuleError: {failure['errorType']}"
        _send(protocol_out, protocol.encode({"type": "init_error", "pid": os.getpid(), "error": failure}))
        return 1
    init_ms = (time.perf_counter() - started) * 1000
    _send(protocol_out, protocol.encode({"type": "ready", "pid": os.getpid(), "init_ms": init_ms}))

    for line in protocol_in:
        _send(protocol_out, _invoke(handler, protocol.decode(line), args.function_arn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
