"""EpisodicDataModule: shapes, fixed evaluation tasks, seeded and rank-aware training tasks, resume, DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch
from lightning.pytorch import Callback

from datamodules import OmniglotDataModule
from lit_meta.algorithms import MAML
from lit_meta.models import CNN4
from tests.helpers import ROOT
from tests.helpers.fabricate import minimal_omniglot
from tests.helpers.trainers import quiet_trainer


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    return minimal_omniglot(str(tmp_path_factory.mktemp("omniglot")))


def omniglot(omniglot_dir, **kwargs):
    defaults = dict(
        data_dir=omniglot_dir,
        split="minimal",
        download=False,
        ways=4,
        shots=1,
        queries=3,
        meta_batch_size=3,
        val_tasks=5,
        test_tasks=7,
    )
    return OmniglotDataModule(**{**defaults, **kwargs})


def test_batches_are_meta_batches_with_separate_eval_shape(omniglot_dir):
    data = omniglot(omniglot_dir, ways=8, shots=2, queries=3, eval_ways=3, eval_shots=1, eval_queries=4)
    data.setup("fit")
    train = next(iter(data.train_dataloader()))
    assert train.support_x.shape == (3, 16, 1, 28, 28) and train.query_x.shape == (3, 24, 1, 28, 28)
    assert train.support_y[0].tolist() == [c for c in range(8) for _ in range(2)]
    val = next(iter(data.val_dataloader()))
    assert val.support_x.shape == (3, 3, 1, 28, 28) and val.query_y.shape == (3, 12)
    assert sum(b.num_tasks for b in data.val_dataloader()) == 5
    assert 0.0 <= train.support_x.min() and train.support_x.max() <= 1.0


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_tasks_are_the_same_in_every_run_and_worker_count(omniglot_dir, workers):
    reference = omniglot(omniglot_dir)
    reference.setup("test")
    expected = list(reference.test_dataloader())
    data = omniglot(omniglot_dir, num_workers=workers, seed=99)  # the training seed does not matter
    data.setup("test")
    got = list(data.test_dataloader())
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_training_tasks_are_seeded_fresh_and_differ_by_rank(omniglot_dir, monkeypatch):
    def first_two(seed, rank=0):
        data = omniglot(omniglot_dir, seed=seed)
        monkeypatch.setattr(data, "_rank_and_world", lambda: (rank, 2))
        data.setup("fit")
        loader = iter(data.train_dataloader())
        return next(loader).support_x, next(loader).support_x

    a1, a2 = first_two(0)
    b1, _ = first_two(0)
    assert torch.equal(a1, b1)
    assert not torch.equal(a1, a2)
    assert not torch.equal(a1, first_two(1)[0])
    assert not torch.equal(a1, first_two(0, rank=1)[0])


def test_eval_tasks_are_split_across_ranks_without_duplicates(omniglot_dir, monkeypatch):
    keys = []
    for rank in (0, 1):
        data = omniglot(omniglot_dir)
        monkeypatch.setattr(data, "_rank_and_world", lambda rank=rank: (rank, 2))
        keys.append(data.eval_task_keys("val"))
    assert len(keys[0]) == 3 and len(keys[1]) == 2
    assert sorted(keys[0] + keys[1]) == sorted(omniglot(omniglot_dir).eval_task_keys("val"))


class _Record(Callback):
    def __init__(self):
        self.tasks = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.tasks[trainer.global_step] = batch.support_x.clone()


def _fit(omniglot_dir, root, max_steps, ckpt_path=None):
    torch.manual_seed(0)
    record = _Record()
    trainer = quiet_trainer(
        root,
        max_steps=max_steps,
        limit_val_batches=0,
        callbacks=[record],
    )
    learner = MAML(CNN4(out_features=4, hidden=8), inner_lr=0.4, first_order=True)
    # A Python-built learner pickles its backbone and optimizer class into the checkpoint.
    trainer.fit(learner, omniglot(omniglot_dir, train_batches_per_epoch=4), ckpt_path=ckpt_path, weights_only=False)
    return trainer, record.tasks


def test_resumed_run_sees_the_tasks_of_an_uninterrupted_one(omniglot_dir, tmp_path):
    _, uninterrupted = _fit(omniglot_dir, tmp_path, max_steps=6)
    first, _ = _fit(omniglot_dir, tmp_path, max_steps=3)
    first.save_checkpoint(tmp_path / "mid.ckpt")
    _, resumed = _fit(omniglot_dir, tmp_path, max_steps=6, ckpt_path=tmp_path / "mid.ckpt")
    assert sorted(resumed) == [3, 4, 5]
    for step in resumed:
        assert torch.equal(resumed[step], uninterrupted[step]), f"step {step} differs"


def test_two_process_ddp_draws_different_tasks_and_evaluates_each_val_task_once(omniglot_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "ddp_episodes.py"), omniglot_dir, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["train"][0] != ranks[1]["train"][0]  # first step: different tasks on each rank
    data = omniglot(omniglot_dir, ways=3, queries=2, meta_batch_size=2, val_tasks=7)
    data.setup("validate")
    expected = sorted(
        row
        for batch in data.val_dataloader()
        for row in torch.stack([batch.support_x.flatten(1).sum(1), batch.query_x.flatten(1).sum(1)], 1).tolist()
    )
    evaluated = sorted(ranks[0]["val"] + ranks[1]["val"])  # one validation (after step 2), no sanity check
    assert len(expected) == 7
    torch.testing.assert_close(torch.tensor(evaluated), torch.tensor(expected))
    assert ranks[0]["metrics"]["val/acc"] == pytest.approx(ranks[1]["metrics"]["val/acc"])  # reduced across ranks
    meta_test = json.loads((tmp_path / "meta_test.json").read_text())
    assert meta_test["num_tasks"] == 5  # 3 on rank 0 + 2 on rank 1, gathered


def reference_meta_batch(data, split, keys, global_labels=False):
    """The tasks of ``keys`` without lit-meta's sampling code: learn2learn's transforms over the split's
    samples, Python's ``random`` seeded from each key; each class's first ``shots`` samples support, the next
    ``queries`` query; the tasks stacked."""
    import random

    import learn2learn as l2l

    from lit_meta.seeding import key_seed

    dataset, labels, _ = data.split_data(split)
    ways, shots, queries = data.task_shape(split)
    members = {}
    for index, label in enumerate(labels):
        members.setdefault(int(label), []).append(index)
    meta = l2l.data.MetaDataset(dataset, labels_to_indices=members)
    transforms = [
        l2l.data.transforms.NWays(meta, n=ways),
        l2l.data.transforms.KShots(meta, k=shots + queries),
        l2l.data.transforms.LoadData(meta),
    ]
    if not global_labels:
        transforms += [l2l.data.transforms.RemapLabels(meta), l2l.data.transforms.ConsecutiveLabels(meta)]
    taskset = l2l.data.Taskset(meta, task_transforms=transforms, num_tasks=-1)
    parts = [[], [], [], []]
    for key in keys:
        random.seed(key_seed(key))
        x, y = taskset[0]
        y = torch.as_tensor(y)
        support, query = [], []
        for c in sorted(set(y.tolist())):
            where = (y == c).nonzero()[:, 0].tolist()
            support, query = support + where[:shots], query + where[shots : shots + queries]
        for part, values in zip(parts, (x[support], y[support], x[query], y[query])):
            part.append(values)
    return [torch.stack(part) for part in parts]


@pytest.mark.parametrize("global_labels", [False, True])
def test_meta_batches_are_byte_identical_to_a_reference_draw(omniglot_dir, global_labels):
    """Same keys, same tasks: a change to how tasks are split or batched must not change which tasks are drawn."""
    data = omniglot(omniglot_dir, ways=3, shots=2, queries=2, eval_queries=3, global_labels=global_labels)
    data.setup("fit")
    data.setup("test")
    loaders = {"train": data.train_dataloader(), "test": data.test_dataloader()}
    batches = {"train": data._train_batches()[:2], "test": data._eval_batches("test")[:2]}
    for split, loader in loaders.items():
        for batch, keys in zip(loader, batches[split]):
            expected = reference_meta_batch(data, split, keys, global_labels and split == "train")
            for got, want in zip(batch, expected):
                assert got.dtype == want.dtype and got.shape == want.shape
                assert got.numpy().tobytes() == want.numpy().tobytes()
