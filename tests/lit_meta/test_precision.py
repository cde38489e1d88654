"""Mixed precision on CPU: every algorithm fits, validates and tests under ``bf16-mixed`` without NaN."""

import pytest
import torch
from lightning.pytorch import Trainer

from datamodules import SinusoidDataModule
from tests.helpers.learners import CASES, BlobsDataModule, build
from tests.helpers.trainers import quiet_trainer


def datamodule(kind: str):
    # Two training batches with max_steps=2: the epoch ends, so validation runs after the last step.
    if kind == "regression":
        return SinusoidDataModule(
            meta_batch_size=2, train_batches_per_epoch=2, val_tasks=2, test_tasks=2, eval_queries=5
        )
    return BlobsDataModule(batches=2)


def trainer(tmp_path, precision: str) -> Trainer:
    return quiet_trainer(
        tmp_path,
        precision=precision,
        accelerator="cpu",
        devices=1,
        max_steps=2,
        num_sanity_val_steps=0,
    )


def assert_fits_and_evaluates(learner, data, fit: Trainer, kind: str) -> None:
    before = [p.detach().clone() for p in learner.parameters()]
    dtypes = set()  # what the linear layers computed in: bfloat16 shows autocast was on
    record = lambda module, args, output: dtypes.add(output.dtype) if isinstance(module, torch.nn.Linear) else None  # noqa: E731
    hook = torch.nn.modules.module.register_module_forward_hook(record)  # global: leaves the learner picklable
    try:
        fit.fit(learner, data)
    finally:
        hook.remove()
    assert torch.bfloat16 in dtypes, f"no layer ran in bfloat16 (saw {dtypes})"
    metrics = dict(fit.callback_metrics)
    expected = {"train/loss", "val/loss"} | ({"train/acc", "val/acc"} if kind == "classification" else set())
    assert expected <= set(metrics)
    (results,) = fit.test(learner, data, verbose=False)
    assert set(results) == ({"test/loss", "test/acc"} if kind == "classification" else {"test/loss"})
    metrics.update(results)
    not_finite = {k: v for k, v in metrics.items() if not torch.isfinite(torch.as_tensor(v)).all()}
    assert not not_finite, f"non-finite metrics: {not_finite}"
    for name, p in learner.named_parameters():
        assert p.dtype == torch.float32, f"{name} is {p.dtype}: mixed precision keeps float32 weights"
        assert torch.isfinite(p).all(), f"{name} is not finite"
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.parameters())), "meta-training changed nothing"


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_bf16_mixed_fits_and_evaluates_without_nan(name, kind, tmp_path):
    fit = trainer(tmp_path, "bf16-mixed")
    assert fit.precision == "bf16-mixed"
    assert_fits_and_evaluates(build(name, kind), datamodule(kind), fit, kind)


def test_fp16_mixed_on_cpu_falls_back_to_bf16_mixed(tmp_path):
    # Lightning has no fp16 autocast on CPU: it warns and uses bf16-mixed, which the test above covers.
    with pytest.warns(UserWarning, match=r"AMP with fp16 is not supported on CPU. Using `precision='bf16-mixed'`"):
        fit = trainer(tmp_path, "16-mixed")
    assert fit.precision == "bf16-mixed"
    assert_fits_and_evaluates(build("maml", "classification"), datamodule("classification"), fit, "classification")
