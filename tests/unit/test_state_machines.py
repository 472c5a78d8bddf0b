"""The state machines' ASL agrees with the template and with the models of the functions they call.

A Lambda task's payload is built by JSONPath in the ASL and parsed by a pydantic model in the
function; its answer is picked apart by ResultSelector paths. Nothing but this test ties the two
together before a deployment runs them, so for every task: the function named is the one the
substitution points at, the payload's fields are the step model's, and every `$.Payload.<field>` the
ASL reads is a field of the step's result model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from crr import large_copy
from crr.backfill import workflow as backfill_workflow
from crr_cli.localcloud.deploy.cfn_yaml import load_cfn_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
# State machine -> (the function its tasks call, that function's step contract).
CONTRACTS: Mapping[str, tuple[str, Mapping[str, tuple[type[BaseModel], type[BaseModel]]]]] = {
    "LargeCopyStateMachine": ("LargeCopyFunction", large_copy.STEP_MODELS),
    "BackfillStateMachine": ("BackfillFunction", backfill_workflow.STEP_MODELS),
}


def state_machines() -> dict[str, dict[str, Any]]:
    resources = load_cfn_template(TEMPLATE)["Resources"]
    return {name: spec for name, spec in resources.items() if spec["Type"] == "AWS::Serverless::StateMachine"}


def definition_text(machine: dict[str, Any]) -> str:
    return (ROOT / str(machine["Properties"]["DefinitionUri"])).read_text(encoding="utf-8")


def states(node: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, those inside Map and Parallel states included."""
    for name, state in node.get("States", {}).items():
        yield name, state
        for inner in [state.get("ItemProcessor") or state.get("Iterator") or {}, *state.get("Branches", [])]:
            yield from states(inner)


def test_every_state_machine_has_a_contract_here() -> None:
    assert set(state_machines()) == set(CONTRACTS)


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_placeholder_is_substituted_and_names_a_function_of_the_template(name: str) -> None:
    machine = state_machines()[name]
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    # Given the ASL text and its substitutions
    used = set(PLACEHOLDER.findall(definition_text(machine)))
    # Then every placeholder has a value, and no substitution is unused
    assert used == set(substitutions)
    resources = load_cfn_template(TEMPLATE)["Resources"]
    for value in substitutions.values():
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            target, attribute = value["Fn::GetAtt"]
            assert resources[target]["Type"] == "AWS::Serverless::Function"
            assert attribute == "Arn"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_lambda_task_sends_its_step_model_and_reads_only_fields_of_its_result(name: str) -> None:
    machine = state_machines()[name]
    function, contract = CONTRACTS[name]
    substitutions = machine["Properties"]["DefinitionSubstitutions"]
    definition = json.loads(definition_text(machine))
    tasks = [(state_name, state) for state_name, state in states(definition) if state.get("Resource") == LAMBDA_INVOKE]
    assert tasks, "a state machine without Lambda tasks needs no contract"
    actions_seen = set()
    for state_name, state in tasks:
        parameters = state["Parameters"]
        # The task calls the function the template says this machine calls
        placeholder = PLACEHOLDER.fullmatch(parameters["FunctionName"])
        assert placeholder is not None, state_name
        assert substitutions[placeholder.group(1)] == {"Fn::GetAtt": [function, "Arn"]}, state_name
        # Its payload names an action of the contract and carries exactly that step model's fields
        payload = parameters["Payload"]
        action = payload["action"]
        step_model, result_model = contract[action]
        sent = {key.removesuffix(".$") for key in payload}
        assert sent == set(step_model.model_fields), (state_name, sent)
        # And everything it reads from the answer is a field of the step's result model
        for path in state.get("ResultSelector", {}).values():
            field = re.fullmatch(r"\$\.Payload(?:\.([A-Za-z_]+))?", path)
            assert field is not None, (state_name, path)
            assert field.group(1) is None or field.group(1) in result_model.model_fields, (state_name, path)
        actions_seen.add(action)
    # And every step of the contract is used by some task
    assert actions_seen == set(contract)


