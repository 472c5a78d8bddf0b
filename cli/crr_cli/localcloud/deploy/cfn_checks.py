"""What CloudFormation checks before it creates a stack, and moto's CloudFormation does not.

* Parameter constraints: `AllowedPattern` (for a CommaDelimitedList, every entry), `AllowedValues`,
  `MinValue` / `MaxValue`.
* Template `Rules`: each rule whose `RuleCondition` holds must have every `Assert` hold, else the
  stack is refused with the `AssertDescription`.

`evaluate` also resolves `Conditions` and the condition functions, so tests can ask what a template
grants for given parameter values (`effective`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any


class TemplateCheckError(ValueError):
    """A parameter value or template rule refuses the deployment, as CloudFormation would."""


def parameter_values(sam: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """Each declared parameter's value as CloudFormation hands it to intrinsics: a list for
    CommaDelimitedList, a string otherwise (defaults applied)."""
    resolved: dict[str, Any] = {}
    for name, spec in sam.get("Parameters", {}).items():
        raw = values.get(name, spec.get("Default"))
        if raw is None:
            continue
        text = str(raw)
        resolved[name] = text.split(",") if spec.get("Type") == "CommaDelimitedList" else text
    return resolved


def check_parameters(sam: Mapping[str, Any], values: Mapping[str, str]) -> None:
    """Raise TemplateCheckError for a value its parameter's constraints refuse."""
    resolved = parameter_values(sam, values)
    for name, spec in sam.get("Parameters", {}).items():
        if name not in resolved:
            continue
        entries = resolved[name] if isinstance(resolved[name], list) else [resolved[name]]
        pattern = spec.get("AllowedPattern")
        allowed = spec.get("AllowedValues")
        for entry in entries:
            if pattern is not None and not re.fullmatch(pattern, entry):
                reason = spec.get("ConstraintDescription", f"must match pattern {pattern}")
                raise TemplateCheckError(f"Parameter '{name}' value {entry!r}: {reason}")
            if allowed is not None and entry not in [str(value) for value in allowed]:
                raise TemplateCheckError(f"Parameter '{name}' must be one of AllowedValues")
            if spec.get("Type") == "Number":
                number = float(entry)
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    raise TemplateCheckError(f"Parameter '{name}' must be a number not less than {spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    raise TemplateCheckError(f"Parameter '{name}' must be a number not greater than {spec['MaxValue']}")


def check_rules(sam: Mapping[str, Any], values: Mapping[str, str], pseudo: Mapping[str, str]) -> None:
    """Raise TemplateCheckError naming the first failed assertion of a rule that applies."""
    scope = {**parameter_values(sam, values), **pseudo}
    for name, rule in sam.get("Rules", {}).items():
        if "RuleCondition" in rule and not evaluate(rule["RuleCondition"], scope, {}):
            continue
        for assertion in rule.get("Assertions", []):
            if not evaluate(assertion["Assert"], scope, {}):
                description = assertion.get("AssertDescription", "an assertion failed")
                raise TemplateCheckError(f"Template rule {name}: {description}")


def conditions(sam: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, bool]:
    """Every condition of the template, evaluated (conditions may name earlier ones)."""
    results: dict[str, bool] = {}
    declared: Mapping[str, Any] = sam.get("Conditions", {})

    def resolve(name: str) -> bool:
        if name not in results:
            results[name] = bool(evaluate(declared[name], scope, results, resolve))
        return results[name]

    for name in declared:
        resolve(name)
    return results


def evaluate(node: Any, scope: Mapping[str, Any], known: Mapping[str, bool], resolve: Any = None) -> Any:
    """The value of `node` under `scope` (parameters and pseudo parameters) and evaluated conditions.

    Covers the condition and rule functions and the string functions conditions use; `Fn::If`
    yields its chosen branch (None for `AWS::NoValue`, which drops a property or list item as in
    CloudFormation). Anything else is returned unevaluated.
    """

    def value(item: Any) -> Any:
        return evaluate(item, scope, known, resolve)

    if isinstance(node, list):
        return [item for item in (value(item) for item in node) if item is not None]
    if not isinstance(node, dict):
        return node
    if len(node) != 1 or not next(iter(node)).startswith(("Fn::", "Ref", "Condition")):
        return {key: item for key, item in ((key, value(item)) for key, item in node.items()) if item is not None}
    [(function, argument)] = node.items()
    if function == "Ref":
        return None if argument == "AWS::NoValue" else scope.get(argument, node)
    if function in ("Condition", "Fn::If"):
        name = argument if function == "Condition" else argument[0]
        holds = bool(known[name] if name in known else resolve(name))
        return holds if function == "Condition" else value(argument[1] if holds else argument[2])
    rule = _FUNCTIONS.get(function)
    return node if rule is None else rule(value, argument)


_Evaluator = Callable[[Callable[[Any], Any], Any], Any]
_FUNCTIONS: Mapping[str, _Evaluator] = {
    "Fn::Equals": lambda value, a: str(value(a[0])) == str(value(a[1])),
    "Fn::Not": lambda value, a: not value(a[0]),
    "Fn::And": lambda value, a: all(value(item) for item in a),
    "Fn::Or": lambda value, a: any(value(item) for item in a),
    "Fn::Join": lambda value, a: a[0].join(str(item) for item in _flat(value(a[1]))),
    "Fn::Split": lambda value, a: str(value(a[1])).split(a[0]),
    "Fn::Select": lambda value, a: value(a[1])[int(value(a[0]))],
    "Fn::Contains": lambda value, a: str(value(a[1])) in [str(item) for item in _flat(value(a[0]))],
    "Fn::EachMemberEquals": lambda value, a: all(str(item) == str(value(a[1])) for item in _flat(value(a[0]))),
}


def _flat(items: Any) -> list[Any]:
    if not isinstance(items, list):
        return [items]
    flat: list[Any] = []
    for item in items:
        flat.extend(_flat(item))
    return flat
