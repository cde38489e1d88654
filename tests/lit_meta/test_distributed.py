"""Meta-learning under real 2-process DDP on CPU: every learner's meta-update equals the single-process one.

tests/helpers/ddp_meta_gradient.py takes one meta-training step of every case in ``tests.helpers.learners.CASES`` (every
learner in ``LEARNERS``, classification and, where it exists, regression) with the meta-batch of 4
tasks split 2 + 2 across two processes. Here the same step is taken in one process over all 4 tasks:

- a learner with automatic optimisation (MAML and its variants, second order included; metric
  learners): the DDP-averaged meta-gradient on each rank equals the meta-gradient of the mean query
  loss over the 4 tasks, computed by a plain ``backward`` (no Lightning involved);
- a learner with manual optimisation (Reptile): the pseudo-gradient and the weights after the outer
  step are identical on both ranks and equal to those of a single-process ``Trainer`` step over the
  4 tasks, and (Reptile) the weights moved to ``theta + epsilon * mean_i(phi_i - theta)`` over all 4.

That validation and test metrics are reduced across ranks is checked by
tests/datamodules/test_episodic.py::test_two_process_ddp_draws_different_tasks_and_evaluates_each_val_task_once.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_meta.algorithms import Reptile
from lit_meta.functional import reptile_displacement
from tests.helpers import ROOT
from tests.helpers.ddp_meta_gradient import initial_learner, meta_batch, one_step, shard
from tests.helpers.learners import CASES, LEARNERS, WAYS, teacher_checkpoint

WORLD_SIZE = 2
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The output folder of one run of tests/helpers/ddp_meta_gradient.py (all cases, ~20-40 s)."""
    out = tmp_path_factory.mktemp("ddp_meta_gradient")
    for out_features, loss in ((WAYS, "cross_entropy"), (1, "mse")):
        teacher_checkpoint(out_features, loss)  # the ranks read the distillation teachers, never train them
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "helpers" / "ddp_meta_gradient.py"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def load_ranks(out: Path, name: str, kind: str) -> list[dict]:
    errors = {p.name: p.read_text() for p in sorted(out.glob(f"{name}_{kind}_rank*.err"))}
    assert not errors, "the DDP step raised:\n" + "\n".join(f"{k}:\n{v}" for k, v in errors.items())
    records = []
    for rank in range(WORLD_SIZE):
        path = out / f"{name}_{kind}_rank{rank}.pt"
        assert path.exists(), f"{path.name} missing: the DDP script did not run this case"
        records.append(torch.load(path, weights_only=False))
    return records


def assert_same_tensors(actual: dict, expected: dict, what: str, **tolerance) -> None:
    assert actual.keys() == expected.keys(), what
    for name in expected:
        if expected[name] is None:
            assert actual[name] is None or not actual[name].any(), f"{what} {name}: expected no gradient"
            continue
        assert actual[name] is not None, f"{what} {name}: no gradient"
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m, n=name: f"{what} {n}: {m}", **tolerance)


def test_every_learner_is_run_under_ddp(ddp_run):
    """A learner added to LEARNERS is covered by the DDP script (it iterates over CASES)."""
    ran = {path.name.rsplit("_rank", 1)[0] for path in ddp_run.glob("*_rank*.*")}
    expected = {f"{name}_{kind}" for name, kind in CASES}
    assert expected <= ran, f"not run under DDP: {sorted(expected - ran)}"
    assert {name for name, _ in CASES} == set(LEARNERS)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_ddp_step_equals_single_process_step(ddp_run, name, kind, tmp_path):
    ranks = load_ranks(ddp_run, name, kind)
    task = meta_batch(kind)
    learner = initial_learner(name, kind)
    init = {n: p.detach().clone() for n, p in learner.named_parameters()}

    # The ranks started from the reference's weights and each trained on its own half of the tasks.
    for rank, record in enumerate(ranks):
        assert record["rank"] == rank and record["world_size"] == WORLD_SIZE
        assert_same_tensors(record["init"], init, f"rank {rank} initial weight", rtol=0, atol=0)
        for got, expected in zip(record["batch"], shard(task, rank, WORLD_SIZE)):
            assert torch.equal(got, expected), f"rank {rank} did not train on its share of the meta-batch"

    # Same gradients and same weights after the step on every rank (nothing left un-synchronised).
    assert_same_tensors(ranks[1]["grads"], ranks[0]["grads"], "rank 1 vs rank 0 gradient", rtol=0, atol=0)
    assert_same_tensors(ranks[1]["weights"], ranks[0]["weights"], "rank 1 vs rank 0 weight", rtol=0, atol=0)

    if learner.automatic_optimization:
        # The single-process meta-gradient over all tasks, by hand.
        learner.training_episode(task)[1].mean().backward()
        expected = {n: None if p.grad is None else p.grad for n, p in learner.named_parameters()}
        assert_same_tensors(ranks[0]["grads"], expected, "DDP vs single-process meta-gradient", **TOLERANCE)
        # Not vacuous: rank 0's own half of the tasks gives another gradient, so DDP really averaged.
        half = initial_learner(name, kind)
        local = shard(task, 0, WORLD_SIZE)
        half.training_episode(local)[1].mean().backward()
        assert any(
            p.grad is not None and not torch.allclose(p.grad, expected[n], **TOLERANCE)
            for n, p in half.named_parameters()
        ), "the two halves of the meta-batch give the same gradient"
    else:
        # Manual optimisation: a single-process Trainer step over all tasks.
        single = one_step(learner, task, str(tmp_path), accelerator="cpu", devices=1)
        for got, expected in zip(single.batch, task):
            assert torch.equal(got, expected)
        assert_same_tensors(ranks[0]["grads"], single.grads, "DDP vs single-process pseudo-gradient", **TOLERANCE)
        assert_same_tensors(ranks[0]["weights"], single.weights, "DDP vs single-process weight", **TOLERANCE)

    if isinstance(learner, Reptile):
        # theta + epsilon * mean_i(phi_i - theta) over all 4 tasks (epsilon is not annealed at step 0).
        reference = initial_learner(name, kind)
        phis = [
            reference.fine_tune(torch.cat([sx, qx]), torch.cat([sy, qy]), reference.inner_steps)[0]
            for sx, sy, qx, qy in zip(*task)
        ]
        expected = {
            f"backbone.{n}": w + reference.epsilon * reptile_displacement(w, [phi[n] for phi in phis])
            for n, w in reference.backbone.named_parameters()
        }
        assert_same_tensors(ranks[0]["weights"], expected, "DDP Reptile weight vs the Reptile update", **TOLERANCE)