@pytest.mark.parametrize(
    ("name", "handler"), [("LargeCopyStateMachine", "GiveUp"), ("BackfillStateMachine", "RecordFailure")]
)
def test_every_catch_of_a_failure_puts_the_error_where_its_handler_reads_it(name: str, handler: str) -> None:
    definition = json.loads(definition_text(state_machines()[name]))
    by_name = dict(states(definition))
    reads = by_name[handler]["Parameters"]["Payload"]["error.$"]
    catches = [(state_name, catch) for state_name, state in by_name.items() for catch in state.get("Catch", [])]
    assert catches
    for state_name, catch in catches:
        # Given a Catch of a failure, Then it goes to the handler with the error where the handler reads it
        if catch["Next"] == handler:
            assert catch["ResultPath"] == reads, state_name
        else:  # only a retried start that went through the first time is not a failure
            assert catch["ErrorEquals"] == ["StepFunctions.ExecutionAlreadyExistsException"], state_name


# The backfill's fan-out (docs/backfill.md, "How a job fans out"): an inline Map of W workers.
Shape = frozenset[tuple[str, str]]  # an iteration's state object: (top-level key, the step whose answer it holds)


def backfill_definition() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(definition_text(state_machines()["BackfillStateMachine"]))
    return parsed


def the_work_map(definition: Mapping[str, Any]) -> dict[str, Any]:
    [work] = [state for state in definition["States"].values() if state["Type"] == "Map"]
    found: dict[str, Any] = work
    return found


def origin_of(value: Any, shape: Shape, key: str) -> str:
    """Which step's answer a Parameters entry copies: the origin of the top-level key a `$.` path reads;
    constants, `$$` context paths and intrinsic functions hold no step's answer."""
    if key.endswith(".$") and isinstance(value, str) and value.startswith("$."):
        top = value.removeprefix("$.").split(".", 1)[0]
        return next((origin for name, origin in shape if name == top), "missing")
    return "value"


def after(state: Mapping[str, Any], shape: Shape) -> Shape:
    """The top-level keys a state's output holds, each with the step whose answer it is."""
    if "Parameters" in state and state["Type"] == "Pass":
        parameters = state["Parameters"]
        return frozenset((key.removesuffix(".$"), origin_of(value, shape, key)) for key, value in parameters.items())
    if state["Type"] == "Task":
        result_path = state.get("ResultPath", "$")
        if result_path is None:
            return shape
        assert re.fullmatch(r"\$\.[A-Za-z_]+", result_path), f"a task's answer replaces a top-level key: {result_path}"
        slot = result_path.removeprefix("$.")
        return frozenset(
            {(key, origin) for key, origin in shape if key != slot} | {(slot, state["Parameters"]["Payload"]["action"])}
        )
    if state["Type"] == "Succeed" and "OutputPath" in state and state["OutputPath"] is None:
        return frozenset()
    return shape


def issubclass_safe(candidate: Any, base: type) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, base)


def successors(state: Mapping[str, Any]) -> list[str]:
    nexts = [choice["Next"] for choice in state.get("Choices", [])]
    nexts += [state[field] for field in ("Next", "Default") if field in state]
    return nexts


def shapes_reaching(states_: Mapping[str, Any], start: str, shape: Shape) -> dict[str, set[Shape]]:
    """Every shape each state of `states_` may receive, walking the graph from `start` to a fixed point."""
    reaching: dict[str, set[Shape]] = {}
    pending = [(start, shape)]
    while pending:
        name, incoming = pending.pop()
        if incoming in reaching.setdefault(name, set()):
            continue
        reaching[name].add(incoming)
        outgoing = after(states_[name], incoming)
        pending += [(following, outgoing) for following in successors(states_[name])]
    return reaching


