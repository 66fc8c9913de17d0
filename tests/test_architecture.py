"""The package's structure: data flows one way (each part imports only the parts below it), no import
circle, and no function-local import of sbts code outside the CLI (whose lazy imports keep ``sbts predict``
torch-free)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sbts"
# Lower parts first; a part may import only the parts of a lower rank (and itself).
RANKS = {
    "sbts": 0, "sbts.errors": 0, "sbts.frozen_tensors": 0,
    "sbts.atomic": 1, "sbts.config": 1, "sbts.registry": 1,
    "sbts.configs": 2, "sbts.data": 2, "sbts.metrics": 2,
    "sbts.heads": 3, "sbts.layers": 3, "sbts.baselines": 3,
    "sbts.models": 4, "sbts.runtime": 4, "sbts.training": 4,
    "sbts.export": 5,
    "sbts.compression": 6,
    "sbts.tasks": 7,
    "sbts.sweep": 8,
    "sbts.report": 9,
    "sbts.cli": 10,
    "sbts.__main__": 11,
}
LAZY_IMPORTS_ALLOWED = ("sbts.cli",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def sbts_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported sbts module, inside a function?) for every import outside ``if TYPE_CHECKING`` blocks."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
            elif isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            else:
                names = []
            found.extend((name, nested) for name in names if name == "sbts" or name.startswith("sbts."))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_part_has_a_rank():
    assert {part(module) for module in MODULES} <= set(RANKS), "a new part of the package needs its place in RANKS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_only(module):
    rank = RANKS[part(module)]
    for imported, in_function in sbts_imports(MODULES[module]):
        if part(imported) == part(module):
            continue
        assert RANKS[part(imported)] < rank, f"{module} imports {imported}: data must flow one way"
        if in_function:
            assert part(module) in LAZY_IMPORTS_ALLOWED, f"{module} imports {imported} inside a function"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_local_imports_within_a_part(module):
    if part(module) in LAZY_IMPORTS_ALLOWED:
        return
    local = [imported for imported, in_function in sbts_imports(MODULES[module]) if in_function]
    assert not local, f"{module} imports {local} inside a function (a dodged import circle?)"


def test_no_import_circle():
    graph = {module: {name for name, in_function in sbts_imports(path) if not in_function and name in MODULES}
             for module, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                pytest.fail("import circle: " + " -> ".join(trail[trail.index(imported):] + [imported]))
            if imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
