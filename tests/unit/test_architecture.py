"""The package's shape, read from its source with ``ast``: the ports live in one place, no two ``crr``
modules import each other in a circle (not even behind ``TYPE_CHECKING``), and the Lambda layer ships only
what the functions import (code only the CLI runs lives in ``crr_cli``)."""

from __future__ import annotations

import ast
from pathlib import Path

import crr

PACKAGE = Path(crr.__file__).resolve().parent
PORTS_HOME = PACKAGE / "ports"
LAYER = PACKAGE.parent
HANDLERS = sorted((Path(__file__).resolve().parents[2] / "functions").glob("*/handler.py"))
# Layer modules no handler imports yet, each with the change that brings it in or takes it out. The test
# fails when one is imported after all or is gone, so that change deletes its line here.
# Layer modules no handler imports yet, each with the reason (none today).
NOT_YET_IN_THE_FUNCTIONS: set[str] = set()


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


def with_parent_packages(modules: set[str]) -> set[str]:
    """Importing ``crr.adapters.s3`` runs ``crr/__init__.py`` and ``crr/adapters/__init__.py`` first."""
    return {".".join(module.split(".")[:end]) for module in modules for end in range(1, module.count(".") + 2)}


def import_closure(roots: list[ast.Module], graph: dict[str, set[str]], known: set[str]) -> set[str]:
    """Every crr module that importing ``roots`` can load, directly or through other crr modules."""
    reached: set[str] = set()
    pending = with_parent_packages(set().union(*(imported_crr_modules(root, known) for root in roots)))
    while pending:
        module = pending.pop()
        if module not in reached:
            reached.add(module)
            pending |= with_parent_packages(graph[module]) - reached
    return reached


def imports_of_top_level(tree: ast.Module, package: str) -> list[str]:
    """The imports in ``tree`` of ``package`` or any module under it, wherever the import stands."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [name for name in names if name == package or name.startswith(f"{package}.")]


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


def test_the_layer_holds_only_modules_the_functions_import() -> None:
    # Given the five handlers and the import graph of the crr package
    modules = crr_modules()
    graph = {name: imported_crr_modules(tree, set(modules)) for name, tree in modules.items()}
    handlers = [ast.parse(path.read_text(encoding="utf-8")) for path in HANDLERS]
    assert len(handlers) == 5, [str(path) for path in HANDLERS]
    # When the modules their imports can load are collected
    shipped_for_nothing = set(modules) - import_closure(handlers, graph, set(modules))
    # Then every module of the layer is among them (code only the CLI runs belongs in crr_cli)
    assert shipped_for_nothing == NOT_YET_IN_THE_FUNCTIONS


def test_no_module_of_the_layer_or_of_the_functions_imports_the_cli() -> None:
    # Given every Python file of the layer and of the functions
    sources = [*LAYER.rglob("*.py"), *HANDLERS]
    assert len(sources) > len(HANDLERS)
    # When their imports of crr_cli are collected, wherever they stand
    found = {
        str(path): imports_of_top_level(ast.parse(path.read_text(encoding="utf-8")), "crr_cli") for path in sources
    }
    # Then there are none: the layer is deployed without the CLI
    assert {path: names for path, names in found.items() if names} == {}


def test_the_import_closure_follows_imports_through_modules_and_packages() -> None:
    # Given a handler importing one module that imports another only inside a function
    known = {"crr", "crr.a", "crr.sub", "crr.sub.b", "crr.c"}
    graph = {
        "crr": set(),
        "crr.a": imported_crr_modules(ast.parse("def f():\n    from crr.sub import b\n"), known),
        "crr.sub": set(),
        "crr.sub.b": set(),
        "crr.c": set(),
    }
    handler = ast.parse("from crr.a import thing\n")
    # When its closure is computed
    closure = import_closure([handler], graph, known)
    # Then it holds both modules and their packages, and not the module nobody imports
    assert closure == {"crr", "crr.a", "crr.sub", "crr.sub.b"}


def test_the_cli_import_finder_sees_imports_wherever_they_stand() -> None:
    # Given a module importing the CLI at its top, inside a function and under a lookalike name
    tree = ast.parse(
        "import crr_cli.main\nfrom crr_clix import y\ndef f():\n    from crr_cli.operations import status\n"
    )
    # When its imports of crr_cli are collected, Then both real ones are found
    assert sorted(imports_of_top_level(tree, "crr_cli")) == ["crr_cli.main", "crr_cli.operations"]
