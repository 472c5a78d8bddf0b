"""The package's shape, read from its source with ``ast``: the ports live in one place, and no two
``crr`` modules import each other in a circle (not even behind ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import crr

PACKAGE = Path(crr.__file__).resolve().parent
PORTS_HOME = PACKAGE / "ports"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def crr_modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}


def protocol_classes(tree: ast.Module) -> list[str]:
    def is_protocol(base: ast.expr) -> bool:
        return (isinstance(base, ast.Name) and base.id == "Protocol") or (
            isinstance(base, ast.Attribute) and base.attr == "Protocol"
        )

    return [
        node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and any(map(is_protocol, node.bases))
    ]


def imported_crr_modules(tree: ast.Module, known: set[str]) -> set[str]:
    """Every crr module ``tree`` imports, wherever the import stands (``TYPE_CHECKING`` included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            # ``from crr import deadline`` imports the module crr.deadline, not just the package
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {node.module})
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the list of modules along it (first repeated last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph.get(module, set())):
            cycle = visit(imported)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_every_protocol_of_the_crr_package_is_defined_in_its_ports_home() -> None:
    # Given every module of the crr package
    modules = {
        name: tree for name, tree in crr_modules().items() if name != "crr.ports" and not name.startswith("crr.ports.")
    }
    # When the Protocol classes outside crr/ports are collected
    strays = {name: protocol_classes(tree) for name, tree in modules.items() if protocol_classes(tree)}
    # Then there are none (a new port belongs in crr/ports/, saying which adapter implements it)
    assert strays == {}
    assert protocol_classes(ast.parse((PORTS_HOME / "table.py").read_text(encoding="utf-8")))  # the walk sees them


def test_no_crr_modules_import_each_other_in_a_circle() -> None:
    # Given the import graph of the crr package, type-only imports included
    modules = crr_modules()
    graph = {name: imported_crr_modules(tree, set(modules)) - {name} for name, tree in modules.items()}
    assert graph["crr.ports.objects"], "the graph sees imports"
    # When a cycle is looked for, Then there is none
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle_hidden_behind_type_checking() -> None:
    # Given two modules, one importing the other only for the type checker
    first = ast.parse("from crr.b import B\n")
    second = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crr.a import A\n")
    known = {"crr.a", "crr.b"}
    graph = {"crr.a": imported_crr_modules(first, known), "crr.b": imported_crr_modules(second, known)}
    # When a cycle is looked for, Then it is found
    assert find_cycle(graph) == ["crr.a", "crr.b", "crr.a"]
