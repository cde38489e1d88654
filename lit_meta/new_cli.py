"""``lit-meta new DIR --example NAME``: an example project to copy and own.

.. code-block:: bash

    lit-meta new my_project --example omniglot
    cd my_project && lit-meta fit --config base.yaml --config my_learner.yaml

Writes a self-contained folder: the example's configs (every file they include inlined, so that they
run from anywhere), a skeleton learner ``my_learner.py`` with the config ``my_learner.yaml`` that
trains it by class path (``my_learner.MyLearner``, imported from the folder ``lit-meta`` runs in),
and a README with the commands. The files ship in the package, under ``lit_meta/templates/<example>``;
a test keeps each config equal to the repository's config it was made from. Data is read from the
user data folder (:mod:`lit_meta.paths`) and downloaded there where it can be.

A mistake (an unknown example, a folder that already holds files) is one line with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from lit_meta.files import write_failure

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PROG = "lit-meta new"


@dataclass(frozen=True)
class Example:
    """One example project.

    Args:
        summary: what it runs, in one line.
        commands: the commands to run next, from inside the new folder (its README shows them too).
    """

    summary: str
    commands: tuple[str, ...]


EXAMPLES: dict[str, Example] = {
    "sinusoid": Example(
        "MAML on sinusoid regression (Finn et al., 2017); generated data, nothing to download",
        (
            "lit-meta fit --config my_learner.yaml --trainer.logger.init_args.version mine",
            "lit-meta test --config my_learner.yaml --ckpt_path lightning_logs/mine/checkpoints/best.ckpt",
            "lit-meta fit --config sinusoid_maml.yaml",
            "tensorboard --logdir lightning_logs",
        ),
    ),
    "omniglot": Example(
        "Prototypical Networks on Omniglot, 5-way 1-shot; downloads the two small Omniglot zips (a few MB)",
        (
            "lit-meta fit --config base.yaml --config my_learner.yaml --trainer.logger.init_args.version mine",
            "lit-meta test --config base.yaml --config my_learner.yaml "
            "--ckpt_path lightning_logs/mine/checkpoints/best.ckpt",
            "lit-meta fit --config base.yaml --config protonet_5w1s.yaml",
            "tensorboard --logdir lightning_logs",
        ),
    ),
    "federated": Example(
        "federated Prototypical Networks on Flower, one Omniglot client per alphabet; the `federated` extra",
        (
            "lit-meta federate --config base.yaml --config my_learner.yaml",
            "lit-meta federate --config base.yaml --config protonet.yaml",
            "tensorboard --logdir lightning_logs",
        ),
    ),
    "tune": Example(
        "a hyper-parameter search of first-order MAML on Omniglot, on Optuna; the `tune` extra",
        (
            "lit-meta tune --config base.yaml --config fomaml_5w1s.yaml --config omniglot_fomaml.yaml "
            "--search fomaml_space.yaml --study fomaml --n_trials 16",
            "lit-meta fit --config studies/fomaml_best.yaml",
            "lit-meta tune --config base.yaml --config my_learner.yaml --config omniglot_fomaml.yaml "
            "--search my_learner_space.yaml --study my_learner --n_trials 16",
            "tensorboard --logdir lightning_logs",
        ),
    ),
}
DEFAULT_EXAMPLE = "sinusoid"
#: Files an example takes from another's folder, kept once in the package: {example: {file: other example}}.
SHARED = {"federated": {"my_learner.py": "omniglot"}, "tune": {"my_learner.py": "omniglot"}}


def template_files(example: str) -> dict[str, Traversable]:
    """``{file name: packaged file}`` of an example's templates (``lit_meta/templates/<example>``).

    Raises:
        ValueError: ``example`` is not one of :data:`EXAMPLES`.
    """
    if example not in EXAMPLES:
        raise ValueError(f"Expected `--example` to be one of {', '.join(EXAMPLES)}, but got {example!r}.")
    templates = resources.files("lit_meta") / "templates"
    files = {
        entry.name: entry
        for entry in sorted((templates / example).iterdir(), key=lambda entry: entry.name)
        if entry.is_file() and not entry.name.startswith(".") and not entry.name.endswith((".pyc", ".pyo"))
    }
    files.update({name: templates / other / name for name, other in SHARED.get(example, {}).items()})
    return dict(sorted(files.items()))


def check_new_folder(folder: str) -> None:
    """Refuse a ``folder`` that holds files (or is a file): ``new`` never overwrites anything.

    Raises:
        ValueError: naming the folder.
    """
    if os.path.isdir(folder):
        if os.listdir(folder):
            raise ValueError(f"Expected a new or empty folder for the example, but got {folder!r}, which holds files.")
    elif os.path.lexists(folder):
        raise ValueError(f"Expected a new or empty folder for the example, but got {folder!r}, which is a file.")


def write_example(folder: str, example: str = DEFAULT_EXAMPLE) -> list[str]:
    """Write an example project into ``folder`` (new or empty; made with its parents if missing).

    Args:
        folder: where to write it.
        example: one of :data:`EXAMPLES`.

    Returns:
        The paths of the files written, in order.

    Raises:
        ValueError: an unknown example, or a ``folder`` that holds files.
        OSError: a file could not be written (what was written is removed again).
    """
    files = template_files(example)
    check_new_folder(folder)
    made = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    written: list[str] = []
    try:
        for name, template in files.items():
            path = os.path.join(folder, name)
            with open(path, "xb") as out:  # "x": never over a file that appeared meanwhile
                written.append(path)
                out.write(template.read_bytes())
    except OSError:
        for path in reversed(written):
            with contextlib.suppress(OSError):
                os.remove(path)
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, as the other subcommands
        raise ValueError(message[:1].upper() + message[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    epilog = "examples:\n" + "\n".join(f"  {name:<10} {example.summary}" for name, example in EXAMPLES.items())
    parser = _Parser(
        prog=PROG,
        description="Write an example project to copy and own: configs, a skeleton learner, a README.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("folder", metavar="DIR", help="the folder to write (new or empty)")
    parser.add_argument(
        "--example",
        default=DEFAULT_EXAMPLE,
        metavar="NAME",
        help=f"one of {', '.join(EXAMPLES)} (default {DEFAULT_EXAMPLE})",
    )
    return parser


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-meta new`` (``args``: the command line after ``new``)."""
    try:
        options = build_parser().parse_args(sys.argv[2:] if args is None else args)
        written = write_example(options.folder, options.example)
    except ValueError as err:
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        sys.stderr.write(f"{PROG}: error: {err}\n")
        sys.exit(2)
    except OSError as err:
        failure = write_failure(err)
        if failure is None or os.environ.get("LIT_META_TRACEBACK"):
            raise
        where = f" {failure.filename!r}" if failure.filename else " the example"
        sys.stderr.write(f"{PROG}: error: Expected to write{where}, but got: {failure.strerror or failure}.\n")
        sys.exit(1)
    example = EXAMPLES[options.example]
    lines = [f"Wrote the {options.example} example into {options.folder}: {example.summary}."]
    lines += [f"  {path}" for path in written]
    lines += ["Next (see its README.md):", f"  cd {shlex.quote(options.folder)}"]
    lines += [f"  {command}" for command in example.commands]
    print("\n".join(lines))
