"""Runs that never overwrite one another: a run's identity in its checkpoints, the folder a run may
write into, the run ``--ckpt_path last`` resumes, and checkpoints written atomically.

- Every checkpoint of ``lit-meta fit`` records the run's *fingerprint*: a hash of the learner's and
  the datamodule's configuration and the seed (:func:`run_fingerprint`), which a resumed run shares.
- A new run into the version folder of an existing one (``--trainer.logger.init_args.version``) is
  refused, unless it resumes (``--ckpt_path``) or is told to ``--overwrite`` (which empties the folder).
- ``--ckpt_path last`` resumes the latest ``last*.ckpt`` *of the same configuration* under the log
  folder; checkpoints of other runs there are never taken, and two runs of that configuration in the
  folder are ambiguous (refused: name the version).
- Checkpoints are written to a temporary file beside the target, then renamed over it
  (:class:`AtomicCheckpointIO`): a kill or a full disk leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_meta.files import atomic_torch_save

#: Datamodule arguments that say where and how data is read, not what the run learns from.
DATA_LOCATION_KEYS = ("data_dir", "root", "download", "num_workers", "persistent_workers", "pin_memory")


def run_fingerprint(model: Any, data: Any, seed: Any) -> str:
    """The identity of a run: a hash of its learner's and datamodule's configuration (their class paths
    and arguments, less :data:`DATA_LOCATION_KEYS`) and its integer seed.

    Args:
        model: the ``model`` section of the config (a ``{class_path, init_args}`` mapping).
        data: the ``data`` section.
        seed: ``seed_everything`` (ignored unless an integer: a random seed is not part of the identity).

    Returns:
        16 hexadecimal digits.
    """
    data = dict(data or {})
    if isinstance(data.get("init_args"), dict):
        data["init_args"] = {k: v for k, v in data["init_args"].items() if k not in DATA_LOCATION_KEYS}
    identity = {"model": model, "data": data, "seed": seed if isinstance(seed, int) and seed is not True else None}
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunIdentity(Callback):
    """Writes the run's fingerprint into every checkpoint, as ``checkpoint["lit_meta"]["run"]``.

    Args:
        fingerprint: :func:`run_fingerprint` of the run (``None``: nothing written).
    """

    def __init__(self, fingerprint: str | None = None) -> None:
        self.fingerprint = fingerprint

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.fingerprint is not None:
            checkpoint.setdefault("lit_meta", {})["run"] = self.fingerprint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer on local files, atomically: a temporary file in the checkpoint's
    folder, flushed, then renamed over the target (Lightning's own writes the bytes in place)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_torch_save(checkpoint, path)


def recorded_fingerprint(path: str | os.PathLike) -> str | None:
    """The run fingerprint a checkpoint records (``None``: none, or not a readable checkpoint)."""
    try:  # mapped, not read: a folder of large checkpoints is scanned quickly
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a file that is not a checkpoint records nothing
        return None
    record = checkpoint.get("lit_meta") if isinstance(checkpoint, dict) else None
    return record.get("run") if isinstance(record, dict) else None


def version_folder(logger: Any) -> Path | None:
    """The version folder a TensorBoard or CSV logger config (``{class_path, init_args}``) writes into,
    when it names its version; ``None`` otherwise."""
    init_args = _logger_args(logger)
    if init_args is None or init_args.get("version") is None:
        return None
    return _logger_root(init_args) / _version_name(init_args["version"])


def check_new_run(logger: Any, resuming: bool, overwrite: bool) -> None:
    """Refuse a new run into the version folder of an existing run, unless it resumes or overwrites.

    Args:
        logger: the trainer's logger config.
        resuming: the run resumes a checkpoint (``--ckpt_path``).
        overwrite: the user asked to overwrite: the existing folder is emptied.

    Raises:
        ValueError: the folder holds another run's files.
    """
    folder = version_folder(logger)
    if folder is None or resuming or not folder.is_dir() or not any(folder.iterdir()):
        return
    if overwrite:
        shutil.rmtree(folder)
        return
    raise ValueError(
        f"Expected a new version folder for a new run, but got {str(folder)!r}, which holds another run's files "
        "(resume it with `--ckpt_path last`, overwrite it with `--overwrite true`, or choose another version)."
    )


def resume_version(logger: Any, fingerprint: str) -> None:
    """``fit --ckpt_path last``: point a TensorBoard or CSV logger config at the version folder of this
    run, the one whose ``last*.ckpt`` records ``fingerprint``.

    A logger that names its version may hold no other run's ``last*.ckpt``; otherwise the folder's
    versions are searched: none of this run -> Lightning starts afresh in a new version (as it does
    without any checkpoint); exactly one -> that version; several -> refused (ambiguous). Checkpoints
    that record no fingerprint (written before fingerprints) count as this run's only when they are
    the folder's only ones.

    Raises:
        ValueError: the named version holds another run's checkpoint, or several versions hold this run's.
    """
    init_args = _logger_args(logger)
    if init_args is None:
        return
    root = _logger_root(init_args)
    if init_args.get("version") is not None:
        _check_one_run(root / _version_name(init_args["version"]), fingerprint)
        return
    candidates: dict[str, list[str | None]] = {}
    for run in root.glob("version_*"):
        for ckpt in run.glob("checkpoints/last*.ckpt"):
            candidates.setdefault(run.name, []).append(recorded_fingerprint(ckpt))
    ours = sorted(name for name, found in candidates.items() if fingerprint in found)
    if not ours and len(candidates) == 1 and set(next(iter(candidates.values()))) == {None}:
        ours = list(candidates)  # one run, from before fingerprints
    if len(ours) > 1:
        raise ValueError(
            f"Expected one run of this configuration to resume under {str(root)!r}, but got several "
            f"({', '.join(ours)}); name the one to resume with `--trainer.logger.init_args.version`."
        )
    if ours:
        _check_one_run(root / ours[0], fingerprint)
        init_args["version"] = ours[0]


def _check_one_run(folder: Path, fingerprint: str) -> None:
    """Refuse a version folder whose ``last*.ckpt`` include another run's (Lightning resumes the newest)."""
    for ckpt in sorted(folder.glob("checkpoints/last*.ckpt")):
        found = recorded_fingerprint(ckpt)
        if found is not None and found != fingerprint:
            raise ValueError(
                f"Expected only checkpoints of this run's configuration (fingerprint {fingerprint}) to resume in "
                f"{str(folder)!r}, but got {str(ckpt)!r} of another run (fingerprint {found})."
            )


def _logger_args(logger: Any) -> Any | None:
    class_path = (logger.get("class_path") if hasattr(logger, "get") else None) or ""
    if not class_path.endswith(("TensorBoardLogger", "CSVLogger")):
        return None
    return logger["init_args"]


def _logger_root(init_args: Any) -> Path:
    return Path(init_args.get("save_dir") or "lightning_logs") / (init_args.get("name") or "")


def _version_name(version: Any) -> str:
    return version if isinstance(version, str) else f"version_{version}"
