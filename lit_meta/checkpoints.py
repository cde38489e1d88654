"""The one way lit-meta reads a checkpoint: ``lit-meta fit``/``test`` (``--ckpt_path``), ``lit-meta adapt``,
a distillation teacher and ``lit-meta federate --resume`` all come through here.

A checkpoint from elsewhere is data. It is read with ``torch.load(weights_only=True)``, so no pickled
object in it runs; and before Lightning or jsonargparse may import anything it names, every class
path in its hyper-parameters is checked against an allow-list:

- lit-meta's learners and backbones (any ``torch.nn.Module`` of ``lit_meta``) and datamodules
  (``LightningDataModule`` subclasses of ``lit_meta`` and ``datamodules``);
- ``torch.optim`` optimizers and learning-rate schedulers, ``torch.nn`` modules;
- Lightning's own instantiator, ``lightning.pytorch.cli.instantiate_module``.

Anything else (``os.system``, a user's ``my_learners.RidgeHead``) is refused in one line, before its
module is imported, unless the user trusts it: by naming its module (or a package above it) in
``LIT_META_TRUSTED_MODULES`` (comma-separated) or ``--trust``, or, for ``lit-meta fit``/``test``,
by naming the same class in their own config.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lit_meta._imports import import_subclass

#: The environment variable naming the modules (comma-separated prefixes) whose classes a checkpoint may name.
TRUSTED_MODULES_ENV = "LIT_META_TRUSTED_MODULES"

#: Lightning's instantiator, the only one a checkpoint may name.
INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"

_SCHEDULERS = (LRScheduler, ReduceLROnPlateau)
#: Module prefix -> the classes a checkpoint may name from it must be subclasses of one of these.
ALLOWED: dict[str, tuple[type, ...]] = {
    "lit_meta": (nn.Module, LightningDataModule, Optimizer, *_SCHEDULERS),
    "datamodules": (LightningDataModule,),
    "torch.optim": (Optimizer, *_SCHEDULERS),
    "torch.nn": (nn.Module,),
    # LightningCLI's ReduceLROnPlateau (it knows the metric to monitor)
    "lightning.pytorch.cli": _SCHEDULERS,
}

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_CLASS_KEYS = ("class_path", "_class_path")


class UntrustedCheckpointError(ValueError):
    """A checkpoint names a class outside the allow-list; nothing of it was imported."""


def trusted_modules(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The module prefixes the user trusts: ``extra`` (``--trust``) and :data:`TRUSTED_MODULES_ENV`."""
    given = [*extra, *os.environ.get(TRUSTED_MODULES_ENV, "").split(",")]
    return tuple(dict.fromkeys(p.strip() for p in given if p.strip()))


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def resolve_class(class_path: Any, trusted: Iterable[str] = (), where: str = "the checkpoint") -> type:
    """The class named by a checkpoint, imported only if the allow-list or the user trusts it.

    Args:
        class_path: ``"package.module.Name"``.
        trusted: module prefixes, or exact class paths, the user trusts (see :func:`trusted_modules`).
        where: how the error names the checkpoint.

    Raises:
        UntrustedCheckpointError: ``class_path`` is outside the allow-list and not trusted (not
            imported), or resolves to something that is not an allowed class.
    """
    trusted = tuple(trusted)
    if not isinstance(class_path, str) or not _DOTTED.fullmatch(class_path):
        raise UntrustedCheckpointError(
            f"Expected a class path 'package.module.Name' in {where}, but got {class_path!r}."
        )
    module_name, name = class_path.rsplit(".", 1)
    bases = next((b for prefix, b in ALLOWED.items() if _within(module_name, prefix)), None)
    user = class_path in trusted or any(_within(module_name, prefix) for prefix in trusted)
    if bases is None and not user:
        raise UntrustedCheckpointError(
            f"Expected classes of lit-meta, torch.optim or torch.nn in {where}, but got {class_path!r}, which was "
            f"not imported (trust your own modules with {TRUSTED_MODULES_ENV}=PREFIX or --trust PREFIX)."
        )
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except ImportError as err:
        raise UntrustedCheckpointError(
            f"Expected an importable class in {where}, but got {class_path!r} ({err})."
        ) from None
    allowed = isinstance(found, type) and (user or issubclass(found, bases))
    if not allowed:
        what = type(found).__name__ if not isinstance(found, type) else "a class of another kind"
        raise UntrustedCheckpointError(
            f"Expected {class_path!r} in {where} to be a learner, backbone, datamodule, optimizer or scheduler "
            f"class, but got {what}."
        )
    return found


def config_class_paths(config: Any) -> list[str]:
    """Every ``class_path`` (or ``_class_path``) a user's own config names, at any depth: classes the
    user chose, which a checkpoint may name too."""
    if isinstance(config, dict):
        found = [v for k, v in config.items() if k in _CLASS_KEYS and isinstance(v, str)]
        return found + [p for v in config.values() for p in config_class_paths(v)]
    if isinstance(config, (list, tuple)):
        return [p for v in config for p in config_class_paths(v)]
    return []


