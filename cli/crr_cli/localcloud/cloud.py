"""`LocalCloud`: moto in its own processes + our template deploy, Lambda executor and SQS pollers.

    with LocalCloud() as cloud:
        endpoint = cloud.start()
        stack = cloud.deploy(Path("template.yaml"), "crr-local", "us-west-1", {...})
        cloud.client("s3", "us-west-1").put_object(...)
        subprocess.run([...], env={**os.environ, **cloud.aws_environment(), "AWS_REGION": "us-west-1"})

A moto server is GIL-bound, so one process tops out at one core. DynamoDB has no in-process
coupling to the other services (unlike S3 -> SQS notifications), so it gets a second moto process:
`endpoint_url` serves everything else, `dynamodb_endpoint_url` serves DynamoDB and DynamoDB
Streams. `client()`, the functions' workers (`AWS_ENDPOINT_URL_DYNAMODB`), `aws_environment()`
and moto's Step Functions tasks all route DynamoDB there; `request_counts()` adds up both.

The functions' logs are followed as CloudWatch Logs follows them on AWS (`log_metrics`): the metrics
of their EMF documents reach the main process's CloudWatch.

`LocalCloud(latency=LatencyModel(10, 60))` adds AWS's round trips to what the functions and the SQS
pollers call (`lambda_.latency`): benches then measure what latency does to throughput; the caller's
own clients (`client()`, the tests, the CLI) are not delayed.

moto executes the state machines of deployed templates (`MOTO_CONFIG`); their Lambda tasks come
back to this process, to a Lambda Invoke API (`lambda_.invoke_api`, at `lambda_endpoint_url`) that runs the
handlers on the executor's warm workers, as `invoke()` does. moto keeps serving the rest of the
Lambda API (the functions' configuration).

Dev and test tool only; never deployed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from crr_cli.localcloud.clients import (
    LOCAL_ACCESS_KEY_ID,
    LOCAL_SECRET_ACCESS_KEY,
    ROUTED_SERVICES,
    ClientFactory,
    endpoint_environment,
)
from crr_cli.localcloud.deploy import DeployedStack, deploy_stack
from crr_cli.localcloud.deploy.transform import MANAGED_POLICIES
from crr_cli.localcloud.lambda_ import latency as latency_model
from crr_cli.localcloud.lambda_.executor import FunctionSpec, Invocation, LambdaExecutor
from crr_cli.localcloud.lambda_.invoke_api import LambdaApiServer
from crr_cli.localcloud.lambda_.latency import LatencyHook, LatencyModel
from crr_cli.localcloud.lambda_.log_metrics import LogMetrics
from crr_cli.localcloud.lambda_.poller import DEFAULT_CONCURRENCY, SqsEventSourcePoller

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
MIN_POOL_SIZE = 2  # Lambda's smallest MaximumConcurrency
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}}
DYNAMODB_SIGNING_NAME = "dynamodb"  # DynamoDB Streams requests are signed as `dynamodb` too
LAMBDA_PRINCIPAL = "lambda.amazonaws.com"


class LocalCloudError(RuntimeError):
    """The local cloud could not start, or was used before `start()` / after `stop()`."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _request_json(url: str, *, method: str = "GET", document: Any = None, timeout: float = 10) -> Any:
    data = None if document is None else json.dumps(document).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - fixed http URLs on 127.0.0.1
        url, data=data, headers={"Content-Type": "application/json"}, method=method
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        body = answer.read()
    return json.loads(body) if body else None


