"""``lit-meta adapt``: adapt a meta-trained checkpoint to a folder of labelled images, predict others.

Example::

    lit-meta adapt --ckpt_path best.ckpt --support my_task/support --query my_task/query --output predictions.csv

``--support`` is ``<class>/<image>``; ``--query`` is a folder of images, or ``<class>/<image>`` (then
the accuracy is printed too). Images are prepared as the checkpoint's datamodule prepared them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from lit_meta.algorithms.base import MetaLearner
from lit_meta.algorithms.checkpoints import load_learner as load_checkpoint_learner
from lit_meta.files import atomic_open, check_writable_folder, write_failure
from lit_meta.images import IMAGE_SUFFIXES, ImagePreprocessing, list_classes

PROGRESS_THRESHOLD = 300  # queries; fewer finish too fast for a progress bar to help


def load_learner(path: str, trust: Sequence[str] = ()) -> tuple[MetaLearner, ImagePreprocessing]:
    """The learner of a ``lit-meta fit`` checkpoint and how its training images were prepared.

    Args:
        path: the checkpoint.
        trust: module prefixes of the user's own classes the checkpoint may name (see
            :mod:`lit_meta.checkpoints`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint of a lit-meta learner trained on image files, or it
            names a class outside the allow-list.
    """
    learner, record = load_checkpoint_learner(path, trusted=trust)
    preprocessing = record.get("preprocessing")
    if preprocessing is None:
        raise ValueError(
            f"Expected {path!r} to record how its training images were prepared (checkpoints of image "
            f"datamodules do), but it records none."
        )
    return learner, ImagePreprocessing.from_dict(preprocessing)


def read_support(root: str, preprocessing: ImagePreprocessing) -> tuple[Tensor, Tensor, list[str]]:
    """Support images ``(Ns, C, H, W)``, labels ``(Ns,)`` and class names of ``root/<class>/<image>``."""
    classes = list_classes(root)
    if len(classes) < 2:
        raise ValueError(f"Expected >= 2 class folders in the support folder {root!r}, but got {len(classes)}.")
    images, labels = [], []
    for label, files in enumerate(classes.values()):
        images += [preprocessing.load(path) for path in files]
        labels += [label] * len(files)
    return torch.stack(images), torch.tensor(labels), list(classes)


def read_queries(root: str, class_names: list[str]) -> tuple[list[str], list[int] | None]:
    """Query image paths, and their labels if ``root`` is ``<class>/<image>`` (else ``None``)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"Expected a folder of query images at {root!r}, but got no such folder.")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    if any(os.path.isdir(os.path.join(root, e)) for e in entries):
        classes = list_classes(root)
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ValueError(f"Expected query classes among the support classes, but got {unknown} in {root!r}.")
        paths = [path for files in classes.values() for path in files]
        labels = [class_names.index(name) for name, files in classes.items() for _ in files]
        return paths, labels
    paths = [os.path.join(root, e) for e in entries if e.lower().endswith(IMAGE_SUFFIXES)]
    if not paths:
        raise ValueError(
            f"Expected image files ({', '.join(IMAGE_SUFFIXES)}) in the query folder {root!r}, but got none."
        )
    return paths, None


def write_predictions(path: str, rows: list[dict]) -> None:
    """``.json``: a list of records; anything else: CSV with a header. Written atomically: an existing
    file is replaced only once the new one is complete."""
    with atomic_open(path, "w", newline="") as f:
        if path.lower().endswith(".json"):
            json.dump(rows, f, indent=2)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def adapt(
    ckpt_path: str,
    support: str,
    query: str,
    output: str | None = None,
    steps: int | None = None,
    batch_size: int = 100,
    trust: Sequence[str] = (),
) -> dict:
    """Adapt the checkpoint's learner to ``support`` and predict ``query``; see the module docstring.

    Returns:
        A summary: ``ways``, ``support`` and ``queries`` counts, ``steps``, ``accuracy`` (or ``None``),
        and the ``predictions`` rows (``file``, ``predicted``, ``probability``, and ``true`` if known).
    """
    learner, preprocessing = load_learner(ckpt_path, trust)
    support_x, support_y, class_names = read_support(support, preprocessing)
    paths, labels = read_queries(query, class_names)
    adapted = learner.adapt(support_x, support_y, steps=steps)
    chunks = range(0, len(paths), batch_size)
    probabilities = []
    for start in tqdm(chunks, desc="Predicting", unit="batch", disable=len(paths) < PROGRESS_THRESHOLD):
        batch = torch.stack([preprocessing.load(p) for p in paths[start : start + batch_size]])
        probabilities.append(adapted.predict_proba(batch))
    confidence, predicted = torch.cat(probabilities).max(-1)
    rows = []
    for i, path in enumerate(paths):
        row = {
            "file": os.path.relpath(path, query),
            "predicted": class_names[predicted[i]],
            "probability": round(confidence[i].item(), 6),
        }
        if labels is not None:
            row["true"] = class_names[labels[i]]
        rows.append(row)
    accuracy = None if labels is None else (predicted == torch.tensor(labels)).float().mean().item()
    if output is not None:
        write_predictions(output, rows)
    used_steps = learner.eval_inner_steps if steps is None else steps
    return {
        "ways": len(class_names),
        "support": len(support_y),
        "queries": len(paths),
        "steps": used_steps,
        "accuracy": accuracy,
        "predictions": rows,
    }


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-meta adapt``."""
    parser = argparse.ArgumentParser(
        prog="lit-meta adapt", description="Adapt a meta-trained checkpoint to labelled images and predict others."
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by `lit-meta fit`")
    parser.add_argument("--support", required=True, help="folder of <class>/<image> labelled examples")
    parser.add_argument("--query", required=True, help="folder of images, or of <class>/<image> to measure accuracy")
    parser.add_argument("--output", default=None, help="predictions file: .csv or .json")
    parser.add_argument(
        "--steps", type=int, default=None, help="adaptation steps (default: the learner's evaluation setting)"
    )
    parser.add_argument("--batch_size", type=int, default=100, help="queries predicted together")
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module (prefix) of your own classes the checkpoint may name, e.g. my_learners; may be repeated",
    )
    options = parser.parse_args(args)
    try:
        if options.output is not None:
            check_writable_folder(os.path.dirname(os.path.abspath(options.output)), "the folder of `--output`")
        summary = adapt(
            options.ckpt_path,
            options.support,
            options.query,
            options.output,
            options.steps,
            options.batch_size,
            options.trust,
        )
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"lit-meta adapt: error: {err}\n")
    except OSError as err:
        if write_failure(err) is None:
            raise
        parser.exit(1, f"lit-meta adapt: error: Expected to write {options.output!r}, but got: {err.strerror}.\n")
    lines = [
        f"Adapted to {summary['ways']} classes from {summary['support']} support images ({summary['steps']} "
        "adaptation steps); "
        f"predicted {summary['queries']} queries."
    ]
    if summary["accuracy"] is not None:
        correct = round(summary["accuracy"] * summary["queries"])
        lines.append(f"Accuracy: {100 * summary['accuracy']:.2f}% ({correct}/{summary['queries']})")
    if options.output is not None:
        lines.append(f"Predictions written to {options.output}")
    print("\n".join(lines), file=sys.stdout)
