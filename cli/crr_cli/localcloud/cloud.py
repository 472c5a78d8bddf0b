"""`LocalCloud`: moto in its own process + our template deploy, Lambda executor and SQS pollers.

    with LocalCloud() as cloud:
        endpoint = cloud.start()
        stack = cloud.deploy(Path("template.yaml"), "crr-local", "us-west-1", {...})
        cloud.client("s3", "us-west-1").put_object(...)

Dev and test tool only; never deployed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from crr_cli.localcloud.clients import ClientFactory
from crr_cli.localcloud.deploy import DeployedStack, deploy_stack
from crr_cli.localcloud.executor import FunctionSpec, Invocation, LambdaExecutor
from crr_cli.localcloud.poller import DEFAULT_CONCURRENCY, SqsEventSourcePoller

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
MIN_POOL_SIZE = 2  # Lambda's smallest MaximumConcurrency
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}}


class LocalCloudError(RuntimeError):
    """The local cloud could not start, or was used before `start()` / after `stop()`."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalCloud:
    """The embedded local cloud: moto server process, deployed stacks, warm workers, SQS pollers."""

    def __init__(self, *, state_dir: Path | None = None, log_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or Path.cwd() / ".local-cloud").resolve()
        self.log_dir = (log_dir or self.state_dir / "logs").resolve()
        self.stacks: dict[str, DeployedStack] = {}
        self._endpoint_url: str | None = None
        self._moto: subprocess.Popen[bytes] | None = None
        self._clients: ClientFactory | None = None
        self._executor: LambdaExecutor | None = None
        self._pollers: list[SqsEventSourcePoller] = []
        self._lock = threading.Lock()

    def __enter__(self) -> LocalCloud:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise LocalCloudError("the local cloud is not started")
        return self._endpoint_url

    @property
    def moto_pid(self) -> int | None:
        return None if self._moto is None else self._moto.pid

    def start(self, port: int | None = None) -> str:
        """Start moto (on `port`, or a free port when None) and wait until it serves; returns the endpoint.

        Raises LocalCloudError when moto exits early (e.g. the port is taken) or is not ready within
        START_TIMEOUT_S.
        """
        if self._moto is not None:
            raise LocalCloudError("the local cloud is already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.state_dir / f"moto-{uuid.uuid4().hex}.port"
        log_path = self.log_dir / "moto.log"
        environment = dict(os.environ)
        if port:
            environment["MOTO_PORT"] = str(port)
        command = [sys.executable, "-m", "crr_cli.localcloud.moto_process", "--port", str(port or 0)]
        command += ["--port-file", str(port_file), "--parent-pid", str(os.getpid())]
        with log_path.open("ab") as log:
            self._moto = subprocess.Popen(command, stdout=log, stderr=log, env=environment, start_new_session=True)
        try:
            bound = self._wait_for_port(port_file, log_path)
            self._endpoint_url = f"http://127.0.0.1:{bound}"
            self._configure_moto(log_path)
        except BaseException:
            self.stop()
            raise
        finally:
            port_file.unlink(missing_ok=True)
        self._clients = ClientFactory(self._endpoint_url)
        self._executor = LambdaExecutor(self._endpoint_url, self.log_dir)
        return self._endpoint_url

    def _check_moto_alive(self, log_path: Path) -> None:
        assert self._moto is not None
        if self._moto.poll() is not None:
            raise LocalCloudError(f"moto exited with {self._moto.returncode}:\n{_tail(log_path)}")

    def _wait_for_port(self, port_file: Path, log_path: Path) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            self._check_moto_alive(log_path)
            if time.monotonic() > deadline:
                raise LocalCloudError(f"moto did not bind within {START_TIMEOUT_S:.0f}s:\n{_tail(log_path)}")
            time.sleep(0.02)
        return int(port_file.read_text(encoding="utf-8"))

    def _configure_moto(self, log_path: Path) -> None:
        """POST moto's config (Step Functions execute ASL), retrying until moto answers."""
        request = urllib.request.Request(  # noqa: S310 - a fixed http URL on 127.0.0.1
            f"{self.endpoint_url}/moto-api/config",
            data=json.dumps(MOTO_CONFIG).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._check_moto_alive(log_path)
            try:
                with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                    return
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise LocalCloudError(f"moto not ready within {START_TIMEOUT_S:.0f}s: {error}") from error
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop pollers, workers and the moto process (idempotent); leaves no child processes."""
        with self._lock:
            pollers, self._pollers = self._pollers, []
            executor, self._executor = self._executor, None
            moto, self._moto = self._moto, None
            self._endpoint_url = None
            self._clients = None
        for poller in pollers:
            poller.request_stop()  # signal all before joining any
        for poller in pollers:
            poller.stop()
        if executor is not None:
            executor.close()
        if moto is not None:
            moto.terminate()
            try:
                moto.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                moto.kill()
                moto.wait()

    # ------------------------------------------------------------------ use

    @property
    def clients(self) -> ClientFactory:
        if self._clients is None:
            raise LocalCloudError("the local cloud is not started")
        return self._clients

    @property
    def executor(self) -> LambdaExecutor:
        if self._executor is None:
            raise LocalCloudError("the local cloud is not started")
        return self._executor

    def client(self, service: str, region: str | None = None) -> Any:
        """A cached boto3 client for the local endpoint (test credentials, checksums when required)."""
        return self.clients.client(service, region)

    def deploy(
        self,
        template_path: Path,
        stack_name: str,
        region: str,
        parameters: Mapping[str, str],
        *,
        event_sources: bool = True,
    ) -> DeployedStack:
        """Deploy the SAM template as `stack_name` in `region`, start its functions' worker pools and
        (unless `event_sources` is False) its SQS pollers.

        Raises deploy.DeployError when the template cannot be deployed locally.
        """
        stack = deploy_stack(self.clients, Path(template_path), stack_name, region, parameters)
        concurrency: dict[str, int] = {}
        for mapping in stack.event_source_mappings:
            wanted = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
            concurrency[mapping.function_logical_id] = concurrency.get(mapping.function_logical_id, 0) + wanted
        for function in stack.functions.values():
            size = max(MIN_POOL_SIZE, concurrency.get(function.logical_id, MIN_POOL_SIZE))
            self.executor.register(FunctionSpec.of(function), region, size)
        self.stacks[stack_name] = stack
        if event_sources:
            sqs = self.client("sqs", region)
            for mapping in stack.event_source_mappings:
                pool = self.executor.pool(f"{stack_name}/{mapping.function_logical_id}")
                poller = SqsEventSourcePoller(mapping, pool.invoke, sqs)
                poller.start()
                with self._lock:
                    self._pollers.append(poller)
        return stack

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke a deployed function (logical id, name or ARN) synchronously, like RequestResponse."""
        return self.executor.invoke(function, event)

    def reset_moto(self) -> None:
        """Forget all moto state (stacks included); pollers of deleted queues then log errors."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        with contextlib.closing(urllib.request.urlopen(request, timeout=10)):  # noqa: S310
            pass
