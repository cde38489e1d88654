"""Reading the checkpoints that ``lit-meta fit`` writes: one place for every tool that loads a learner
(``lit-meta adapt``, a distillation teacher)."""

from __future__ import annotations

import os
from typing import Any

import torch

from lit_meta._imports import import_subclass
from lit_meta.algorithms.base import MetaLearner


def load_learner_checkpoint(path: str, what: str = "a checkpoint") -> tuple[MetaLearner, dict[str, Any]]:
    """The learner of a ``lit-meta fit`` checkpoint, on the CPU, and the checkpoint's ``lit_meta`` record.

    Args:
        path: the ``.ckpt`` file.
        what: how error messages name the file, e.g. "`teacher_ckpt`".

    Returns:
        The learner rebuilt from the checkpoint's hyper-parameters and weights, and the record its
        :meth:`~lit_meta.algorithms.MetaLearner.on_save_checkpoint` wrote (``learner``,
        ``preprocessing`` of image datamodules, ...; empty for older checkpoints).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint of a lit-meta learner.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected {what} file at {path!r}, but got no such file.")
    try:
        # weights_only: a checkpoint written by `lit-meta fit` holds no pickled objects.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        raise ValueError(
            f"Expected {what} written by `lit-meta fit` in {path!r}, but could not read it ({type(err).__name__})."
        ) from err
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path") if isinstance(checkpoint, dict) else None
    learner_class = import_subclass(class_path, MetaLearner)
    if learner_class is None:
        raise ValueError(
            f"Expected {what} of a lit-meta learner (a MetaLearner subclass) in {path!r}, but got "
            f"{class_path or 'another checkpoint'}."
        )
    learner = learner_class.load_from_checkpoint(path, map_location="cpu")
    return learner, checkpoint.get("lit_meta", {})