def test_a_backfill_worker_never_carries_a_page_result_past_its_record_progress() -> None:
    # Given the Map's iteration, starting from what its ItemSelector gives each worker
    work = the_work_map(backfill_definition())
    processor = work["ItemProcessor"]
    assert processor["ProcessorConfig"]["Mode"] == "INLINE"
    start = frozenset((key.removesuffix(".$"), "plan") for key in work["ItemSelector"])
    # When every path through its loop (claim, copy, record, next page or next range, idle, release) is walked
    reaching = shapes_reaching(processor["States"], processor["StartAt"], start)
    by_action = {
        state["Parameters"]["Payload"]["action"]: name
        for name, state in processor["States"].items()
        if state.get("Resource") == LAMBDA_INVOKE
    }
    assert {"claim", "copy_page", "record_page", "release"} <= set(by_action)
    # Then a page's result (all its counts and keys ahead) reaches the step that records it and no
    # other: the history holds one page result per page, and the iteration's state stays small
    for name, shapes in reaching.items():
        carries_a_page = any(origin == "copy_page" for shape in shapes for _, origin in shape)
        assert carries_a_page == (name == by_action["record_page"]), name
    # And every state of the loop is on some path (none is dead, none unreachable)
    assert set(reaching) == set(processor["States"])
    # And a worker ends with an empty output: the Map's result is W empty objects, whatever was copied
    for name, state in processor["States"].items():
        if state["Type"] == "Succeed" or state.get("End"):
            assert all(after(state, shape) == frozenset() for shape in reaching[name]), name
    assert work["ResultPath"] is None


def test_a_backfill_job_runs_at_most_40_workers_one_per_item_of_its_plan() -> None:
    definition = backfill_definition()
    work = the_work_map(definition)
    # Given the plan step's answer: one item per worker slot
    plan_result = backfill_workflow.STEP_MODELS["plan"][1]
    [worker_item] = [
        arg for arg in get_args(plan_result.model_fields["workers"].annotation) if issubclass_safe(arg, BaseModel)
    ]
    by_action = {
        state["Parameters"]["Payload"]["action"]: state
        for _, state in states(definition)
        if state.get("Resource") == LAMBDA_INVOKE
    }
    plan = by_action["plan"]
    # Then the Map iterates over exactly those items, at most 40 at once (AWS runs at most 40
    # iterations of an inline Map concurrently:
    # https://docs.aws.amazon.com/step-functions/latest/dg/state-map-inline.html)
    assert plan["ResultSelector"] == {"workers.$": "$.Payload.workers"}
    assert work["ItemsPath"] == f"{plan['ResultPath']}.workers"
    assert work["MaxConcurrency"] == 40
    # And each worker starts from the fields of its item, with its step count at zero
    item_paths = {key.removesuffix(".$"): value for key, value in work["ItemSelector"].items()}
    assert item_paths.pop("steps") == 0
    assert item_paths == {field: f"$$.Map.Item.Value.{field}" for field in worker_item.model_fields}


def test_a_backfill_execution_continues_as_new_with_what_it_started_with_in_the_next_round() -> None:
    definition = backfill_definition()
    by_name = dict(states(definition))
    fields = set(backfill_workflow.ExecutionInput.model_fields)
    # Given the execution input's model
    start = by_name[definition["StartAt"]]
    # Then the first state keeps exactly its fields
    assert {key.removesuffix(".$") for key in start["Parameters"]} == fields
    # And the continue-as-new starts this machine with exactly those fields, the round moved on by one
    # (executions are named `<job id>-r<round>`, as `crr backfill start` names the first)
    [(name, continue_as_new)] = [
        (name, state) for name, state in by_name.items() if state.get("Resource", "").endswith(":states:startExecution")
    ]
    assert {key.removesuffix(".$") for key in continue_as_new["Parameters"]["Input"]} == fields
    assert continue_as_new["Parameters"]["StateMachineArn.$"] == "$$.StateMachine.Id"
    assert continue_as_new["Parameters"]["Name.$"] == "States.Format('{}-r{}', $.job.job_id, $.round)"
    [next_round] = [state for state in by_name.values() if name in successors(state)]
    assert next_round["Parameters"]["round.$"] == "States.MathAdd($.round, 1)"
