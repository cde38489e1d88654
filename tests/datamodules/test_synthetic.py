"""Synthetic(alpha, beta) (Li et al., 2020) against its published definition, its federation built lazily,
and a ``lit-meta federate`` run on it end to end."""

from __future__ import annotations

import hashlib
import json
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import datamodules.synthetic as synthetic
from datamodules.federated import SyntheticFederation
from datamodules.synthetic import (
    device_model,
    device_size,
    device_sizes,
    synthetic_device,
)
from lit_meta.algorithms import PrototypicalNetworks
from lit_meta.models import MLP
from tests.helpers import ROOT

CONFIGS = ROOT / "configs" / "federated" / "synthetic"


def reference_draws(k: int, alpha: float, beta: float, seed: int = 0, dim: int = 60, classes: int = 10):
    """Device ``k``'s prior draws, written out from the documented order of its stream (not through the
    module's own helpers): n, u, B, v, W, b."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, k]))
    n = int(rng.lognormal(4, 2)) + 50
    u, shift = rng.normal(0, alpha), rng.normal(0, beta)
    v = rng.normal(shift, 1, dim)
    return n, u, shift, v, rng.normal(u, 1, (dim, classes)), rng.normal(u, 1, classes)


# ---- the generator against the definition --------------------------------------------------------------


def test_a_device_holds_n_k_samples_of_60_features_labelled_0_to_9():
    for k in (0, 1, 17):
        x, y = synthetic_device(k, alpha=0.5, beta=0.5)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (device_size(k), 60) and y.shape == (device_size(k),)
        assert 0 <= y.min() and y.max() < 10
    x, y = synthetic_device(3, dim=7, classes=4)
    assert x.shape[1] == 7 and y.max() < 4


def test_sample_counts_are_floor_of_lognormal_4_2_plus_50():
    extra = device_sizes(4000) - 50  # floor(L), L ~ lognormal(4, 2)
    assert extra.min() >= 0 and np.array_equal(extra + 50, [device_size(k) for k in range(4000)])
    # P(floor(L) < j) = P(L < j) for an integer j: the empirical CDF against the exact one (SE <= 0.008).
    law = statistics.NormalDist(4, 2)
    for j in (5, 20, 55, 150, 400, 1100, 5000):
        assert abs(np.mean(extra < j) - law.cdf(np.log(j))) < 0.03, j
    # ln(floor(L) + 0.5) has mean 4.0025 and std 1.992 exactly (a sum over the floor's law); SE 0.03, 0.02.
    logs = np.log(extra + 0.5)
    assert logs.mean() == pytest.approx(4.0, abs=0.13) and logs.std() == pytest.approx(2.0, abs=0.09)


def test_every_label_is_the_argmax_of_the_devices_own_linear_model():
    for k in (0, 5, 42):
        n, u, shift, v, weight, bias = reference_draws(k, alpha=1.0, beta=1.0)
        model = device_model(k, alpha=1.0, beta=1.0)
        assert model.size == n and (model.u, model.input_shift) == (u, shift)
        assert np.array_equal(model.input_mean, v) and np.array_equal(model.weight, weight)
        x, y = synthetic_device(k, alpha=1.0, beta=1.0)
        logits = x.astype(np.float64) @ weight + bias
        probabilities = np.exp(logits - logits.max(1, keepdims=True))
        assert np.array_equal(y, probabilities.argmax(1)) and np.array_equal(y, logits.argmax(1))


def test_model_means_have_std_alpha_and_input_shifts_std_beta():
    models = [device_model(k, alpha=0.5, beta=1.5) for k in range(2000)]
    u = np.array([m.u for m in models])
    shift = np.array([m.input_shift for m in models])
    assert abs(u.mean()) < 0.05 and u.std() == pytest.approx(0.5, rel=0.06)
    assert abs(shift.mean()) < 0.15 and shift.std() == pytest.approx(1.5, rel=0.06)
    # Given u_k, W_k and b_k have entries N(u_k, 1); given B_k, v_k has entries N(B_k, 1).
    centred = np.concatenate([np.r_[m.weight.ravel(), m.bias] - m.u for m in models[:200]])
    assert abs(centred.mean()) < 0.01 and centred.std() == pytest.approx(1.0, abs=0.01)
    inputs = np.concatenate([m.input_mean - m.input_shift for m in models[:200]])
    assert abs(inputs.mean()) < 0.02 and inputs.std() == pytest.approx(1.0, abs=0.02)


def test_inputs_have_the_diagonal_covariance_j_to_the_minus_1_2():
    residuals, k = [], 0
    while sum(len(r) for r in residuals) < 40_000:  # x - v_k ~ N(0, Sigma) on every device: pooled
        residuals.append(synthetic_device(k)[0].astype(np.float64) - device_model(k).input_mean)
        k += 1
    residuals = np.concatenate(residuals)
    expected = np.arange(1, 61) ** -1.2
    assert np.abs(residuals.mean(0) / np.sqrt(expected)).max() < 0.03
    assert np.abs(residuals.var(0) / expected - 1).max() < 0.05  # relative SE 0.7% per dimension
    correlation = np.corrcoef(residuals.T)
    assert np.abs(correlation - np.eye(60)).max() < 0.03


def test_iid_devices_share_one_global_model_and_have_constant_input_means():
    models = [device_model(k, alpha=1.0, beta=0.5, iid=True) for k in range(300)]
    for m in models[1:]:
        assert np.array_equal(m.weight, models[0].weight) and np.array_equal(m.bias, models[0].bias)
    for m in models:
        assert np.array_equal(m.input_mean, np.full(60, m.input_shift))
    entries = np.r_[models[0].weight.ravel(), models[0].bias]
    assert abs(entries.mean()) < 0.15 and entries.std() == pytest.approx(1.0, abs=0.1)
    assert np.std([m.input_shift for m in models]) == pytest.approx(0.5, rel=0.15)
    x, y = synthetic_device(7, alpha=1.0, beta=0.5, iid=True)
    assert np.array_equal(y, (x.astype(np.float64) @ models[0].weight + models[0].bias).argmax(1))
    # Another seed, another global model.
    assert not np.array_equal(device_model(0, iid=True, seed=1).weight, models[0].weight)


def test_alpha_and_beta_zero_give_devices_whose_means_are_zero():
    models = [device_model(k, alpha=0.0, beta=0.0) for k in range(100)]
    assert all(m.u == 0.0 and m.input_shift == 0.0 for m in models)
    entries = np.concatenate([np.r_[m.weight.ravel(), m.bias, m.input_mean] for m in models])
    assert abs(entries.mean()) < 0.01 and entries.std() == pytest.approx(1.0, abs=0.01)


def test_a_device_is_a_pure_function_of_seed_and_index():
    x, y = synthetic_device(12, seed=3)
    again_x, again_y = synthetic_device(12, seed=3)
    assert np.array_equal(x, again_x) and np.array_equal(y, again_y)
    for other in (synthetic_device(13, seed=3)[0], synthetic_device(12, seed=4)[0]):
        assert other.shape != x.shape or not np.array_equal(other, x)


# ---- the federation --------------------------------------------------------------------------------------


@pytest.fixture
def generated(monkeypatch) -> list[int]:
    """The devices whose samples are generated, in order."""
    calls = []
    original = synthetic.synthetic_device

    def counting(k, *args, **kwargs):
        calls.append(k)
        return original(k, *args, **kwargs)

    monkeypatch.setattr(synthetic, "synthetic_device", counting)
    return calls


def _batch(datamodule, split: str = "train"):
    datamodule.trainer = None
    loader = datamodule.train_dataloader() if split == "train" else datamodule.test_dataloader()
    return next(iter(loader))


def test_a_client_is_built_on_first_use_without_the_others(generated):
    federation = SyntheticFederation(num_devices=1000)
    assert federation.num_clients == 1000 and federation.num_train_clients == 800
    assert [federation.role(k) for k in range(1000)].count("test") == 200
    assert generated == []  # counting the clients and their roles generates nothing
    task = _batch(federation(999, 1), "test")
    assert generated == [999]
    _batch(federation(999, 2), "test")
    assert generated == [999]  # kept for the next round
    assert task.support_x.shape == (4, 10, 60) and task.query_y.shape == (4, 20)


def test_the_cache_keeps_only_the_last_devices(generated):
    federation = SyntheticFederation(num_devices=10, cache_devices=2)
    for k in (0, 1, 0, 2, 1):
        federation.device_data(k)
    assert generated == [0, 1, 2, 1]


def test_held_out_devices_never_train():
    federation = SyntheticFederation(num_devices=10, test_fraction=0.3)
    assert [federation.role(k) for k in range(10)] == ["train"] * 7 + ["test"] * 3
    test_device, train_device = federation(9, 1), federation(0, 1)
    assert test_device.num_examples == 0
    assert train_device.num_examples == federation.local_split(0)[0] == device_size(0) - federation.local_split(0)[1]
    for datamodule in (test_device, train_device):
        datamodule.trainer = None
    with pytest.raises(ValueError, match="device 9, a held-out test device"):
        test_device.setup("fit")
    train_device.setup("fit")
    test_device.setup("test")


def test_tasks_are_disjoint_draws_keyed_by_device_round_and_index():
    federation = SyntheticFederation(num_devices=20, shots=5, queries=7, meta_batch_size=3, test_tasks=4, seed=2)
    x, y = federation.device_data(3)
    task = _batch(federation(3, 1))
    assert task.support_x.shape == (3, 5, 60) and task.query_x.shape == (3, 7, 60)
    rows = {row.numpy().tobytes(): label for row, label in zip(x, y.tolist())}
    for b in range(3):
        support = {r.numpy().tobytes() for r in task.support_x[b]}
        query = {r.numpy().tobytes() for r in task.query_x[b]}
        assert not support & query and len(support | query) == 12  # distinct samples of the device
        for part_x, part_y in ((task.support_x[b], task.support_y[b]), (task.query_x[b], task.query_y[b])):
            assert [rows[r.numpy().tobytes()] for r in part_x] == part_y.tolist()  # labels kept, not renumbered
    assert torch.equal(_batch(federation(3, 1)).query_x, task.query_x)  # a run repeats exactly
    assert not torch.equal(_batch(federation(3, 2)).query_x, task.query_x)  # another round, other tasks
    first = _batch(federation(18, 1), "test")
    assert torch.equal(_batch(federation(18, 5), "test").support_x, first.support_x)  # the same every round
    datamodule = federation(18, 1)
    assert sum(t.num_tasks for t in datamodule.test_dataloader()) == 4


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.reshape(-1, x.shape[-1])}


def test_a_training_device_holds_out_its_last_samples_as_its_local_test_part():
    federation = SyntheticFederation(num_devices=400, eval_queries=15, local_test_fraction=0.25)
    sizes = device_sizes(300)
    small, large = int(np.argmin(sizes)), int(np.argmax(sizes))  # 50 samples, and thousands
    assert sizes[small] == 50 and sizes[large] > 1000
    # max(eval_queries, ceil(0.25 * n)): the queries' floor for a small device, the fraction for a large one.
    assert federation.local_split(small) == (35, 15)
    held_out = -(-int(sizes[large]) // 4)
    assert federation.local_split(large) == (sizes[large] - held_out, held_out)
    assert all(sum(federation.local_split(k)) == device_size(k) for k in range(20))
    assert federation.local_split(399) == (device_size(399), 0)  # a held-out device: no split
    # The rule alone decides it: another federation object, or its pickled copy, splits alike.
    assert SyntheticFederation(num_devices=400, eval_queries=15, local_test_fraction=0.25).local_split(large) == (
        federation.local_split(large)
    )
    default = SyntheticFederation(num_devices=400)  # eval_queries 20, fraction 0.2
    assert default.local_split(small) == (30, 20) and default.local_split(large)[1] == -(-int(sizes[large]) // 5)


def test_training_tasks_draw_only_from_the_local_training_part_and_participant_queries_only_from_the_rest():
    federation = SyntheticFederation(num_devices=20, shots=5, queries=7, eval_shots=3, eval_queries=6, test_tasks=6)
    device = 3
    x, _ = federation.device_data(device)
    train_part, held_out = federation.local_split(device)
    training, local_test = _rows(x[:train_part]), _rows(x[train_part:])
    assert len(training) == train_part and len(local_test) == held_out and not training & local_test
    drawn = set()
    for server_round in (1, 2, 3):
        datamodule = federation(device, server_round)
        datamodule.trainer = None
        for _, task in zip(range(25), datamodule.train_dataloader()):
            drawn |= _rows(task.support_x) | _rows(task.query_x)
    assert drawn <= training and len(drawn) > train_part // 2  # never a local test sample
    participant = federation.participant_tasks(device)
    participant.trainer = None
    tasks = list(participant.test_dataloader())
    assert sum(t.num_tasks for t in tasks) == 6
    for task in tasks:
        assert task.support_x.shape[1:] == (3, 60) and task.query_x.shape[1:] == (6, 60)
        assert _rows(task.support_x) <= training and _rows(task.query_x) <= local_test
    again = federation.participant_tasks(device)
    again.trainer = None
    assert all(torch.equal(a.query_x, b.query_x) for a, b in zip(tasks, again.test_dataloader()))  # every round
    other_seed = SyntheticFederation(num_devices=20, shots=5, queries=7, eval_shots=3, eval_queries=6, eval_seed=7)
    other = other_seed.participant_tasks(device)
    other.trainer = None
    assert not torch.equal(next(iter(other.test_dataloader())).query_x, tasks[0].query_x)
    # The unseen test clients' tasks are not the participants': a held-out device draws from all its samples.
    with pytest.raises(ValueError, match=r"Expected a training device for a participant evaluation, but got device 19"):
        federation.participant_tasks(19)
    participant.trainer = None
    with pytest.raises(ValueError, match="device 3's participant evaluation tasks"):
        participant.setup("fit")


def test_a_held_out_devices_tasks_are_as_before_the_local_split():
    """A held-out device's tasks draw from all its samples, as they did before training devices held out
    a local test part: the keys and draws are unchanged (``choice(n_k, shots + queries)``)."""
    federation = SyntheticFederation(num_devices=10, eval_shots=4, eval_queries=5, test_tasks=2)
    x, y = federation.device_data(9)
    stream = np.random.default_rng(np.random.SeedSequence([federation.eval_seed, 4, 9, 0]))
    chosen = torch.from_numpy(stream.choice(len(y), 9, replace=False))
    task = _batch(federation(9, 1), "test")
    assert torch.equal(task.support_x[0], x[chosen[:4]]) and torch.equal(task.query_y[0], y[chosen[4:]])


def test_metric_learners_are_refused():
    federation = SyntheticFederation(num_devices=10)
    datamodule = federation(9, 1)
    datamodule.trainer = SimpleNamespace(lightning_module=PrototypicalNetworks(MLP(60, (8,), 10)))
    with pytest.raises(ValueError, match="support sets may lack classes, but got PrototypicalNetworks"):
        datamodule.setup("test")


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"num_devices": 0}, ValueError, r"Expected `num_devices` >= 1, but got 0\."),
        ({"test_fraction": 1.5}, ValueError, r"Expected `test_fraction` in \[0, 1\], but got 1.5\."),
        ({"num_devices": 3, "test_fraction": 0.9}, ValueError, "leave >= 1 training device of 3"),
        ({"alpha": -1.0}, ValueError, r"Expected `alpha` >= 0, but got -1.0\."),
        ({"beta": float("nan")}, ValueError, "Expected a finite `beta`"),
        ({"iid": "yes"}, TypeError, "Expected `iid` to be bool, but got str 'yes'"),
        ({"classes": 1}, ValueError, r"Expected `classes` >= 2, but got 1\."),
        ({"shots": 40, "queries": 20}, ValueError, r"`shots` \+ `queries` <= 50 .*, but got 60\."),
        ({"eval_queries": 45}, ValueError, r"`eval_shots` \+ `eval_queries` <= 50 .*, but got 55\."),
        ({"seed": -1}, ValueError, r"Expected `seed` >= 0, but got -1\."),
        ({"meta_batch_size": 2.0}, TypeError, "Expected `meta_batch_size` to be int"),
        ({"cache_devices": -1}, ValueError, r"Expected `cache_devices` >= 0"),
        ({"local_test_fraction": 1.0}, ValueError, r"Expected `local_test_fraction` < 1 .*, but got 1\."),
        ({"local_test_fraction": -0.1}, ValueError, r"Expected `local_test_fraction` in \[0, 1\], but got -0.1\."),
        (
            {"shots": 15, "queries": 20},
            ValueError,
            r"Expected `shots` \+ `queries` <= 30, the local training part of the smallest device \(50 samples, 20 "
            r"held out: max\(`eval_queries`, ceil\(`local_test_fraction` \* 50\)\)\), but got 35\.",
        ),
        (
            {"eval_shots": 40, "eval_queries": 5, "local_test_fraction": 0.3},
            ValueError,
            r"Expected `eval_shots` <= 35, the local training part of the smallest device \(50 samples, 15 held out",
        ),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        SyntheticFederation(**arguments)


def test_bad_devices_are_refused():
    federation = SyntheticFederation(num_devices=10)
    for bad in (10, -1, True):
        with pytest.raises(ValueError, match=r"Expected a `partition-id` in \[0, 10\) \(8 training and 2 test"):
            federation(bad, 1)
    with pytest.raises(ValueError, match=r"Expected `k` >= 0, but got -1\."):
        synthetic_device(-1)


def test_the_federation_survives_pickling():
    import pickle

    federation = SyntheticFederation(num_devices=10)
    federation.device_data(1)
    copy = pickle.loads(pickle.dumps(federation))
    assert copy._cache == {} and torch.equal(copy.device_data(1)[0], federation.device_data(1)[0])


# ---- lit-meta federate ------------------------------------------------------------------------------------


def test_lit_meta_federate_runs_the_configs_on_50_devices(tmp_path, monkeypatch):
    from lit_meta.cli import main

    stages = []
    setup = synthetic.SyntheticDeviceTasks.setup
    monkeypatch.setattr(
        synthetic.SyntheticDeviceTasks,
        "setup",
        lambda self, stage: (stages.append((self.device, stage)), setup(self, stage)),
    )
    main(
        [
            "federate",
            "--config",
            str(CONFIGS / "base.yaml"),
            "--config",
            str(CONFIGS / "fomaml.yaml"),
            "--data.init_args.num_devices=50",  # 40 train, 10 held out
            "--data.init_args.test_tasks=2",
            "--data.init_args.meta_batch_size=2",
            "--model.init_args.backbone.init_args.hidden=[8]",
            "--model.init_args.eval_inner_steps=2",
            "--strategy.init_args.fraction_train=0.1",  # 4 devices a round
            "--strategy.init_args.fraction_evaluate=0.2",  # 2 held-out devices an evaluation
            "--rounds=2",
            "--local_steps=2",
            "--evaluate_every=1",
            f"--log_dir={tmp_path}",
            "--version=run",
        ]
    )
    result = json.loads((tmp_path / "run" / "federated_result.json").read_text())
    roles = "".join("train\n" if k < 40 else "test\n" for k in range(50))
    assert result["settings"]["clients"] == {
        "train": 40,
        "test": 10,
        "sha256": hashlib.sha256(roles.encode()).hexdigest(),
    }
    # base.yaml evaluates 1.25% of the training devices too: round(0.0125 * 40) = 0, so one.
    assert [
        (r["round"], r["sent"], r["replies"], r["test-tasks"], r["participants-tasks"]) for r in result["rounds"]
    ] == [
        (1, 4, 4, 4, 2),
        (2, 4, 4, 4, 2),
    ]
    assert all(0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["participants-accuracy"] <= 1.0 for r in result["rounds"])
    trained = {device for device, stage in stages if stage == "fit"}
    tested = {device for device, stage in stages if stage == "test"}
    held_out, participants = {int(c) for c in result["clients"]}, {int(c) for c in result["participants"]}
    assert len(trained) >= 4 and max(trained) < 40  # a held-out device never trains
    assert held_out and min(held_out) >= 40 and participants and max(participants) < 40
    assert tested == held_out | participants
