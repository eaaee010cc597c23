"""The package's shape, checked by reading its source: imports run one way through the layers
(base -> data -> models -> inference -> train -> lammps | analysis -> study -> cli), no module imports
itself back through a cycle (lazy imports inside functions count too), and no function is over 60 lines
except the ones named here with the reason."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gnnmd

PACKAGE = Path(gnnmd.__file__).resolve().parent
# a module may import from its own layer's package or from any lower layer; lammps and analysis are
# siblings and import nothing of each other
LAYERS = {
    "gnnmd": 0, "gnnmd.files": 0, "gnnmd.units": 0, "gnnmd.memory": 0, "gnnmd.devices": 0, "gnnmd.progress": 0,
    "gnnmd.data": 1,
    "gnnmd.models": 2,
    "gnnmd.inference": 3,
    "gnnmd.train": 4, "gnnmd.ase": 4,
    "gnnmd.lammps": 5, "gnnmd.analysis": 5,
    "gnnmd.study": 6,
    "gnnmd.cli": 7,
}  # fmt: skip
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The gnnmd modules a module imports, anywhere in it (module level or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("gnnmd")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gnnmd"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def layer_of(module: str) -> tuple[str, int]:
    """The layer package a module belongs to, and its rank."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def test_imports_run_downward_only():
    trees = modules()
    wrong = []
    for module, tree in trees.items():
        package, rank = layer_of(module)
        for target in imports(tree, set(trees)):
            target_package, target_rank = layer_of(target)
            if target_package != package and target_rank >= rank:
                wrong.append(f"{module} imports {target} ({target_package} is not below {package})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    trees = modules()
    graph = {module: imports(tree, set(trees)) - {module} for module, tree in trees.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state and (cycle := visit(target, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :])


def test_functions_are_short():
    long = []
    for module, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and f"{module}.{node.name}" not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)
    assert len(LONG_FUNCTIONS_ALLOWED) <= 3


@pytest.mark.slow
def test_a_plain_install_carries_every_package_and_the_lammps_inputs(tmp_path):
    """`pip install .` (not editable) must give a gnnmd that finds its LAMMPS inputs: build the wheel and
    look inside (the package list in pyproject.toml is explicit, so a new subpackage must be added there)."""
    root = PACKAGE.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gnnmd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in sorted(PACKAGE.rglob("*.py")):
        assert source.relative_to(root).as_posix() in names, f"{source} is not in the wheel"
    inputs = [p for p in (root / "lammps_inputs").iterdir() if p.is_file() and p.suffix != ".pyc"]
    assert inputs
    for source in inputs:
        assert f"gnnmd/lammps_inputs/{source.name}" in names, f"{source} is not in the wheel"
