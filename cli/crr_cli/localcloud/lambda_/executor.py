"""Runs Lambda handler code locally in warm worker processes, one pool per function.

Each worker (`worker.py`) is a separate Python process that imports the handler once and then
serves invocations, like a warm Lambda execution environment. The pool hands an invocation to an
idle worker (most recently used first, so a quiet function keeps hitting the same warm worker),
starts a new one while fewer than `size` exist, and otherwise waits. The parent enforces the
function timeout: a worker that overruns it is killed (with anything it started) and replaced.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from crr_cli.localcloud.clients import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, endpoint_environment
from crr_cli.localcloud.deploy import DeployedFunction
from crr_cli.localcloud.lambda_ import protocol

INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase
TIMEOUT_GRACE_S = 0.05  # pipe and scheduling slack on top of the function timeout
STOP_TIMEOUT_S = 2.0
TIMED_OUT = "Sandbox.Timedout"
# Process basics a Python interpreter needs; nothing else of the developer's environment leaks in.
# CRR_LOCAL_FAULTS turns on fault injection in the workers (see faults.py); tests set it.
_INHERITED_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "CRR_LOCAL_FAULTS")


class ExecutorClosedError(RuntimeError):
    """The executor (or the function's pool) was closed; no more invocations are accepted."""


@dataclass(frozen=True)
class FunctionSpec:
    """What the executor needs to run one function."""

    stack_name: str
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    timeout_s: float
    memory_mb: int
    environment: Mapping[str, str]
    # The execution role's session (AccessKeyId, SecretAccessKey, SessionToken), as Lambda hands it
    # to the function; empty: the local cloud's test credentials.
    credentials: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, function: DeployedFunction, credentials: Mapping[str, str] | None = None) -> FunctionSpec:
        return cls(
            stack_name=function.stack_name,
            logical_id=function.logical_id,
            name=function.name,
            arn=function.arn,
            code_dir=function.code_dir,
            handler=function.handler,
            timeout_s=float(function.timeout_s),
            memory_mb=function.memory_mb,
            # Lambda hands every variable over as a string; moto keeps a Number parameter an int.
            environment={name: str(value) for name, value in function.environment.items()},
            credentials=dict(credentials or {}),
        )


@dataclass(frozen=True)
class Invocation:
    """Outcome of one invocation: the handler's result, or a Lambda-shaped error."""

    request_id: str
    function_name: str
    payload: Any
    error: protocol.ErrorPayload | None
    duration_ms: float
    worker_pid: int | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return self.error is not None and self.error["errorType"] == TIMED_OUT


