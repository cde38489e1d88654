"""The Makefile's test targets select what they say: `make test-slow` runs the slow tests."""

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_make_test_slow_selects_tests():
    recipe = re.search(r"^test-slow:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None and "-m slow" in recipe.group(1)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-2000:]  # pytest exits 5 when it selects no test
    assert re.search(r"^\d+/\d+ tests collected", result.stdout, re.M), result.stdout[-500:]
