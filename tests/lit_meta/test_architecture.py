"""The packages' dependencies run one way: ``datamodules`` and ``callbacks`` build on ``lit_meta``,
which imports neither, and no module of the three imports itself back through the others."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("lit_meta", "datamodules", "callbacks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotations only)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(path: Path, annotations: bool = False) -> set[str]:
    """Every module ``path`` imports when it runs, at any depth (lazy imports in functions count);
    with ``annotations``, those under ``if TYPE_CHECKING:`` too."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree) if annotations else _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def graph(annotations: bool = False) -> dict[str, set[str]]:
    """``{module: modules of the three packages it imports}`` (``annotations``: type-only imports too)."""
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in imports_of(path, annotations) if m in modules and m != name} for name, path in modules.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None``. A package's ``__init__`` importing its own
    modules is not a cycle: only edges between modules that are not parent and child count."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target.startswith(node + ".") or node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_lit_meta_imports_neither_datamodules_nor_callbacks():
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph().items()
        if module.split(".")[0] == "lit_meta"
        for target in targets
        if target.split(".")[0] in ("datamodules", "callbacks")
    )
    assert offenders == []


def private_imports(path: Path) -> list[str]:
    """The private (``_``-prefixed) modules or names of ``lit_meta`` that ``path`` imports, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [n for n in names if n.split(".")[0] == "lit_meta" and any(p.startswith("_") for p in n.split("."))]
    return found


def test_datamodules_and_callbacks_use_only_the_public_names_of_lit_meta():
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("datamodules", "callbacks")
        for path in (ROOT / package).rglob("*.py")
        for name in private_imports(path)
    )
    assert offenders == []


def test_the_private_import_check_finds_private_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from lit_meta._imports import x\nfrom lit_meta.tasks import _private\nimport lit_meta.tasks\n")
    assert private_imports(path) == ["lit_meta._imports", "lit_meta._imports.x", "lit_meta.tasks._private"]


def test_the_three_packages_have_no_import_cycle():
    assert find_cycle(graph()) is None


def test_no_import_cycle_even_through_type_annotations():
    # adaptation and evaluation type the learner by a protocol (lit_meta.evaluation.EpisodicLearner).
    assert find_cycle(graph(annotations=True)) is None


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set()}, None),
        ({"p": {"p.x"}, "p.x": {"p"}}, None),  # a package and its own module
    ],
)
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert find_cycle(edges) == expected


def test_plotting_has_no_lightning_imports():
    imported = imports_of(ROOT / "callbacks" / "plotting.py")
    assert sorted(m for m in imported if m.split(".")[0] in ("lightning", "pytorch_lightning")) == []


# Optional subsystems: their package and the third-party libraries only they may import.
OPTIONAL = {"federated": ("flwr", "ray"), "tuning": ("optuna",)}
# `lit-meta federate` and `lit-meta tune` dispatch to their CLI from inside a function, only for that subcommand.
LAZY = {
    "lit_meta.cli": {
        "lit_meta.federated.cli",
        "lit_meta.federated.cli.main",
        "lit_meta.tuning.cli",
        "lit_meta.tuning.cli.main",
    }
}


def _inside(subsystem: str, module: str) -> bool:
    return subsystem in module.split(".")


@pytest.mark.parametrize("subsystem", sorted(OPTIONAL))
def test_only_an_optional_subsystem_imports_its_libraries(subsystem):
    """``flwr`` is needed to federate and ``optuna`` to tune, not to meta-learn: only
    ``lit_meta.federated`` and ``datamodules.federated`` import Flower or the federated modules,
    only ``lit_meta.tuning`` Optuna (bar the CLI's lazy dispatch)."""
    libraries = OPTIONAL[subsystem]
    offenders = sorted(
        f"{module_name(path)} imports {target}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not _inside(subsystem, module_name(path))
        for target in imports_of(path)
        if (target.split(".")[0] in libraries or _inside(subsystem, target))
        and target not in LAZY.get(module_name(path), ())
    )
    assert offenders == []


def test_the_packages_and_the_cli_load_without_flower_or_optuna():
    libraries = sorted(lib for libs in OPTIONAL.values() for lib in libs)
    code = (
        "import sys, lit_meta, lit_meta.cli, lit_meta.algorithms, datamodules, callbacks\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(libraries)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