@dataclass
class _MotoServer:
    """One moto server child process (`server.process`) and where it logs and serves."""

    name: str
    process: subprocess.Popen[bytes]
    port_file: Path
    log_path: Path
    endpoint_url: str | None = None

    @classmethod
    def spawn(
        cls, name: str, port: int | None, state_dir: Path, log_dir: Path, services: str | None = None
    ) -> _MotoServer:
        """Start `python -m crr_cli.localcloud.server.process` logging to `<log_dir>/<name>.log`."""
        port_file = state_dir / f"{name}-{uuid.uuid4().hex}.port"
        log_path = log_dir / f"{name}.log"
        environment = dict(os.environ)
        if port:
            environment["MOTO_PORT"] = str(port)
        command = [sys.executable, "-m", "crr_cli.localcloud.server.process", "--port", str(port or 0)]
        command += ["--port-file", str(port_file), "--parent-pid", str(os.getpid())]
        if services:
            command += ["--services", services]
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=log, env=environment, start_new_session=True)
        return cls(name, process, port_file, log_path)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise LocalCloudError(f"{self.name} exited with {self.process.returncode}:\n{_tail(self.log_path)}")

    def wait_for_port(self, deadline: float) -> str:
        """Wait until the server has bound its port; returns (and remembers) its endpoint."""
        try:
            while not self.port_file.exists():
                self.check_alive()
                if time.monotonic() > deadline:
                    raise LocalCloudError(
                        f"{self.name} did not bind within {START_TIMEOUT_S:.0f}s:\n{_tail(self.log_path)}"
                    )
                time.sleep(0.02)
            port = int(self.port_file.read_text(encoding="utf-8"))
        finally:
            self.port_file.unlink(missing_ok=True)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self.endpoint_url

    def post_until_ready(self, path: str, document: Any, deadline: float) -> None:
        """POST `document` to `path`, retrying until the server answers (it binds before it serves)."""
        while True:
            self.check_alive()
            try:
                _request_json(f"{self.endpoint_url}{path}", method="POST", document=document, timeout=5)
            except (urllib.error.URLError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise LocalCloudError(f"{self.name} not ready within {START_TIMEOUT_S:.0f}s: {error}") from error
                time.sleep(0.02)
            else:
                return

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> None:
        """Reap the process after `terminate()`, killing it when it outlives STOP_TIMEOUT_S."""
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.port_file.unlink(missing_ok=True)


class LocalCloud:
    """The embedded local cloud: two moto server processes (everything / DynamoDB), deployed stacks,
    warm workers, SQS pollers."""

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        log_dir: Path | None = None,
        enforce_iam: bool = True,
        latency: LatencyModel | None = None,
    ) -> None:
        # IAM enforced (seams.iam): functions sign with their execution role's session, and a
        # permission the template lacks fails with AccessDenied (S3, SQS, Step Functions).
        self.enforce_iam = enforce_iam
        self.state_dir = (state_dir or Path.cwd() / ".local-cloud").resolve()
        self.log_dir = (log_dir or self.state_dir / "logs").resolve()
        # The latency model (None: off): the workers' calls and the pollers' wait modelled round trips.
        self.latency = latency
        self._latency_counts_dir = self.state_dir / f"latency-{uuid.uuid4().hex}"
        self._poller_latency: list[LatencyHook] = []
        self.stacks: dict[str, DeployedStack] = {}
        self._moto: _MotoServer | None = None
        self._dynamodb: _MotoServer | None = None
        self._clients: ClientFactory | None = None
        self._executor: LambdaExecutor | None = None
        self._lambda_api: LambdaApiServer | None = None
        self._log_metrics: LogMetrics | None = None
        self._pollers: list[SqsEventSourcePoller] = []
        self._stack_pollers: dict[str, list[SqsEventSourcePoller]] = {}
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
        """The main endpoint: every service except those in `service_endpoints`."""
        return self.clients.endpoint_url

    @property
    def dynamodb_endpoint_url(self) -> str:
        """The endpoint of the DynamoDB process (DynamoDB and DynamoDB Streams)."""
        return self.clients.endpoint_for("dynamodb")

    @property
    def service_endpoints(self) -> dict[str, str]:
        """boto3 service name -> endpoint, for the services not served by `endpoint_url`."""
        return dict(self.clients.service_endpoints)

    @property
    def lambda_endpoint_url(self) -> str:
        """The local Lambda Invoke API (`lambda_.invoke_api`), which runs the handlers of deployed functions;
        moto's Step Functions tasks invoke Lambda there."""
        if self._lambda_api is None:
            raise LocalCloudError("the local cloud is not started")
        return self._lambda_api.url

    def endpoint_for(self, service: str) -> str:
        """The endpoint serving `service` (boto3 service name)."""
        return self.clients.endpoint_for(service)

    @property
    def moto_pid(self) -> int | None:
        """Process id of the main moto server."""
        return None if self._moto is None else self._moto.process.pid

    @property
    def dynamodb_moto_pid(self) -> int | None:
        """Process id of the DynamoDB moto server."""
        return None if self._dynamodb is None else self._dynamodb.process.pid

    def start(self, port: int | None = None, *, dynamodb_port: int | None = None) -> str:
        """Start both moto servers (on `port` / `dynamodb_port`, or free ports when None or 0) and
        wait until they serve; returns the main endpoint.

        Raises LocalCloudError when a server exits early (e.g. its port is taken) or is not ready
        within START_TIMEOUT_S; nothing is left running then.
        """
        if self._moto is not None:
            raise LocalCloudError("the local cloud is already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Both start at once: each takes a fraction of a second to import moto.
            self._moto = _MotoServer.spawn("moto", port, self.state_dir, self.log_dir)
            self._dynamodb = _MotoServer.spawn(
                "moto-dynamodb", dynamodb_port, self.state_dir, self.log_dir, services=DYNAMODB_SIGNING_NAME
            )
            deadline = time.monotonic() + START_TIMEOUT_S
            endpoint = self._moto.wait_for_port(deadline)
            dynamodb = self._dynamodb.wait_for_port(deadline)
            routes = dict.fromkeys(ROUTED_SERVICES, dynamodb)
            self._moto.post_until_ready("/moto-api/config", MOTO_CONFIG, deadline)
            self._moto.post_until_ready("/_crr/endpoints", routes, deadline)
            self._dynamodb.post_until_ready("/_crr/requests", None, deadline)  # serving, counts zeroed
            # CloudWatch Logs' part: EMF documents in the functions' logs become CloudWatch metrics.
            metrics_clients = ClientFactory(endpoint, service_endpoints=routes)
            self._log_metrics = LogMetrics(
                lambda region, namespace, data: metrics_clients.client("cloudwatch", region).put_metric_data(
                    Namespace=namespace, MetricData=data
                )
            )
            self._log_metrics.start()
            self._executor = LambdaExecutor(
                endpoint,
                self.log_dir,
                routes,
                follow_log=self._log_metrics.follow,
                local_settings=self._worker_settings(),
            )
            self._lambda_api = LambdaApiServer(self._executor, endpoint)
            # Only the tasks: moto keeps serving the Lambda API that deploy and the tests read.
            self._moto.post_until_ready("/_crr/task-endpoints", {"lambda": self._lambda_api.start()}, deadline)
            self._set_up_iam()
        except BaseException:
            self.stop()
            raise
        self._clients = ClientFactory(endpoint, service_endpoints=routes)
        return endpoint

    def _worker_settings(self) -> dict[str, str]:
        """The local cloud's switches in every worker's environment: the latency model, when on."""
        if self.latency is None:
            return {}
        return {
            latency_model.LATENCY_VARIABLE: self.latency.environment_value(),
            latency_model.COUNTS_VARIABLE: str(self._latency_counts_dir),
        }

    def _set_up_iam(self) -> None:
        """Load the AWS managed policies the template's roles attach, and enforce IAM unless told not to."""
        if self._moto is None:
            raise LocalCloudError("the local cloud is not started")
        document = {"managed_policies": sorted(name for name in MANAGED_POLICIES), "enforce": self.enforce_iam}
        _request_json(f"{self._moto.endpoint_url}/_crr/iam", method="POST", document=document)

    def role_credentials(self, role_arn: str, service: str = LAMBDA_PRINCIPAL) -> dict[str, str]:
        """A session of `role_arn` as `service` gets it (its trust policy must name the service);
        empty when IAM is not enforced. Raises LocalCloudError when the role cannot be assumed."""
        if not self.enforce_iam:
            return {}
        if self._moto is None:
            raise LocalCloudError("the local cloud is not started")
        document = {"RoleArn": role_arn, "Service": service, "SessionName": role_arn.rsplit("/", 1)[-1][:64]}
        try:
            answer = _request_json(f"{self._moto.endpoint_url}/_crr/assume-role", method="POST", document=document)
        except urllib.error.HTTPError as error:
            raise LocalCloudError(f"{service} cannot assume {role_arn}: {error.read().decode()}") from error
        return {str(name): str(value) for name, value in answer.items()}

    def stop(self) -> None:
        """Stop pollers, workers and both moto processes (idempotent); leaves no child processes."""
        with self._lock:
            pollers, self._pollers = self._pollers, []
            self._stack_pollers.clear()
            executor, self._executor = self._executor, None
            lambda_api, self._lambda_api = self._lambda_api, None
            log_metrics, self._log_metrics = self._log_metrics, None
            servers = [server for server in (self._moto, self._dynamodb) if server is not None]
            self._moto = self._dynamodb = None
            self._clients = None
        for poller in pollers:
            poller.request_stop()  # signal all before joining any
        for poller in pollers:
            poller.stop()
        if lambda_api is not None:
            lambda_api.stop()
        if executor is not None:
            executor.close()
        if log_metrics is not None:
            log_metrics.stop()  # after the workers, before moto: their last lines still count
        for server in servers:
            server.terminate()  # signal both before waiting for either
        for server in servers:
            server.wait()
        shutil.rmtree(self._latency_counts_dir, ignore_errors=True)

    def aws_environment(self) -> dict[str, str]:
        """The standard AWS environment variables that point an SDK, the AWS CLI or `crr` at the
        local cloud: `AWS_ENDPOINT_URL`, the service-specific `AWS_ENDPOINT_URL_DYNAMODB` and
        `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`, and the test credentials. No region: add `AWS_REGION`
        (and drop `AWS_PROFILE`) yourself."""
        return {
            **endpoint_environment(self.endpoint_url, self.service_endpoints),
            "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
        }

    def _servers(self) -> list[_MotoServer]:
        servers = [server for server in (self._moto, self._dynamodb) if server is not None]
        if not servers:
            raise LocalCloudError("the local cloud is not started")
        return servers

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
        """A cached boto3 client for the endpoint serving `service` (test credentials, checksums when
        required)."""
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
        """Deploy the SAM template as `stack_name` in `region` (a stack of that name is updated with
        the new parameters, its pools and pollers restarted), start its functions' worker pools and
        (unless `event_sources` is False) its SQS pollers. Its state machines are ready to run
        (`DeployedStack.state_machine(...).arn`); their Lambda tasks run on the same pools.

        Raises deploy.DeployError when the template cannot be deployed locally.
        """
        stack = deploy_stack(self.clients, Path(template_path), stack_name, region, parameters)
        self._stop_pollers(stack_name)  # a redeployed stack's event sources restart with it
        concurrency: dict[str, int] = {}
        for mapping in stack.event_source_mappings:
            wanted = mapping.maximum_concurrency or DEFAULT_CONCURRENCY
            concurrency[mapping.function_logical_id] = concurrency.get(mapping.function_logical_id, 0) + wanted
        # A function a state machine invokes gets as many workers as one execution runs tasks at
        # once (its Map concurrency), so a Map's iterations are not serialised by the pool.
        for machine in stack.state_machines.values():
            for logical_id in machine.invoked_functions:
                concurrency[logical_id] = max(concurrency.get(logical_id, 0), machine.task_concurrency)
        credentials: dict[str, dict[str, str]] = {}
        for function in stack.functions.values():
            size = max(MIN_POOL_SIZE, concurrency.get(function.logical_id, MIN_POOL_SIZE))
            credentials[function.logical_id] = self.role_credentials(function.role_arn) if function.role_arn else {}
            self.executor.register(FunctionSpec.of(function, credentials[function.logical_id]), region, size)
        self.stacks[stack_name] = stack
        if event_sources:
            for mapping in stack.event_source_mappings:
                pool = self.executor.pool(f"{stack_name}/{mapping.function_logical_id}")
                # Lambda polls the queue with the function's execution role, as on AWS.
                role = credentials.get(mapping.function_logical_id)
                sqs = self._poller_sqs_client(region, role)
                poller = SqsEventSourcePoller(mapping, pool.invoke, sqs)
                poller.start()
                with self._lock:
                    self._pollers.append(poller)
                    self._stack_pollers.setdefault(stack_name, []).append(poller)
        return stack

    def _poller_sqs_client(self, region: str, role: Mapping[str, str] | None) -> Any:
        """The SQS client of a poller: the role's, or the test credentials'; with the latency model,
        a client of its own (the cached ones serve the tests, whose calls are not delayed)."""
        if role:
            sqs = self.clients.role_client("sqs", region, role)
        elif self.latency is None:
            return self.client("sqs", region)
        else:
            sqs = ClientFactory(self.endpoint_url, service_endpoints=self.service_endpoints).client("sqs", region)
        if self.latency is not None:
            self._poller_latency.append(latency_model.install(sqs, self.latency, region))
        return sqs

    def _stop_pollers(self, stack_name: str) -> None:
        with self._lock:
            pollers = self._stack_pollers.pop(stack_name, [])
            self._pollers = [poller for poller in self._pollers if poller not in pollers]
        for poller in pollers:
            poller.request_stop()
        for poller in pollers:
            poller.stop()

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke a deployed function (logical id, name or ARN) synchronously, like RequestResponse."""
        return self.executor.invoke(function, event)

    def reset_moto(self) -> None:
        """Forget all moto state (stacks and tables included) in both processes; pollers of deleted
        queues then log errors."""
        for server in self._servers():
            _request_json(f"{server.endpoint_url}/moto-api/reset", method="POST")
        self._set_up_iam()  # the reset forgot the operator's IAM user and the managed policies

    def configure_seams(self, **settings: Any) -> dict[str, Any]:
        """Change the SQS and copy-rate seams of the main moto process (`seams.queues_and_copies.configure`:
        `short_poll_sampling`, `seed`, `copy_bytes_per_second`, `copy_bytes_per_second_by_bucket`);
        returns the settings now in force."""
        if self._moto is None:
            raise LocalCloudError("the local cloud is not started")
        answer: dict[str, Any] = _request_json(
            f"{self._moto.endpoint_url}/_crr/seams", method="POST", document=settings
        )
        return answer

    # ------------------------------------------------------------------ measuring

    def request_counts(self, reset: bool = False) -> dict[str, int]:
        """Requests served so far by both moto processes, as `{"<service>:<operation>": count}`
        (signed requests only; see `request_counter`). `reset` zeroes the counters and returns the
        counts up to then."""
        total: Counter[str] = Counter()
        for server in self._servers():
            counts = _request_json(f"{server.endpoint_url}/_crr/requests", method="POST" if reset else "GET")
            total.update({str(name): int(count) for name, count in counts.items()})
        return dict(total)

    def latency_counts(self) -> dict[str, dict[str, int]]:
        """HTTP attempts the latency model delayed so far (functions and pollers), by class (`same`,
        `cross`) and `<service>:<operation>`; empty classes when the model is off. Read before `stop()`."""
        total = latency_model.counts_in(self._latency_counts_dir)
        for hook in list(self._poller_latency):
            for request_class, operations in hook.counts().items():
                merged = total.setdefault(request_class, {})
                for operation, count in operations.items():
                    merged[operation] = merged.get(operation, 0) + count
        return total

    def region_misses(self) -> int:
        """S3 requests refused so far because they were signed for another region than their bucket's
        (boto3 retries them in the right region, as on AWS, at the cost of a round trip)."""
        if self._moto is None:
            raise LocalCloudError("the local cloud is not started")
        return int(_request_json(f"{self._moto.endpoint_url}/_crr/region-misses")["region_misses"])

    def write_times(self, bucket: str) -> dict[str, float]:
        """When (epoch seconds, server clock) each key of `bucket` was last stored by a successful
        PutObject or CopyObject."""
        if self._moto is None:
            raise LocalCloudError("the local cloud is not started")
        query = urllib.parse.urlencode({"bucket": bucket})
        times = _request_json(f"{self._moto.endpoint_url}/_crr/writes?{query}")
        return {str(key): float(value) for key, value in times.items()}
