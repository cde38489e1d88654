"""Random tasks of known shapes, for tests without a datamodule."""

import torch

from lit_meta.tasks import Task


def make_regression_task(num_tasks: int = 3, shots: int = 5, queries: int = 4) -> Task:
    """Random linear-ish regression tasks with inputs (B, N, 1)."""
    x = torch.randn(num_tasks, shots + queries, 1)
    y = 2.0 * x + torch.randn(num_tasks, 1, 1)
    return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def make_classification_task(
    num_tasks: int = 2, ways: int = 3, shots: int = 2, queries: int = 3, features: int = 4
) -> Task:
    def part(n: int):
        y = torch.arange(ways).repeat_interleave(n).expand(num_tasks, -1)
        x = torch.randn(num_tasks, ways * n, features) + y[..., None].float()
        return x, y

    sx, sy = part(shots)
    qx, qy = part(queries)
    return Task(sx, sy, qx, qy)
