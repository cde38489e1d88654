"""The documentation cannot rot: the code in its pages runs, and its API reference covers every export.

- Every ```python block of ``docs/**/*.md`` and ``README.md`` runs. A page's blocks share one namespace,
  in order, like a doctest. A line ``--8<-- "FILE"`` or ``--8<-- "FILE:SECTION"`` (pymdownx.snippets) is
  replaced by the file from ``docs/examples/`` or ``configs/``, or by the lines between its
  ``--8<-- [start:SECTION]`` and ``[end:SECTION]`` markers, as the site shows it. Blocks fenced as
  ```py are signatures and fragments: shown, not run.
- The example learner's config (``docs/examples/ridge_sinusoid.yaml``) trains through ``lit-meta fit``.
- Every name in ``__all__`` of ``lit_meta``, ``lit_meta.algorithms``, ``datamodules`` and ``callbacks``
  has a ``::: name`` directive in ``docs/api/*.md``.

The site itself is built by ``make test`` (``mkdocs build --strict``), not here.
"""

from __future__ import annotations

import importlib
import re
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT

DOCS = ROOT / "docs"
SNIPPET_BASES = (DOCS / "examples", ROOT / "configs")  # mkdocs.yml's pymdownx.snippets base_path
SNIPPET = re.compile(r'^(?P<indent>\s*)--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"\s*$')
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^:::\s+(?P<identifier>[\w.]+)\s*$", re.M)
EXPORTERS = ("lit_meta", "lit_meta.algorithms", "datamodules", "callbacks")
PAGES = sorted(DOCS.rglob("*.md")) + [ROOT / "README.md"]


def snippet(path: str, section: str | None) -> str:
    """The text a ``--8<--`` line includes: a whole file, or one marked section of it, dedented."""
    found = [base / path for base in SNIPPET_BASES if (base / path).is_file()]
    assert found, f"snippet {path!r} is in none of {[str(b) for b in SNIPPET_BASES]}"
    text = found[0].read_text()
    if section is None:
        return text
    match = re.search(rf"--8<-- \[start:{section}\]\n(.*?)\n[^\n]*--8<-- \[end:{section}\]", text, re.S)
    assert match, f"no section {section!r} in {path}"
    return textwrap.dedent(match.group(1))


def code_blocks(page: Path, language: str = "python") -> list[str]:
    """The ```language blocks of a Markdown page, snippets included."""
    blocks, lines, inside = [], [], None  # inside: the language of the open fence
    for line in page.read_text().splitlines():
        fence = FENCE.match(line.strip())
        if inside is None:
            if fence and fence["lang"]:
                inside, lines = fence["lang"], []
        elif fence and not fence["lang"]:
            if inside == language:
                blocks.append("\n".join(lines))
            inside = None
        elif inside == language:
            included = SNIPPET.match(line)
            lines.append(snippet(included["path"], included["section"]) if included else line)
    return blocks


def relative(page: Path) -> str:
    return str(page.relative_to(ROOT))


RUNNABLE = [page for page in PAGES if "```python\n" in page.read_text()]


@pytest.fixture
def one_thread():
    """The examples' small networks train fastest on one thread, and the suite runs on two workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pages_with_python_are_found():
    names = {relative(page) for page in RUNNABLE}
    assert {"README.md", "docs/getting-started.md", "docs/how-to/write-a-learner.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE, ids=relative)
def test_python_blocks_run(page, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # Trainer logs and checkpoints go to a throw-away folder
    namespace = {"__name__": "__docs__"}
    start = time.perf_counter()
    for i, block in enumerate(code_blocks(page)):
        exec(compile(block, f"{relative(page)} (python block {i + 1})", "exec"), namespace)
    assert time.perf_counter() - start < 60, f"{relative(page)}: keep documentation examples fast"


def test_snippets_exist():
    for page in PAGES:
        for line in page.read_text().splitlines():
            if included := SNIPPET.match(line):
                snippet(included["path"], included["section"])


def test_example_learner_trains_from_its_config(tmp_path, monkeypatch, one_thread):
    from lit_meta.cli import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(DOCS / "examples"))  # PYTHONPATH=docs/examples, as the guide says
    cli = run(
        [
            "fit",
            "--config",
            str(DOCS / "examples" / "ridge_sinusoid.yaml"),
            "--trainer.max_steps=20",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.val_tasks=25",
            "--data.init_args.test_tasks=25",
        ]
    )
    assert type(cli.model).__name__ == "RidgeHead" and cli.trainer.global_step == 20
    assert torch.isfinite(cli.trainer.callback_metrics["test/loss"])


def documented() -> set[str]:
    """The identifiers of every ``:::`` directive of the API reference."""
    return {m["identifier"] for page in (DOCS / "api").glob("*.md") for m in DIRECTIVE.finditer(page.read_text())}


@pytest.mark.parametrize("module", EXPORTERS)
def test_api_reference_covers_every_export(module):
    exported = importlib.import_module(module).__all__
    missing = sorted(f"{module}.{name}" for name in exported if f"{module}.{name}" not in documented())
    assert not missing, f"add a `::: NAME` directive to a page of docs/api/ for each of {missing}"


def test_code_blocks_parse_snippets_and_skip_other_languages(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        '```py\nnot run\n```\n\n```python\nx = 1\n```\n\n```yaml\na: 1\n```\n\n```python\n--8<-- "quickstart.py"\n```\n'
    )
    blocks = code_blocks(page)
    assert blocks[0] == "x = 1" and "learner.adapt" in blocks[1] and len(blocks) == 2
