"""Load a CloudFormation/SAM YAML template, turning short-form tags (`!Ref`, `!Sub`, ...) into long form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Short-form tag -> long-form key. `!GetAtt A.B` is the one tag whose scalar form needs splitting.
_INTRINSICS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "And",
            "Base64",
            "Cidr",
            "Equals",
            "FindInMap",
            "GetAZs",
            "GetAtt",
            "If",
            "ImportValue",
            "Join",
            "Not",
            "Or",
            "Select",
            "Split",
            "Sub",
            "Transform",
            "ToJsonString",
            "Length",
            # Rule-specific functions (a template's Rules section)
            "Contains",
            "EachMemberEquals",
            "EachMemberIn",
            "RefAll",
            "ValueOf",
            "ValueOfAll",
        )
    },
}


class CfnTemplateError(ValueError):
    """The template is not valid YAML, or not a mapping at its top level."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short-form intrinsic tags."""


def _long_form(tag: str, key: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
        else:  # pragma: no cover - yaml has no other node kinds
            raise CfnTemplateError(f"unsupported node for !{tag}")
        return {key: value}

    return construct


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    # CloudFormation reads an unquoted 2010-09-09 as a string, not as a date.
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


for _tag, _key in _INTRINSICS.items():
    _CfnLoader.add_constructor(f"!{_tag}", _long_form(_tag, _key))
_CfnLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_cfn_yaml(text: str) -> dict[str, Any]:
    """Parse template text (YAML or JSON) into a dict with long-form intrinsics.

    Raises CfnTemplateError when the text does not parse or is not a mapping.
    """
    try:
        document = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as error:
        raise CfnTemplateError(f"template does not parse: {error}") from error
    if not isinstance(document, dict):
        raise CfnTemplateError("a template must be a mapping at its top level")
    return document


def load_cfn_template(path: Path) -> dict[str, Any]:
    """Read and parse the template file at `path` (see `load_cfn_yaml`)."""
    return load_cfn_yaml(path.read_text(encoding="utf-8"))