def class_paths(hparams: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(key, value)`` of ``hparams`` (at any depth) that names something to import: ``class_path``,
    ``_class_path``, ``_instantiator``, and any string that is a dotted path into an installed module
    (jsonargparse imports such a string where a callable or a class is expected)."""
    if isinstance(hparams, dict):
        for key, value in hparams.items():
            if key in _CLASS_KEYS or key == "_instantiator":
                yield key, value
            else:
                yield from class_paths(value)
    elif isinstance(hparams, (list, tuple)):
        for value in hparams:
            yield from class_paths(value)
    elif isinstance(hparams, str) and _DOTTED.fullmatch(hparams) and _is_module(hparams.split(".", 1)[0]):
        yield "value", hparams


def _is_module(name: str) -> bool:
    """Whether a top-level module ``name`` is installed (found without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_classes(checkpoint: dict[str, Any], trusted: Iterable[str] = (), where: str = "the checkpoint") -> None:
    """Refuse a checkpoint whose learner's hyper-parameters name anything outside the allow-list (see
    :func:`resolve_class`). The datamodule's are never read: a checkpoint does not choose the data.

    Raises:
        UntrustedCheckpointError: the first such name (nothing of it imported).
    """
    trusted = tuple(trusted)
    for key, value in class_paths(checkpoint.get("hyper_parameters", {})):
        if key == "_instantiator":
            if value != INSTANTIATOR:
                raise UntrustedCheckpointError(
                    f"Expected the instantiator {INSTANTIATOR!r} in {where}, but got {value!r}, which was not imported."
                )
        else:
            resolve_class(value, trusted, where)


def check_same_learner(expected: str | type, written: str | None) -> None:
    """Refuse to resume a run of learner ``expected`` from a checkpoint written by learner ``written``:
    the one check, and the one message, of ``lit-meta fit --ckpt_path``, ``Trainer.fit(ckpt_path=...)``
    and ``lit-meta federate --resume``.

    Args:
        expected: the run's learner, a class or its class path (``model.class_path``).
        written: the class path the checkpoint records (``None``: not recorded, not checked). Call
            this after :func:`read_checkpoint` has allowed the checkpoint's classes: both are imported
            to compare them (``lit_meta.algorithms.MAML`` is ``lit_meta.algorithms.maml.MAML``).

    Raises:
        ValueError: another learner wrote the checkpoint.
    """
    if written is None:
        return
    name = expected if isinstance(expected, str) else f"{expected.__module__}.{expected.__qualname__}"
    if name == written:
        return
    expected_class = expected if isinstance(expected, type) else import_subclass(expected, object)
    if expected_class is None or import_subclass(written, object) is not expected_class:
        raise ValueError(f"Expected a checkpoint of {name} to resume this run, but got one of {written}.")


def read_checkpoint(path: str | os.PathLike, what: str = "a checkpoint", trusted: Iterable[str] = ()) -> dict[str, Any]:
    """A checkpoint's content: plain data and tensors only (``weights_only=True``), its class paths checked.

    Args:
        path: the ``.ckpt`` file.
        what: how errors name the file, e.g. "`teacher_ckpt`".
        trusted: module prefixes (or class paths) the user trusts besides the allow-list.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty, truncated or foreign file, one that holds pickled objects, or one that
            names a class outside the allow-list (:class:`UntrustedCheckpointError`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Expected {what} file at {path!r}, but got no such file.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"Expected {what} in {path!r}, but got an empty file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for files that are not checkpoints
        reason = (
            str(err).strip().splitlines()[0][:160]
            if "Weights only load failed" not in str(err)
            else ("it holds pickled objects, which lit-meta never loads")
        )
        raise ValueError(
            f"Expected {what} of plain tensors and data in {path!r}, but could not read it "
            f"({type(err).__name__}: {reason})."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Expected {what} (a dictionary) in {path!r}, but got a {type(checkpoint).__name__}.")
    check_classes(checkpoint, trusted, f"{what} {path!r}")
    return checkpoint


#: The only globals a data pickle from elsewhere may name: numpy arrays and scalars (plain containers,
#: strings and numbers need none).
PLAIN_PICKLE_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in PLAIN_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a data file never needs; not loaded")
        return super().find_class(module, name)


def load_plain_pickle(file: io.BufferedIOBase) -> object:
    """A data set's pickle from elsewhere (tiered-ImageNet's labels), read as data: containers, strings,
    numbers and numpy arrays only; any other class or function it names is refused before it is
    imported or called, as :func:`read_checkpoint` refuses a checkpoint's.

    Raises:
        pickle.UnpicklingError: the file names anything else.
    """
    return _PlainUnpickler(file).load()
