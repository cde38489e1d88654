"""A learner from a checkpoint: what ``lit-meta adapt``, a distillation teacher and the benchmarks load,
through the one checkpoint reader (:func:`lit_meta.checkpoints.read_checkpoint`) and its allow-list."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from lit_meta.algorithms.base import MetaLearner
from lit_meta.checkpoints import read_checkpoint, resolve_class, trusted_modules

__all__ = ["load_learner"]


def load_learner(
    path: str | os.PathLike, what: str = "a checkpoint", trusted: Iterable[str] = ()
) -> tuple[MetaLearner, dict[str, Any]]:
    """The learner of a ``lit-meta fit`` (or ``federate``) checkpoint, on the CPU, and its ``lit_meta`` record.

    Args:
        path: the ``.ckpt`` file.
        what: how error messages name the file, e.g. "`teacher_ckpt`".
        trusted: module prefixes the user trusts (their own learners); :data:`TRUSTED_MODULES_ENV` is
            always read.

    Returns:
        The learner rebuilt from the checkpoint's hyper-parameters and weights, and the record its
        :meth:`~lit_meta.algorithms.MetaLearner.on_save_checkpoint` wrote (``learner``,
        ``preprocessing`` of image datamodules, ...; empty for older checkpoints).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint of a lit-meta learner, or names an untrusted class.
    """
    trusted = trusted_modules(trusted)
    checkpoint = read_checkpoint(path, what, trusted)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if class_path is None:
        raise ValueError(
            f"Expected {what} of a lit-meta learner in {os.fspath(path)!r}, but it names no learner class."
        )
    learner_class = resolve_class(class_path, trusted, f"{what} {os.fspath(path)!r}")
    if not issubclass(learner_class, MetaLearner):
        raise ValueError(
            f"Expected {what} of a lit-meta learner (a MetaLearner subclass) in {os.fspath(path)!r}, but got "
            f"{class_path}."
        )
    learner = learner_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return learner, checkpoint.get("lit_meta", {})
