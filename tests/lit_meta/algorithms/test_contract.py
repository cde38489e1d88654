"""The MetaLearner contract, for every algorithm: train, evaluate, test, predict, checkpoint."""

import inspect

import pytest
import torch
from lightning.pytorch import Trainer

import lit_meta.algorithms
from datamodules import SinusoidDataModule
from tests.helpers.learners import CASES, LEARNERS, BlobsDataModule, build
from tests.helpers.trainers import quiet_trainer


def test_every_algorithm_is_in_the_contract_test():
    exported = {getattr(lit_meta.algorithms, name) for name in lit_meta.algorithms.__all__}
    exported = {cls for cls in exported if not inspect.isabstract(cls)}
    covered = {type(build(name, "classification")) for name in LEARNERS}
    assert exported <= covered, f"add {exported - covered} to tests/helpers/learners.py LEARNERS"


def datamodule(kind: str):
    if kind == "regression":
        return SinusoidDataModule(
            meta_batch_size=2, train_batches_per_epoch=3, val_tasks=4, test_tasks=4, eval_queries=5
        )
    return BlobsDataModule()


def trainer(tmp_path) -> Trainer:
    return quiet_trainer(
        tmp_path,
        max_steps=3,
        limit_val_batches=2,
    )


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_contract(name, kind, tmp_path):
    learner, data = build(name, kind), datamodule(kind)
    before = [p.detach().clone() for p in learner.parameters()]
    fit = trainer(tmp_path)
    fit.fit(learner, data)

    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters())), "meta-training changed nothing"
    logged = set(fit.callback_metrics)
    expected = {"train/loss", "val/loss"} | ({"train/acc", "val/acc"} if kind == "classification" else set())
    assert expected <= logged
    assert all(torch.isfinite(fit.callback_metrics[k]) for k in expected)

    (results,) = fit.test(learner, data, verbose=False)
    assert set(results) == ({"test/loss", "test/acc"} if kind == "classification" else {"test/loss"})

    path = tmp_path / "learner.ckpt"
    fit.save_checkpoint(path)
    # Built in Python, the checkpoint holds the backbone object itself: a trusted pickle.
    reloaded = type(learner).load_from_checkpoint(path, weights_only=False)
    data.setup("test")
    task = next(iter(data.test_dataloader()))
    torch.testing.assert_close(reloaded.evaluate_episode(task), learner.evaluate_episode(task), rtol=0, atol=0)

    (predictions, *_) = fit.predict(learner, data)
    assert predictions.shape[:2] == task.query_y.shape[:2]


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_every_step_curve_starts_unadapted_and_ends_adapted(name):
    learner = build(name, "classification")
    task = BlobsDataModule().tasks[0]
    curve = learner.evaluate_episode(task, steps=2, every_step=True)
    assert curve.shape == (3, *task.query_y.shape, 3)
    torch.testing.assert_close(curve[-1], learner.evaluate_episode(task, steps=2))
    torch.testing.assert_close(curve[0], learner.evaluate_episode(task, steps=0))
