"""Meta-train MAML on sinusoid regression for a few hundred steps, then adapt it to a new sinusoid."""

import torch
from lightning.pytorch import Trainer

from datamodules import SinusoidDataModule, sample_sinusoid_tasks
from lit_meta.algorithms import MAML
from lit_meta.models import MLP

learner = MAML(MLP(1, (40, 40), 1), inner_lr=0.01, loss="mse", inner_loop="batched")
data = SinusoidDataModule(meta_batch_size=25, train_batches_per_epoch=100, val_tasks=25)
Trainer(max_steps=300, logger=False, enable_checkpointing=False).fit(learner, data)

# A new task: 10 labelled points to adapt on, 100 to predict.
x, y = sample_sinusoid_tasks(num_tasks=1, num_points=110, generator=torch.Generator().manual_seed(7))
support_x, support_y, query_x, query_y = x[0, :10], y[0, :10], x[0, 10:], y[0, 10:]
for steps in (0, 10):
    adapted = learner.adapt(support_x, support_y, steps=steps)
    mse = (adapted.predict(query_x) - query_y).pow(2).mean()
    print(f"query MSE after {steps:2d} steps: {mse:.3f}")
