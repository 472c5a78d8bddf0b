"""Step Functions tasks sent where the local cloud serves their service: seams in the main moto process.

The local cloud serves DynamoDB from a second moto process, but moto's Step Functions interpreter
sends its service tasks (`arn:aws:states:::dynamodb:*`, `aws-sdk:dynamodb:*`) back to this process;
and it invokes Lambda (`arn:aws:states:::lambda:invoke`, function ARNs) with moto's Lambda, which
cannot run code without Docker, while the local cloud has its own Lambda API (`lambda_.invoke_api`).
`route_step_functions_tasks` points the tasks of chosen services elsewhere. It also fixes moto's
`arn:aws:states:::states:startExecution` task, which hands the ASL's PascalCase parameters
(`StateMachineArn`, `Input`, `Name`) unchanged to the camelCase Step Functions API (a States.Runtime
error, KeyError 'StateMachineArn') and returns the API's camelCase answer: they are converted both
ways through botocore's shapes, as Step Functions does (`ExecutionArn`, ...). And it keeps a stopped
execution stopped: moto lets a state that the stop interrupted fail the execution afterwards (an
inline Map's aborted iterations always do, a Lambda task cut off mid-call sometimes), so StopExecution
ended in FAILED (States.Runtime) where Step Functions reports ABORTED and runs nothing more.

`route_step_functions_tasks()` may run at any time (the local cloud calls it right after start, through
`POST /_crr/endpoints` and `/_crr/task-endpoints`).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import botocore.session
from botocore import xform_name
from botocore.config import Config

_BOTO_CLIENT_MODULE = "moto.stepfunctions.parser.asl.utils.boto_client"
_SFN_TASK_MODULE = "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn"
_ENVIRONMENT_MODULE = "moto.stepfunctions.parser.asl.eval.environment"
_PROGRAM_STATE_MODULE = "moto.stepfunctions.parser.asl.eval.program_state"
_routed_endpoints: dict[str, str] = {}
_TASK_CLIENT_LOCK = threading.Lock()
_task_clients: dict[tuple[str, str, str], Any] = {}
# No SDK retries: a task's Retry field decides. Lambda answers after the function has run, for at
# most Lambda's 900 s timeout; the other services answer at once.
_TASK_READ_TIMEOUT_S = {"lambda": 900 + 30}
_DEFAULT_TASK_READ_TIMEOUT_S = 60


def _task_client(service: str, region: str, endpoint: str) -> Any:
    """A cached client of `service` at `endpoint` (boto3 clients are thread-safe; building one per
    task, as moto does, costs milliseconds per state)."""
    key = (service, region, endpoint)
    with _TASK_CLIENT_LOCK:
        client = _task_clients.get(key)
        if client is None:
            config = Config(
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=_TASK_READ_TIMEOUT_S.get(service, _DEFAULT_TASK_READ_TIMEOUT_S),
                max_pool_connections=64,  # a Map state runs up to 40 iterations at once
            )
            client = boto3.client(
                service,  # type: ignore[call-overload]
                region_name=region,
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
                config=config,
            )
            _task_clients[key] = client
        return client


def _routing(original: Callable[..., Any]) -> Callable[..., Any]:
    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        endpoint = _routed_endpoints.get(service)
        if endpoint is None:
            return original(region, service, state_credentials)
        return _task_client(service, region, endpoint)

    boto_client_for.crr_routing = True  # type: ignore[attr-defined]
    return boto_client_for


class _OperationModels:
    """botocore operation models by (boto3 service name, snake_case action), loaded once per service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_service: dict[str, dict[str, Any]] = {}

    def get(self, service: str, action: str) -> Any:
        with self._lock:
            if service not in self._by_service:
                model = botocore.session.get_session().get_service_model(service)
                self._by_service[service] = {
                    xform_name(name): model.operation_model(name) for name in model.operation_names
                }
            return self._by_service[service].get(action)


_operation_models = _OperationModels()


def _shaped_parameters(original: Callable[..., None]) -> Callable[..., None]:
    def normalise_parameters(
        self: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        original(self, parameters, boto_service_name=boto_service_name, service_action_name=service_action_name)
        operation = _operation_models.get(
            self._get_boto_service_name(boto_service_name), self._get_boto_service_action(service_action_name)
        )
        if operation is not None and operation.input_shape is not None:
            self._to_boto_request(parameters, operation.input_shape)  # StateMachineArn -> stateMachineArn

    return normalise_parameters


def _shaped_response(original: Callable[..., None]) -> Callable[..., None]:
    def normalise_response(
        self: Any, response: Any, boto_service_name: str | None = None, service_action_name: str | None = None
    ) -> None:
        original(self, response, boto_service_name=boto_service_name, service_action_name=service_action_name)
        operation = _operation_models.get(
            self._get_boto_service_name(boto_service_name), self._get_boto_service_action(service_action_name)
        )
        if operation is not None and operation.output_shape is not None:
            self._from_boto_response(response, operation.output_shape)  # executionArn -> ExecutionArn

    return normalise_response


def _fix_start_execution_task() -> None:
    """Convert the `states:startExecution` task's parameters and answer between ASL's and the API's
    casing (idempotent)."""
    task: Any = importlib.import_module(_SFN_TASK_MODULE).StateTaskServiceSfn
    if getattr(task, "crr_shaped", False):
        return
    task._normalise_parameters = _shaped_parameters(task._normalise_parameters)
    task._normalise_response = _shaped_response(task._normalise_response)
    task.crr_shaped = True


def _keep_stopped_executions_stopped() -> None:
    """An execution (or a Map iteration's frame) that StopExecution stopped ignores the failures its
    interrupted states raise afterwards, so it ends ABORTED as on AWS (idempotent)."""
    environment: Any = importlib.import_module(_ENVIRONMENT_MODULE).Environment
    if getattr(environment, "crr_stays_stopped", False):
        return
    stopped = importlib.import_module(_PROGRAM_STATE_MODULE).ProgramStopped
    original = environment.set_error

    def set_error(self: Any, error: Any) -> None:
        with self._state_mutex:  # the lock set_stop holds: a stop and a failure do not interleave
            if isinstance(self._program_state, stopped):
                return
            original(self, error)

    environment.set_error = set_error
    environment.crr_stays_stopped = True


def route_step_functions_tasks(endpoints: Mapping[str, str]) -> None:
    """Send Step Functions service tasks for these boto3 services to these endpoints (idempotent),
    fix the `states:startExecution` task and keep stopped executions stopped (see the module docstring).

    moto's task states build their clients with `boto_client_for`, imported by name into each task
    module when Step Functions first runs; the module's function is replaced (imported lazily here,
    it is not cheap) and so is any copy a module already imported.
    """
    _routed_endpoints.update(endpoints)
    _fix_start_execution_task()
    _keep_stopped_executions_stopped()
    module: Any = importlib.import_module(_BOTO_CLIENT_MODULE)
    original = module.boto_client_for
    if getattr(original, "crr_routing", False):
        return
    routed = _routing(original)
    module.boto_client_for = routed
    for name, loaded in list(sys.modules.items()):
        if name.startswith("moto.stepfunctions.") and getattr(loaded, "boto_client_for", None) is original:
            setattr(loaded, "boto_client_for", routed)  # noqa: B010 - a module attribute, patched
