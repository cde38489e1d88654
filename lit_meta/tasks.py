"""The episode container and the one support/query split used everywhere in lit-meta."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lit_meta.validation import check_positive_int


class Task(NamedTuple):
    """A meta-batch of few-shot tasks (episodes).

    Every tensor has a leading task dimension ``B``; ``Ns`` and ``Nq`` are the support and query
    sizes (``ways * shots`` and ``ways * queries`` for classification).

    Attributes:
        support_x: ``(B, Ns, *input_shape)`` support inputs.
        support_y: ``(B, Ns)`` class indices in ``[0, ways)``, or ``(B, Ns, *target_shape)`` targets.
        query_x: ``(B, Nq, *input_shape)`` query inputs.
        query_y: ``(B, Nq)`` or ``(B, Nq, *target_shape)``, like ``support_y``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]


def split_support_query(x: Tensor, y: Tensor, shots: int, queries: int, ways: int | None = None) -> Task:
    """Split the samples of each task into a support set and a query set.

    Classification (``ways`` given): samples are grouped by label with a stable sort, so the original
    order decides which samples of a class are support; each class gives its first ``shots`` samples
    to the support set and its next ``queries`` to the query set. Both sets come out ordered by
    class: ``support_y = [0]*shots + [1]*shots + ...``.

    Regression (``ways=None``): the first ``shots`` samples of a task are support, the next
    ``queries`` query.

    Args:
        x: ``(B, N, *input_shape)`` inputs of ``B`` tasks (use ``x[None]`` for one task).
        y: ``(B, N)`` labels in ``[0, ways)``, or ``(B, N, *target_shape)`` regression targets.
        shots: support samples per class (per task for regression).
        queries: query samples per class (per task for regression).
        ways: classes per task; ``None`` for regression.

    Returns:
        A :class:`Task` with support ``(B, ways*shots, ...)`` and query ``(B, ways*queries, ...)``;
        like regression's, a 1-way task's inputs may be views of ``x``.

    Raises:
        ValueError: if the shapes disagree, or a task does not hold exactly ``shots + queries``
            samples of each of its ``ways`` classes.
    """
    check_positive_int("shots", shots)
    check_positive_int("queries", queries)
    if x.dim() < 2 or y.dim() < 2 or x.shape[:2] != y.shape[:2]:
        raise ValueError(
            f"Expected `x` (B, N, ...) and `y` (B, N, ...) with the same B and N, "
            f"but got shapes {tuple(x.shape)} and {tuple(y.shape)}."
        )
    per_group = shots + queries
    if ways is None:
        if x.shape[1] < per_group:
            raise ValueError(f"Expected >= {per_group} samples per task (`shots` + `queries`), but got {x.shape[1]}.")
        return Task(x[:, :shots], y[:, :shots], x[:, shots:per_group], y[:, shots:per_group])

    check_positive_int("ways", ways)
    if y.dim() != 2 or y.is_floating_point():
        raise ValueError(
            f"Expected integer labels of shape (B, N) for classification, but got {y.dtype} {tuple(y.shape)}."
        )
    batch, n = y.shape
    # A stable sort groups the samples by class: a valid task's labels sort to [0] * per_group + [1] * per_group ...
    sorted_y, order = torch.sort(y, dim=1, stable=True)
    expected = torch.arange(ways, dtype=y.dtype, device=y.device).repeat_interleave(per_group)
    if n != ways * per_group or not torch.equal(sorted_y, expected.expand(batch, n)):
        raise ValueError(
            f"Expected every task to hold {per_group} samples (`shots` + `queries`) of each of its "
            f"{ways} classes labelled 0..{ways - 1}, but got label counts {_describe(y, ways)}."
        )
    if not torch.equal(sorted_y, y):  # a gather only where needed: the datamodules' tasks come grouped already
        x = x[torch.arange(batch, device=x.device)[:, None], order]
    # Class c now occupies positions [c * per_group, (c + 1) * per_group).
    xs = x.reshape(batch, ways, per_group, *x.shape[2:])
    ys = sorted_y.reshape(batch, ways, per_group)
    return Task(
        xs[:, :, :shots].reshape(batch, ways * shots, *x.shape[2:]),
        ys[:, :, :shots].reshape(batch, ways * shots),
        xs[:, :, shots:].reshape(batch, ways * queries, *x.shape[2:]),
        ys[:, :, shots:].reshape(batch, ways * queries),
    )


def _describe(y: Tensor, ways: int) -> str:
    """The label counts of each task (the first 4), for the error message."""
    if y.min() < 0:
        return f"negative labels (min {int(y.min())})"
    counts = torch.stack([torch.bincount(row, minlength=ways) for row in y])
    return str(counts.tolist() if counts.shape[0] <= 4 else counts[:4].tolist() + ["..."])
