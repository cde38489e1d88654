"""Rapid fine-tuning: `learner.adapt` for every classifier, and the `lit-meta adapt` command."""

import csv
import json
import re

import pytest
import torch

from lit_meta.algorithms import PrototypicalNetworks
from lit_meta.cli import main
from lit_meta.models import CNN4
from tests.helpers.checkpoints import fit_checkpoint, task_folders
from tests.helpers.fabricate import image_folder, png_bytes
from tests.helpers.learners import CASES, WAYS, build
from tests.helpers.tasks import make_classification_task, make_regression_task

CLASSIFIERS = [name for name, kind in CASES if kind == "classification"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_adapt_predicts_like_the_evaluation_episode(name):
    learner = build(name, "classification")
    task = make_classification_task(num_tasks=1, ways=WAYS)
    adapted = learner.adapt(task.support_x[0], task.support_y[0])
    probabilities = adapted.predict_proba(task.query_x[0])
    assert probabilities.shape == (task.query_x.shape[1], WAYS)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(len(probabilities)))
    expected = learner.evaluate_episode(task)[0]
    torch.testing.assert_close(probabilities, expected.softmax(-1))
    assert torch.equal(adapted.predict(task.query_x[0]), expected.argmax(-1))


def test_adapt_refuses_bad_support_sets():
    learner = build("maml", "classification")
    x = torch.randn(4, 4)
    with pytest.raises(
        ValueError, match=r"Expected support labels 0 \.\. ways-1 with ways >= 2, each present, but got labels \[0\]\."
    ):
        learner.adapt(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"each present, but got labels \[0, 2\]\."):
        learner.adapt(x, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ValueError, match=r"Expected `support_y` to be 4 integer labels"):
        learner.adapt(x, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_adapt_refuses_more_classes_than_the_head_outputs():
    learner = build("maml", "classification")  # a head of WAYS = 3 outputs
    x = torch.randn(4, 4)
    with pytest.raises(
        ValueError, match=r"Expected the number of support classes <= 3 \(the backbone's `out_features`\), but got 4\."
    ):
        learner.adapt(x, torch.arange(4))


def test_adapt_regression_predicts_outputs_and_has_no_probabilities():
    learner = build("maml", "regression")
    task = make_regression_task(num_tasks=1)
    adapted = learner.adapt(task.support_x[0], task.support_y[0])
    torch.testing.assert_close(adapted.predict(task.query_x[0]), learner.evaluate_episode(task)[0])
    with pytest.raises(
        ValueError, match=r"Expected a classification learner for predict_proba, but got loss 'mse'; use predict\."
    ):
        adapted.predict_proba(task.query_x[0])


def test_adapt_refuses_images_with_the_wrong_channel_count():
    learner = PrototypicalNetworks(CNN4(in_channels=1, hidden=4, blocks=2, image_size=8))
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 1, H, W\) .* but got shape \(4, 3, 8, 8\)\."):
        learner.adapt(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Prototypical Networks checkpoint (2 steps)."""
    options = ("--data.ways=5", "--data.train_batches_per_epoch=2", "--trainer.max_steps=2")
    return fit_checkpoint(tmp_path_factory.mktemp("fit"), "protonet_5w1s", *options)


@pytest.fixture(scope="module")
def maml_checkpoint(tmp_path_factory):
    """A 5-way MAML checkpoint (1 step, no meta-test)."""
    options = ("--data.meta_batch_size=1", "--data.train_batches_per_epoch=1", "--trainer.max_steps=1")
    return fit_checkpoint(tmp_path_factory.mktemp("fit_maml"), "maml_5w1s", *options, "--test_after_fit=none")


def test_adapt_command_writes_predictions_and_prints_accuracy(checkpoint, tmp_path, capsys):
    support, query = task_folders(tmp_path)
    main(
        [
            "adapt",
            f"--ckpt_path={checkpoint}",
            f"--support={support}",
            f"--query={query}",
            f"--output={tmp_path / 'p.csv'}",
        ]
    )
    out = capsys.readouterr().out
    assert "Adapted to 3 classes from 3 support images (1 adaptation steps); predicted 12 queries." in out
    assert "Accuracy: " in out
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 12 and set(rows[0]) == {"file", "predicted", "probability", "true"}
    assert all(row["predicted"] in {"char0", "char1", "char2"} and 0 < float(row["probability"]) <= 1 for row in rows)


def test_adapt_command_on_unlabelled_queries_writes_json(checkpoint, tmp_path, capsys):
    support, _ = task_folders(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(5):
        (flat / f"q{i}.png").write_bytes(png_bytes(i))
    main(
        [
            "adapt",
            f"--ckpt_path={checkpoint}",
            f"--support={support}",
            f"--query={flat}",
            f"--output={tmp_path / 'p.json'}",
        ]
    )
    assert "Accuracy" not in capsys.readouterr().out
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [row["file"] for row in rows] == [f"q{i}.png" for i in range(5)] and "true" not in rows[0]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        ("not_a_checkpoint", r"Expected a checkpoint of plain tensors and data in .*, but could not read it"),
        ("one_class", r"Expected >= 2 class folders in the support folder .*, but got 1\."),
        ("empty_class", r"Expected >= 1 image in class 'char1' of .*, but got an empty folder\."),
        ("rgb_images", r"Expected 1-channel images \(what the model was trained on\), but got 3 channels in .*"),
    ],
)
def test_adapt_command_bad_input_exits_with_a_clear_error(make, match, checkpoint, tmp_path, capsys):
    support, query = task_folders(tmp_path)
    ckpt = checkpoint
    if make == "not_a_checkpoint":
        ckpt = tmp_path / "bad.ckpt"
        ckpt.write_bytes(b"not a checkpoint")
    elif make == "one_class":
        support = tmp_path / "one"
        image_folder(str(support), classes=1, images=2, mode="L")
    elif make == "empty_class":
        for file in (support / "char1").iterdir():
            file.unlink()
    else:
        support = tmp_path / "rgb"
        image_folder(str(support), classes=2, images=1, mode="RGB")
    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", f"--ckpt_path={ckpt}", f"--support={support}", f"--query={query}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lit-meta adapt: error: ")
    assert re.search(match, err)


def test_adapt_command_refuses_more_classes_than_the_head_outputs(maml_checkpoint, tmp_path, capsys):
    support, query = task_folders(tmp_path, classes=6)
    with pytest.raises(SystemExit) as exit_info:
        main(["adapt", f"--ckpt_path={maml_checkpoint}", f"--support={support}", f"--query={query}"])
    assert exit_info.value.code == 2
    expected = (
        "lit-meta adapt: error: Expected the number of support classes <= 5 (the backbone's `out_features`), "
        "but got 6.\n"
    )
    assert capsys.readouterr().err == expected


def test_a_checkpoint_of_something_else_is_refused(tmp_path, capsys):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "torch.nn.Linear"}}, path)
    support, query = task_folders(tmp_path)
    with pytest.raises(SystemExit):
        main(["adapt", f"--ckpt_path={path}", f"--support={support}", f"--query={query}"])
    assert "Expected a checkpoint of a lit-meta learner (a MetaLearner subclass)" in capsys.readouterr().err
