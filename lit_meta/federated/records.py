"""A learner's weights as a Flower ``ArrayRecord``, and the checks a reply passes before aggregation."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord


def learner_arrays(learner: torch.nn.Module) -> ArrayRecord:
    """The floating-point entries of ``learner.state_dict()`` (parameters and float buffers such as
    BatchNorm statistics). Integer buffers (``num_batches_tracked``) stay local: averaging a counter
    means nothing."""
    state = {name: value.detach().cpu() for name, value in learner.state_dict().items() if value.is_floating_point()}
    return ArrayRecord(state)


def cast_arrays(arrays: ArrayRecord, dtype: str) -> ArrayRecord:
    """``arrays`` as ``dtype`` (``"float16"`` halves the bytes on the wire; ``"float32"`` restores the
    precision the server aggregates in)."""
    return ArrayRecord({name: Array(array.numpy().astype(dtype)) for name, array in arrays.items()})


def arrays_dtype(arrays: ArrayRecord) -> str:
    """The dtype the weights travel in (that of the first entry)."""
    return str(next(iter(arrays.values())).numpy().dtype)


def personal_names(learner: torch.nn.Module, personal: Sequence[str]) -> list[str]:
    """The weight entries of ``learner`` that stay on each client (FedPer/FedRep-style partial
    federation): those matching any of the ``fnmatch`` patterns ``personal`` (``"*head*"`` for the head
    of MAML, Meta-SGD or Reptile, ``"maml.module.*"`` for ANIL's adapted head).

    Raises:
        ValueError: a pattern matches no entry, the patterns match every entry (nothing left to
            federate), or they leave out a weight the learner keeps on each client by definition (its
            ``personal_weights``: Ditto's personal model, FedRep's head).
    """
    names = list(learner_arrays(learner))
    for pattern in personal:
        if not fnmatch.filter(names, pattern):
            raise ValueError(
                f"Expected `personal` pattern {pattern!r} to match weights of {type(learner).__name__}, but it matches "
                f"none of {names[:3] + names[-3:]}."
            )
    chosen = [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in personal)]
    if len(chosen) == len(names):
        raise ValueError(f"Expected `personal` to leave weights to federate, but it matches all {len(names)} entries.")
    own = tuple(getattr(learner, "personal_weights", ()))
    averaged = [name for name in names if any(fnmatch.fnmatch(name, p) for p in own) and name not in chosen]
    if averaged:
        raise ValueError(
            f"Expected `personal` to keep {type(learner).__name__}'s own weights on each client "
            f"({', '.join(map(repr, own))}), but got {list(personal)}, which would average {averaged[:2]}."
        )
    return chosen


def without(arrays: ArrayRecord, names: Sequence[str]) -> ArrayRecord:
    """``arrays`` without the entries ``names`` (the shared part of a partially federated learner)."""
    return ArrayRecord({k: v for k, v in arrays.items() if k not in set(names)})


def only(arrays: ArrayRecord, names: Sequence[str]) -> ArrayRecord:
    """The entries ``names`` of ``arrays`` (the personal part)."""
    return ArrayRecord({k: v for k, v in arrays.items() if k in set(names)})


def load_arrays(learner: torch.nn.Module, arrays: ArrayRecord, absent: Sequence[str] = ()) -> None:
    """Load ``arrays`` (from :func:`learner_arrays` or an aggregate) into ``learner``, checked first;
    the entries named in ``absent`` (a partial federation's personal or shared part) may be missing
    from ``arrays`` and are then left as they are. (Checked against the learner's own tensors, not an
    ``ArrayRecord`` of them: serialising a large learner's weights takes milliseconds.)"""
    absent = set(absent)
    state = learner.state_dict()
    reference = {name: value for name, value in state.items() if value.is_floating_point() and name not in absent}
    received = arrays.to_torch_state_dict()
    check_arrays({name: value for name, value in received.items() if name not in absent}, reference)
    learner.load_state_dict({**state, **received})


def check_arrays(arrays: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """Refuse weights that must not enter an aggregate: other keys or shapes than ``reference``, a
    dtype that is not floating point, or a NaN or infinite value. ``arrays`` and ``reference`` are
    ``ArrayRecord`` s, or dicts of (CPU) tensors.

    Raises:
        ValueError: naming the first offending entry.
    """
    if set(arrays) != set(reference):
        missing, extra = sorted(set(reference) - set(arrays)), sorted(set(arrays) - set(reference))
        raise ValueError(
            f"Expected the learner's {len(reference)} weight entries, but got missing {missing[:3]}, extra {extra[:3]}."
        )
    for name, array in arrays.items():
        expected = tuple(reference[name].shape)
        if tuple(array.shape) != expected:
            raise ValueError(f"Expected weights `{name}` of shape {expected}, but got {tuple(array.shape)}.")
        values = array.numpy()
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"Expected floating-point weights `{name}`, but got dtype {values.dtype}.")
        if not np.isfinite(values).all():
            raise ValueError(f"Expected finite weights, but got NaN or infinite values in `{name}`.")
