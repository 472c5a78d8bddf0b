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
from typing import Any

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
