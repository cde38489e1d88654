import math

import pytest
import torch

from datamodules import SinusoidDataModule, sample_sinusoid_tasks


def test_tasks_follow_the_maml_paper_distribution():
    x, y = sample_sinusoid_tasks(2000, 50, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (2000, 50, 1)
    assert x.min() >= -5 and x.max() <= 5
    # Recover amplitude and phase of each task by least squares on [sin x, cos x]: y = A sin(x - phi).
    basis = torch.cat([torch.sin(x), -torch.cos(x)], dim=-1).double()
    coef = torch.linalg.lstsq(basis, y.double()).solution[..., 0]  # (B, 2) = (A cos phi, A sin phi)
    amplitude, phase = coef.norm(dim=-1), torch.atan2(coef[:, 1], coef[:, 0])
    assert amplitude.min() >= 0.1 - 1e-6 and amplitude.max() <= 5.0 + 1e-6
    assert phase.min() >= -1e-6 and phase.max() <= math.pi + 1e-6
    assert amplitude.mean().item() == pytest.approx(2.55, abs=0.1)  # U[0.1, 5.0]
    assert phase.mean().item() == pytest.approx(math.pi / 2, abs=0.1)  # U[0, pi]


def test_batches_have_the_requested_shapes():
    data = SinusoidDataModule(shots=10, queries=7, eval_shots=5, eval_queries=20, meta_batch_size=4, val_tasks=6)
    data.setup("fit")
    train = next(iter(data.train_dataloader()))
    assert train.support_x.shape == (4, 10, 1) and train.query_y.shape == (4, 7, 1)
    val = next(iter(data.val_dataloader()))
    assert val.support_x.shape == (4, 5, 1) and val.query_x.shape == (4, 20, 1)
    assert sum(batch.num_tasks for batch in data.val_dataloader()) == 6


def test_evaluation_tasks_are_fixed_whatever_the_training_seed():
    first, second = SinusoidDataModule(seed=0), SinusoidDataModule(seed=7)
    for stage in ("val", "test"):
        for a, b in zip(first.fixed_tasks(stage), second.fixed_tasks(stage)):
            assert torch.equal(a, b)
    assert not torch.equal(first.fixed_tasks("val").support_x[:5], first.fixed_tasks("test").support_x[:5])


def test_training_tasks_are_seeded_and_fresh_every_step():
    def first_batches(seed):
        data = SinusoidDataModule(seed=seed, meta_batch_size=2)
        data.setup("fit")
        loader = iter(data.train_dataloader())
        return next(loader).support_y, next(loader).support_y

    a1, a2 = first_batches(0)
    b1, _ = first_batches(0)
    c1, _ = first_batches(1)
    assert torch.equal(a1, b1)
    assert not torch.equal(a1, a2)
    assert not torch.equal(a1, c1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shots": -1}, ValueError, r"Expected `shots` >= 1, but got -1\."),
        ({"eval_queries": 0}, ValueError, r"Expected `eval_queries` >= 1, but got 0\."),
        ({"meta_batch_size": 2.5}, TypeError, r"Expected `meta_batch_size` to be int, but got float 2.5\."),
        ({"amplitude": (5.0, 0.1)}, ValueError, r"Expected `amplitude` low <= high, but got \(5.0, 0.1\)\."),
        ({"x_range": 3}, TypeError, r"Expected `x_range` to be a \(low, high\) pair, but got 3\."),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        SinusoidDataModule(**kwargs)
