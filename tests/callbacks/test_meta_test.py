"""callbacks.MetaTestEvaluation: the report of Lightning's test loop, for every learner."""

import json
import math

import pytest
from lightning.pytorch import Trainer

from callbacks import MetaTestEvaluation
from datamodules import SinusoidDataModule
from tests.helpers.learners import CASES, BlobsDataModule, build


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_callback_reports_every_step_with_ci_for_every_algorithm(name, kind, tmp_path):
    learner = build(name, kind)
    data = (
        SinusoidDataModule(test_tasks=7, meta_batch_size=3, eval_queries=5)
        if kind == "regression"
        else BlobsDataModule(batches=2, meta_batch_size=3)
    )
    callback = MetaTestEvaluation(max_steps=3)
    trainer = Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(learner, data, verbose=False)
    results = json.loads((tmp_path / "meta_test.json").read_text())
    assert results == callback.results
    assert results["metric"] == ("mse" if kind == "regression" else "accuracy")
    assert results["num_tasks"] == (7 if kind == "regression" else 6)
    assert results["ways"] == (None if kind == "regression" else 3)
    assert results["shots"] == (5 if kind == "regression" else 2)
    assert results["checkpoint"] is None  # the weights in memory: no --ckpt_path
    assert results["tasks"] is None  # a datamodule that does not say what its tasks are drawn from
    assert list(results["steps"]) == ["0", "1", "2", "3"]
    assert all(0 <= v["ci95"] and math.isfinite(v["mean"]) for v in results["steps"].values())


def test_callback_rejects_bad_max_steps():
    with pytest.raises(ValueError, match=r"Expected `max_steps` >= 0, but got -2\."):
        MetaTestEvaluation(max_steps=-2)
