"""FedRep: head steps with the body frozen, then body steps with the head frozen, restarted every fit;
evaluation fits a head on frozen support features; training on fabricated tasks."""

import copy

import pytest
import torch
from lightning.pytorch import Callback
from torch import nn

from lit_meta.algorithms import FedRep
from lit_meta.functional import linear_probe_logits
from lit_meta.models import MLP
from tests.helpers.personalised import FixedTasks
from tests.helpers.personalised import fit as _fit
from tests.helpers.tasks import make_classification_task
from tests.helpers.trainers import quiet_trainer


class Weights(Callback):
    """The body's and the head's weights after every training step."""

    def __init__(self) -> None:
        self.body, self.head = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.body.append([p.detach().clone() for p in pl_module.body.parameters()])
        self.head.append([p.detach().clone() for p in pl_module.backbone.head.parameters()])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_each_fit_trains_the_head_for_head_steps_then_only_the_body():
    torch.manual_seed(0)
    learner = FedRep(MLP(4, (8,), 3), head_steps=2, lr=0.1, head_lr=0.2)
    body0 = [p.detach().clone() for p in learner.body.parameters()]
    head0 = [p.detach().clone() for p in learner.backbone.head.parameters()]
    tasks = [make_classification_task(2, 3, 2, 3) for _ in range(4)]
    for _ in range(2):  # two rounds: the phases restart with every fit
        weights = Weights()
        trainer = quiet_trainer(max_steps=4, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[weights])
        trainer.fit(learner, FixedTasks(tasks))
        assert _same(weights.body[0], body0) and _same(weights.body[1], body0)  # head phase: body frozen
        assert not _same(weights.head[0], head0) and not _same(weights.head[1], weights.head[0])
        assert _same(weights.head[2], weights.head[1]) and _same(weights.head[3], weights.head[1])  # head frozen
        assert not _same(weights.body[2], body0) and not _same(weights.body[3], weights.body[2])
        body0, head0 = weights.body[3], weights.head[3]
        assert learner.head_trained.item() == 1.0  # evaluation now starts from this client's head


def test_the_first_head_step_is_sgd_at_head_lr_on_the_frozen_features():
    torch.manual_seed(1)
    learner = FedRep(MLP(4, (8,), 3), head_steps=1, lr=0.1, head_lr=0.2)
    reference = copy.deepcopy(learner.backbone)
    task = make_classification_task(2, 3, 2, 3)
    _fit(learner, [task], 1)
    losses = [
        nn.functional.cross_entropy(reference(torch.cat([sx, qx])), torch.cat([sy, qy]))
        for sx, sy, qx, qy in zip(*task)
    ]
    torch.stack(losses).mean().backward()
    for got, p in zip(learner.backbone.head.parameters(), reference.head.parameters()):
        torch.testing.assert_close(got, (p - 0.2 * p.grad).detach())


def test_a_fit_too_short_for_the_body_warns():
    learner = FedRep(MLP(4, (8,), 3), head_steps=3)
    with pytest.warns(UserWarning, match=r"FedRep trains only the head in a fit of 2 steps with `head_steps` 3"):
        _fit(learner, [make_classification_task(2, 3, 2, 3)] * 2, 2)


def test_evaluation_fits_a_new_head_on_frozen_features_as_a_linear_probe():
    torch.manual_seed(2)
    learner = FedRep(MLP(4, (8,), 3), head_lr=0.5, eval_head="new")
    task = make_classification_task(3, 3, 2, 4)
    curve = learner.evaluate_episode(task, steps=4, every_step=True)
    support = torch.stack([learner.embed(x) for x in task.support_x]).detach()
    query = torch.stack([learner.embed(x) for x in task.query_x]).detach()
    torch.testing.assert_close(curve, linear_probe_logits(support, task.support_y, query, 3, 4, 0.5))
    assert torch.equal(curve[0], torch.zeros_like(curve[0]))  # every class equally likely before a step
    # "personal" starts a client without a trained head (a held-out one) from zeros too ...
    personal = FedRep(copy.deepcopy(learner.backbone), head_lr=0.5, eval_head="personal")
    torch.testing.assert_close(personal.evaluate_episode(task, steps=4, every_step=True), curve)
    # ... and one that trained its head from that head: before any step, the client's own network.
    personal.head_trained.fill_(1.0)
    expected = torch.stack([personal.backbone(q) for q in task.query_x]).detach()
    torch.testing.assert_close(personal.evaluate_episode(task, steps=0), expected)
    # The body stays frozen in evaluation.
    before = [p.detach().clone() for p in personal.parameters()]
    personal.evaluate_episode(task, steps=3)
    assert _same(before, list(personal.parameters()))


def test_fedrep_personalises_on_fabricated_tasks():
    torch.manual_seed(3)
    tasks = [make_classification_task(4, 3, 3, 4) for _ in range(40)]
    test_task = make_classification_task(20, 3, 3, 5)
    learner = FedRep(MLP(4, (16,), 3), head_steps=10, lr=0.1, eval_inner_steps=10)
    before = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    _fit(learner, tasks, 40)
    after = (learner.evaluate_episode(test_task).argmax(-1) == test_task.query_y).float().mean()
    assert after > max(before, 0.6), (before, after)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"head_steps": -1}, ValueError, r"Expected `head_steps` >= 0, but got -1\."),
        ({"lr": 0}, ValueError, r"Expected `lr` > 0, but got 0\."),
        ({"head_lr": -0.5}, ValueError, r"Expected `head_lr` > 0, but got -0\.5\."),
        ({"eval_head": "zero"}, ValueError, r"Expected `eval_head` to be one of 'personal', 'new', but got 'zero'\."),
        (
            {"backbone": nn.Linear(4, 3)},
            TypeError,
            r"Expected `backbone` to have a `features` module and a linear `head`",
        ),
    ],
)
def test_bad_arguments_are_refused(arguments, error, match):
    with pytest.raises(error, match=match):
        FedRep(**{"backbone": MLP(4, (8,), 3), **arguments})