def worker_environment(
    spec: FunctionSpec,
    endpoint_url: str,
    region: str,
    service_endpoints: Mapping[str, str] | None = None,
    local_settings: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a worker of `spec`: the function's variables plus Lambda's and ours.

    `service_endpoints` (boto3 service name -> endpoint) become the service-specific
    `AWS_ENDPOINT_URL_<SERVICE>` variables, which boto3 prefers over `AWS_ENDPOINT_URL`. Lambda's
    reserved variables and the local-cloud wiring override the function's own variables;
    `local_settings` are the local cloud's own switches for its workers (`CRR_LOCAL_LATENCY`, ...).
    """
    environment = {name: os.environ[name] for name in _INHERITED_VARIABLES if name in os.environ}
    environment.update(spec.environment)
    environment.update(endpoint_environment(endpoint_url, service_endpoints or {}))
    environment.update(
        {
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            # The developer's profiles and instance metadata must not leak into a local function.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally; metrics stay on (EMF to the log)
            "PYTHONDONTWRITEBYTECODE": "1",  # keep __pycache__ out of the source tree
        }
    )
    environment.update(local_settings or {})
    if spec.credentials:
        environment["AWS_ACCESS_KEY_ID"] = spec.credentials["AccessKeyId"]
        environment["AWS_SECRET_ACCESS_KEY"] = spec.credentials["SecretAccessKey"]
        environment["AWS_SESSION_TOKEN"] = spec.credentials["SessionToken"]
    return environment


class _WorkerGoneError(Exception):
    """The worker process exited or closed its protocol pipe."""


class _Worker:
    """One worker process and its protocol pipes."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str], log_path: Path) -> None:
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        command = [sys.executable, "-m", "crr_cli.localcloud.lambda_.worker", "--code-dir", str(spec.code_dir)]
        command += ["--handler", spec.handler, "--function-arn", spec.arn]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**environment, "AWS_LAMBDA_LOG_STREAM_NAME": stream},
                cwd=spec.code_dir,
                start_new_session=True,  # Ctrl-C reaches the parent only; it stops workers itself
            )
        self.pid = self.process.pid
        self.ready = False
        self._buffer = b""

    def _read_line(self, deadline: float) -> bytes | None:
        """Next protocol line, None at `deadline` (monotonic); raises _WorkerGoneError on EOF."""
        stdout: BinaryIO = self.process.stdout  # type: ignore[assignment]
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                readable, _, _ = select.select([stdout], [], [], remaining)
                if not readable:
                    return None
                chunk = os.read(stdout.fileno(), 1 << 16)
            except (OSError, ValueError) as error:  # the pipe was closed by stop()/kill()
                raise _WorkerGoneError from error
            if not chunk:
                raise _WorkerGoneError
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def wait_ready(self, deadline: float) -> protocol.ErrorPayload | None:
        """None once the handler is imported; the init error otherwise (the worker is then dead)."""
        if self.ready:
            return None
        try:
            line = self._read_line(deadline)
        except _WorkerGoneError:
            return self.exit_error("init")
        if line is None:
            self.kill()
            return protocol.error_payload("Runtime.InitTimeout", f"init exceeded {INIT_TIMEOUT_S:.0f}s")
        message = protocol.decode(line)
        if message["type"] != "ready":
            self.kill()
            error: protocol.ErrorPayload = message["error"]
            return error
        self.ready = True
        return None

    def send(self, request: dict[str, Any]) -> None:
        stdin: BinaryIO = self.process.stdin  # type: ignore[assignment]
        try:
            stdin.write(protocol.encode(request))
            stdin.flush()
        except (OSError, ValueError) as error:  # broken pipe, or closed by stop()/kill()
            raise _WorkerGoneError from error

    def receive(self, deadline: float) -> dict[str, Any] | None:
        line = self._read_line(deadline)
        return None if line is None else protocol.decode(line)

    def exit_error(self, phase: str) -> protocol.ErrorPayload:
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # closed its pipe but lingers: finish it
            self.kill()
            code = self.process.returncode
        return protocol.error_payload("Runtime.ExitError", f"Runtime exited during {phase} with exit status {code}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the worker and everything it started, and reap it."""
        if self.process.returncode is None:  # once reaped, the pid (and group id) may be reused
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        self._close_pipes()

    def stop(self) -> None:
        """Ask the worker to exit (stdin EOF), kill it when it does not within STOP_TIMEOUT_S."""
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


class FunctionPool:
    """Up to `size` warm workers of one function; `invoke` blocks while all are busy."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str], size: int, log_path: Path) -> None:
        self.spec = spec
        self.size = size
        self._environment = dict(environment)
        self._log_path = log_path
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []  # a stack: the most recently used worker is reused first
        self._workers: set[_Worker] = set()
        self._closed = False

    def _spawn(self) -> _Worker:
        worker = _Worker(self.spec, self._environment, self._log_path)
        self._workers.add(worker)
        return worker

    def prewarm(self, count: int) -> None:
        """Start workers until `count` (at most `size`) exist, without waiting for their init."""
        with self._lock:
            while not self._closed and len(self._workers) < min(count, self.size):
                self._idle.append(self._spawn())

    def _checkout(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ExecutorClosedError(self.spec.name)
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._workers.discard(worker)
            return self._spawn()

    def _checkin(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(worker)
                return
            self._workers.discard(worker)
        worker.kill()
        with self._lock:
            if not self._closed:  # replace it now, so the next invocation finds a warm worker
                self._idle.append(self._spawn())

    def _log(self, line: str) -> None:
        with self._log_path.open("a", encoding="utf-8") as log:
            log.write(f"{datetime.now(UTC).isoformat()} {line}\n")

    def invoke(self, event: Any, request_id: str | None = None) -> Invocation:
        """Run the handler on `event` in a warm worker.

        Handler exceptions, init failures, crashes and timeouts come back as an Invocation whose
        `error` is set (Lambda's FunctionError). Raises ExecutorClosedError after `close()`, and
        TypeError/ValueError when `event` is not JSON-serialisable.
        """
        request_id = request_id or str(uuid.uuid4())
        with self._slots:
            worker = self._checkout()
            started = time.monotonic()
            healthy = False
            try:
                error = worker.wait_ready(started + INIT_TIMEOUT_S)
                if error is not None:
                    return self._failed(request_id, error, started, worker)
                begun = time.monotonic()
                deadline_ms = int(time.time() * 1000 + self.spec.timeout_s * 1000)
                worker.send({"type": "invoke", "request_id": request_id, "deadline_ms": deadline_ms, "event": event})
                answer = worker.receive(begun + self.spec.timeout_s + TIMEOUT_GRACE_S)
                if answer is None:
                    message = f"Task timed out after {self.spec.timeout_s:.2f} seconds"
                    self._log(f"{request_id} {message}")
                    return self._failed(request_id, protocol.error_payload(TIMED_OUT, message), begun, worker)
                healthy = True
                return Invocation(
                    request_id=request_id,
                    function_name=self.spec.name,
                    payload=answer.get("payload"),
                    error=answer.get("error"),
                    duration_ms=(time.monotonic() - begun) * 1000,
                    worker_pid=worker.pid,
                )
            except _WorkerGoneError:
                return self._failed(request_id, worker.exit_error("invoke"), started, worker)
            finally:
                self._checkin(worker, healthy)

    def _failed(self, request_id: str, error: protocol.ErrorPayload, started: float, worker: _Worker) -> Invocation:
        return Invocation(
            request_id=request_id,
            function_name=self.spec.name,
            payload=None,
            error=error,
            duration_ms=(time.monotonic() - started) * 1000,
            worker_pid=worker.pid,
        )

    def worker_pids(self) -> list[int]:
        """Process ids of this pool's live workers."""
        with self._lock:
            return sorted(worker.pid for worker in self._workers if worker.alive())

    def close(self) -> None:
        """Stop every worker, idle or busy; later invocations raise ExecutorClosedError."""
        with self._lock:
            self._closed = True
            workers, self._workers, self._idle = list(self._workers), set(), []
        for worker in workers:
            worker.stop()


class LambdaExecutor:
    """The local Lambda service: one `FunctionPool` per registered function."""

    def __init__(
        self,
        endpoint_url: str,
        log_dir: Path,
        service_endpoints: Mapping[str, str] | None = None,
        follow_log: Callable[[Path, str], None] | None = None,
        local_settings: Mapping[str, str] | None = None,
    ) -> None:
        """``follow_log(log path, region)`` is told of each function's log when the function is
        registered (the local cloud extracts its EMF metrics, as CloudWatch Logs does);
        `local_settings` go into every worker's environment (see `worker_environment`)."""
        self.endpoint_url = endpoint_url
        self.service_endpoints = dict(service_endpoints or {})
        self.local_settings = dict(local_settings or {})
        self.log_dir = log_dir
        self._follow_log = follow_log
        self._pools: dict[str, FunctionPool] = {}
        self._lock = threading.Lock()

    def register(self, spec: FunctionSpec, region: str, concurrency: int) -> FunctionPool:
        """Create the pool of `spec` with `concurrency` workers at most.

        Its log is `<log_dir>/<stack>-<logical id>.log`. The pool is found by function name, ARN,
        `<stack>/<logical id>` and logical id (the latest registration wins for a logical id that
        several stacks share).
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        environment = worker_environment(spec, self.endpoint_url, region, self.service_endpoints, self.local_settings)
        log_path = self.log_dir / f"{spec.stack_name}-{spec.logical_id}.log"
        if self._follow_log is not None:
            self._follow_log(log_path, region)
        pool = FunctionPool(spec, environment, concurrency, log_path)
        with self._lock:
            replaced = self._pools.get(f"{spec.stack_name}/{spec.logical_id}")
            for key in (spec.logical_id, f"{spec.stack_name}/{spec.logical_id}", spec.name, spec.arn):
                self._pools[key] = pool
        if replaced is not None:  # a redeployed stack: its old workers go, as Lambda's do on an update
            replaced.close()
        return pool

    def pool(self, function: str) -> FunctionPool:
        """The pool of the function with this name, ARN, `<stack>/<logical id>` or logical id; KeyError when unknown."""
        with self._lock:
            return self._pools[function]

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke `function` (logical id, name or ARN) synchronously; see `FunctionPool.invoke`."""
        return self.pool(function).invoke(event)

    def close(self) -> None:
        """Stop all workers of all functions."""
        with self._lock:
            pools = {id(pool): pool for pool in self._pools.values()}
            self._pools.clear()
        for pool in pools.values():
            pool.close()
