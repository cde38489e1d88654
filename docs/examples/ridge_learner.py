"""A complete learner: meta-learned features, and a ridge-regression head fitted to each task in closed form.

The head is fitted to the support set in closed form (Bertinetto et al., "Meta-learning with differentiable
closed-form solvers", ICLR 2019), so the query loss is differentiable through the fit into the features:
the whole algorithm is one ``episode`` hook. ``docs/how-to/write-a-learner.md`` walks through it; the
test suite runs this file (``tests/test_docs.py``).
"""

# --8<-- [start:learner]
from __future__ import annotations

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from lit_meta import Task
from lit_meta.algorithms import MetaLearner
from lit_meta.algorithms.base import Loss


class RidgeHead(MetaLearner):
    """Meta-learn a body; adapt by fitting a ridge-regression head to each task's support embeddings.

    Args:
        backbone: a network with a ``features`` body (every model in ``lit_meta.models``).
        ridge: the head's L2 penalty.
        loss: ``"mse"`` (regression) or ``"cross_entropy"`` (the head regresses one-hot labels; its
            outputs are the logits).
        optimizer: the meta-optimizer of the body.
    """

    def __init__(
        self,
        backbone: nn.Module,
        ridge: float = 1.0,
        loss: Loss = "mse",
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        # The base checks `loss`, saves every argument as a hyper-parameter and builds the optimizer.
        super().__init__(loss=loss, eval_inner_steps=1, optimizer=optimizer)
        if ridge <= 0:
            raise ValueError(f"Expected `ridge` > 0, but got {ridge}.")
        self.features = backbone.features
        self.ridge = ridge

    def embed(self, x: Tensor) -> Tensor:
        """``(N, D)`` embeddings of ``(N, *input_shape)`` inputs (enables distillation's feature hint)."""
        return self.features(x).flatten(1)

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        steps = self.eval_inner_steps if steps is None else steps
        # One forward per task, support and query together (as the metric learners embed).
        embedded = torch.stack([self.embed(torch.cat([s, q])) for s, q in zip(task.support_x, task.query_x)])
        shots = task.support_x.shape[1]
        support, query = embedded[:, :shots], embedded[:, shots:]  # (B, Ns, D), (B, Nq, D)
        targets = task.support_y
        if self.is_classifier:
            targets = nn.functional.one_hot(targets, int(targets.max()) + 1).to(support.dtype)
        # W = S^T (S S^T + ridge I)^-1 Y: an Ns x Ns solve per task, differentiable.
        eye = torch.eye(shots, dtype=support.dtype, device=support.device)
        gram = support @ support.transpose(1, 2) + self.ridge * eye
        fitted = query @ (support.transpose(1, 2) @ torch.linalg.solve(gram, targets))  # (B, Nq, out)
        unseen = torch.zeros_like(fitted)  # "0 steps": before the support is seen (uniform logits)
        if every_step:
            return torch.stack([unseen] + [fitted] * steps)  # (steps + 1, B, Nq, out)
        return fitted if steps > 0 else unseen


# --8<-- [end:learner]

if __name__ == "__main__":
    # --8<-- [start:train]
    from lightning.pytorch import Trainer

    from datamodules import SinusoidDataModule, sample_sinusoid_tasks
    from lit_meta.models import MLP

    learner = RidgeHead(MLP(1, (40, 40), 1), ridge=0.1)
    data = SinusoidDataModule(meta_batch_size=25, train_batches_per_epoch=100, val_tasks=25, test_tasks=50)
    trainer = Trainer(max_steps=300, logger=False, enable_checkpointing=False)
    trainer.fit(learner, data)
    trainer.test(learner, data)  # test/loss: the query MSE over 50 fixed test tasks

    x, y = sample_sinusoid_tasks(num_tasks=1, num_points=110, generator=torch.Generator().manual_seed(7))
    adapted = learner.adapt(x[0, :10], y[0, :10])  # fit the head to 10 points
    print(f"query MSE: {(adapted.predict(x[0, 10:]) - y[0, 10:]).pow(2).mean():.3f}")
    # --8<-- [end:train]
