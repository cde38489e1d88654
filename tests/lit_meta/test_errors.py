"""Bad arguments stop with an error that names the argument and the value."""

import pytest
import torch
from torch import nn

from lit_meta.algorithms import MAML
from lit_meta.models import MLP


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inner_steps": 0}, ValueError, r"Expected `inner_steps` >= 1, but got 0\."),
        ({"eval_inner_steps": -1}, ValueError, r"Expected `eval_inner_steps` >= 0, but got -1\."),
        ({"loss": "l1"}, ValueError, r"Expected `loss` to be one of 'mse', 'cross_entropy', but got 'l1'\."),
        ({"inner_lr": -0.1}, ValueError, r"Expected `inner_lr` > 0, but got -0.1\."),
        (
            {"inner_loop": "fast"},
            ValueError,
            r"Expected `inner_loop` to be one of 'auto', 'clone', 'batched', but got 'fast'\.",
        ),
        ({"first_order": "yes"}, TypeError, r"Expected `first_order` to be bool, but got str 'yes'\."),
        ({"inner_steps": True}, TypeError, r"Expected `inner_steps` to be int, but got bool True\."),
    ],
)
def test_maml_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MAML(MLP(), **kwargs)


def test_maml_backbone_must_be_a_module():
    with pytest.raises(TypeError, match=r"Expected `backbone` to be Module, but got str 'mlp'\."):
        MAML("mlp")


def test_batched_inner_loop_refuses_batchnorm_running_statistics():
    backbone = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '1' with track_running_stats=True"):
        MAML(backbone, inner_loop="batched")
    MAML(nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4, track_running_stats=False)), inner_loop="batched")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden": (40, -1)}, ValueError, r"Expected `hidden` >= 1, but got -1\."),
        ({"activation": "gelu"}, ValueError, r"Expected `activation` to be one of 'relu', 'tanh', but got 'gelu'\."),
    ],
)
def test_mlp_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


def test_unknown_loss_in_functional_api():
    from lit_meta.functional import task_losses

    with pytest.raises(ValueError, match=r"Expected `loss` to be one of 'mse', 'cross_entropy', but got 'hinge'\."):
        task_losses(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), "hinge")
