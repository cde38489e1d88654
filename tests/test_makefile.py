"""The Makefile's test targets select what they say: `make test-slow` runs the slow tests."""

import ast
import re

from tests.helpers import ROOT


def slow_tests() -> list[str]:
    """Test functions marked ``@pytest.mark.slow`` anywhere under tests/ (read, not imported)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if any(ast.unparse(d) == "pytest.mark.slow" for d in node.decorator_list):
                    found.append(f"{path.relative_to(ROOT)}::{node.name}")
    return found


def test_make_test_slow_selects_tests():
    recipe = re.search(r"^test-slow:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None and "-m slow" in recipe.group(1)
    assert slow_tests(), "`make test-slow` would select no test (pytest exits 5)"
