"""notebooks/quickstart.ipynb: stored without outputs, and it runs end to end on a small budget.

The notebook is executed with nbclient in a fresh kernel of this interpreter, with ``LIT_META_QUICK=1``
(a few hundred meta-steps) and its logs in a temporary folder.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
OMNIGLOT_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def _omniglot_available() -> bool:
    """Where the notebook looks for the Omniglot "minimal" zips."""
    return any(
        all((d / name).exists() for name in OMNIGLOT_ZIPS)
        for d in (ROOT / "data" / "omniglot", ROOT.parent / "shared" / "data" / "omniglot")
    )


def _stream_text(cell) -> str:
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, f"Expected {pattern!r} in the notebook's output, but got:\n{text}"
    return float(match.group(1))


def test_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    for index, cell in enumerate(code_cells):
        assert cell.outputs == [], f"code cell {index} is stored with outputs"
        assert cell.execution_count is None, f"code cell {index} is stored with execution_count {cell.execution_count}"


def test_runs_on_a_small_budget(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    # jupyter_client runs a kernel spec whose argv[0] is "python"/"python3"/"python3.X" with
    # sys.executable: the kernel then imports this environment's lit-meta.
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    major, minor = sys.version_info[:2]
    assert argv0 in {sys.executable, "python", f"python{major}", f"python{major}.{minor}"}, argv0

    # The kernel inherits this environment.
    monkeypatch.setenv("LIT_META_QUICK", "1")
    monkeypatch.setenv("LIT_META_LOGDIR", str(tmp_path / "lightning_logs"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile, nothing written to ~
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend, so figures show

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # to look at when a cell fails

    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    errors = [out for cell in code_cells for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    text = "\n".join(_stream_text(cell) for cell in code_cells)

    assert "QUICK=True" in text
    # Logs went to the temporary folder, not into the repository.
    assert any((tmp_path / "lightning_logs" / "quickstart").glob("version_*/events.out.tfevents.*"))

    # Adapting to the new sinusoid from 10 points lowers its MSE.
    before = _number(r"MSE before adaptation: ([0-9.]+)", text)
    after = _number(r"MSE after adaptation: ([0-9.]+)", text)
    assert after < before, (before, after)

    # The adaptation curve is drawn, and its scalars are read back from TensorBoard.
    images = [out for cell in code_cells for out in cell.outputs if "image/png" in out.get("data", {})]
    assert images, "no figure was displayed"
    assert "adaptation/mse_step10" in text and "adaptation/loss_step0" in text
    assert "adaptation/curve" in text

    if _omniglot_available():
        accuracy = _number(r"Omniglot 5-way 1-shot meta-test accuracy: ([0-9.]+)%", text)
        assert 20.0 < accuracy <= 100.0, accuracy  # above chance after a few dozen steps
        one_task = _number(r"Omniglot adapted accuracy on one task: ([0-9.]+)%", text)
        assert 20.0 < one_task <= 100.0, one_task  # above chance, like the meta-test
        assert len(images) >= 3  # adaptation curve, sinusoid fit, episode
    else:
        assert "Omniglot data not found" in text
        assert "Omniglot adapted accuracy" not in text
