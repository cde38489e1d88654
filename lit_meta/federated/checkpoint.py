"""A federated round checkpoint: written after every round, read back to resume.

A round checkpoint is a Lightning checkpoint of the global meta-learner (``lit-meta test`` and
``lit-meta adapt`` read it as one of ``lit-meta fit``) with a ``"federated"`` entry: the round, the
global arrays exactly as the server holds them, the server optimiser's state
(:func:`strategy_state`), a DP wrapper's accountant and the run's settings, of which those of
:data:`RESUME_SETTINGS` must be a resumed run's too (:func:`resume_from`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, NamedTuple

import lightning
import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

from lit_meta.algorithms.base import MetaLearner
from lit_meta.checkpoints import check_same_learner, config_class_paths, read_checkpoint, trusted_modules
from lit_meta.federated.roles import role_summary
from lit_meta.files import atomic_torch_save
from lit_meta.images import ImagePreprocessing

#: Scalars Flower's strategies change from round to round (the adaptive-clipping DP wrappers'
#: clipping norm); every other scalar attribute is a setting, which a resumed run takes from its config.
ROUND_SCALARS = ("clipping_norm",)

#: Settings a resumed run must share with its checkpoint: they decide what the rounds compute.
RESUME_SETTINGS = ("strategy", "clients", "local_steps", "seed", "transfer", "personal")


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The state a server optimiser accumulates over rounds (FedAdam's and FedYogi's moments, FedAvgM's
    momentum, an adaptive-clipping wrapper's clipping norm): every attribute of ``strategy`` (and of
    the strategies it wraps) that maps names to arrays (FedOpt's), lists arrays (FedAvgM's) or is
    one of :data:`ROUND_SCALARS`, keyed by its dotted attribute path; arrays become tensors."""
    state, prefix, inner = {}, "", strategy
    while isinstance(inner, Strategy):
        for name, value in vars(inner).items():
            if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
                state[prefix + name] = {k: torch.from_numpy(np.array(v)) for k, v in value.items()}
            elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
                state[prefix + name] = [torch.from_numpy(np.array(v)) for v in value]
            elif name in ROUND_SCALARS and isinstance(value, float):
                state[prefix + name] = value
        inner, prefix = getattr(inner, "strategy", None), f"{prefix}strategy."
    return state


def load_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Put :func:`strategy_state`'s ``state`` back into ``strategy``."""
    for path, value in state.items():
        owner, *parents, name = [strategy, *path.split(".")]
        for parent in parents:
            owner = getattr(owner, parent)
        if name.endswith("[]"):  # a list in the older format: `name[]`, its arrays keyed by position
            name, value = name[:-2], [value[str(i)] for i in range(len(value))]
        if isinstance(value, dict):
            setattr(owner, name, {k: v.numpy() for k, v in value.items()})
        elif isinstance(value, list):
            setattr(owner, name, [v.numpy() for v in value])
        else:
            setattr(owner, name, float(value))


def round_checkpoint(
    learner: MetaLearner,
    server_round: int,
    arrays: ArrayRecord,
    strategy: Strategy,
    settings: dict[str, Any],
    preprocessing: ImagePreprocessing | None = None,
) -> dict[str, Any]:
    """The checkpoint of round ``server_round``.

    Args:
        learner: the global meta-learner, the round's weights loaded.
        server_round: the round.
        arrays: the global arrays as the server holds them (FedAdam's are float64), for resume.
        strategy: the server's strategy (its optimiser state and a DP wrapper's accountant).
        settings: the run's settings, as ``federated_result.json`` records them.
        preprocessing: how an image file becomes a model input (for ``lit-meta adapt``), if any.
    """
    accountant = getattr(strategy, "accountant", None)
    checkpoint = {
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": server_round,
        "state_dict": learner.state_dict(),
        "hyper_parameters": dict(learner.hparams),
        "federated": {
            "round": server_round,
            "arrays": {k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()},
            "strategy": strategy_state(strategy),
            "accountant": accountant.state_dict() if accountant is not None else None,
            "settings": settings,
        },
    }
    if preprocessing is not None:
        checkpoint["lit_meta"] = {"preprocessing": preprocessing.to_dict()}
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], paths: Iterable[str]) -> None:
    """Write ``checkpoint`` to each of ``paths``, atomically: a kill or a full disk leaves the previous
    file whole."""
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_torch_save(checkpoint, path)


class Resumed(NamedTuple):
    """Where a resumed run goes on from (:func:`resume_from`)."""

    round: int  #: the rounds done
    arrays: ArrayRecord  #: the server's global arrays after them
    version_dir: str  #: the run's version folder
    records: list[dict]  #: the records of the rounds done (``federated_result.json``'s)


def resume_from(path: str, learner: MetaLearner, strategy: Strategy, settings: dict[str, Any] | None = None) -> Resumed:
    """Load a round checkpoint into ``learner`` and ``strategy``.

    Args:
        path: the checkpoint.
        learner: the run's learner (of the checkpoint's class).
        strategy: the run's strategy.
        settings: the run's settings as it records them; those of :data:`RESUME_SETTINGS` must equal
            the checkpoint's (its ``clients`` compared by :func:`~lit_meta.federated.roles.role_summary`,
            also for a checkpoint that lists every client's role).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a federated checkpoint, one of another learner class, or one of a run with
            other settings (strategy, clients, local steps, seed, transfer dtype or personal weights).
    """
    # The classes this run's own config names (its learner's hyper-parameters) are the user's choice.
    trusted = [*trusted_modules(), *config_class_paths(dict(learner.hparams))]
    checkpoint = read_checkpoint(path, "a federated round checkpoint", trusted)
    if "federated" not in checkpoint:
        raise ValueError(f"Expected a checkpoint written by `lit-meta federate` in {path!r}, but got another file.")
    federated = checkpoint["federated"]
    check_same_learner(type(learner), checkpoint.get("hyper_parameters", {}).get("_class_path"))
    _check_same_settings(path, federated.get("settings"), settings)
    learner.load_state_dict(checkpoint["state_dict"])
    load_strategy_state(strategy, federated["strategy"])
    if federated.get("accountant") is not None and getattr(strategy, "accountant", None) is not None:
        strategy.accountant.load_state_dict(federated["accountant"])
    version_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    records: list[dict] = []
    result = os.path.join(version_dir, "federated_result.json")
    if os.path.isfile(result):
        with open(result) as f:
            records = [r for r in json.load(f)["rounds"] if r["round"] <= federated["round"]]
    arrays = ArrayRecord({k: Array(v.numpy()) for k, v in federated["arrays"].items()})
    return Resumed(int(federated["round"]), arrays, version_dir, records)


def _check_same_settings(path: str, saved: dict[str, Any] | None, settings: dict[str, Any] | None) -> None:
    if saved is None or settings is None:  # a checkpoint written before settings were kept
        return
    for key in RESUME_SETTINGS:
        if key not in saved:
            continue
        value = saved[key]
        if key == "clients" and isinstance(value, dict) and "sha256" not in value:
            value = role_summary(value)  # every client's role, as checkpoints listed them before summaries
        if value != settings.get(key):
            raise ValueError(
                f"Expected `{key}` {value!r} to resume the run of {path!r}, but got {settings.get(key)!r}."
            )
