"""The search space: its YAML, its checks against the `lit-meta fit` parser, the values Optuna suggests."""

from __future__ import annotations

import optuna
import pytest

from lit_meta.tuning.fit_config import best_config_yaml, check_space, overrides
from lit_meta.tuning.space import Dimension, load_space, parse_space
from tests.helpers import ROOT
from tests.helpers.configs import TUNE_SEARCHES


def test_a_space_file_becomes_dimensions(space_file):
    inner, outer = load_space(space_file)
    assert inner == Dimension("model.init_args.inner_lr", "float", low=1e-3, high=0.1, log=True)
    assert outer.key == "model.init_args.optimizer.init_args.lr"


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ([1, 2], TypeError, r"Expected the search space to map argument names"),
        ({"a.b": 3}, TypeError, r"Expected `a.b` to be a mapping"),
        ({"a.b": {"type": "uniform"}}, ValueError, r"Expected `a.b.type` to be one of 'float', 'int', 'categorical'"),
        (
            {"a.b": {"type": "float", "low": 1.0, "high": 0.1}},
            ValueError,
            r"Expected `a.b.low` <= `a.b.high`, but got low 1.0",
        ),
        ({"a.b": {"type": "float", "low": 0, "high": 1, "log": True}}, ValueError, r"Expected `a.b.low` > 0 on a log"),
        ({"a.b": {"type": "int", "low": 1.5, "high": 3}}, TypeError, r"Expected `a.b.low` to be an int, but got 1.5"),
        ({"a.b": {"type": "float", "low": 0, "hi": 1}}, ValueError, r"Expected the fields of a float `a.b` among .*hi"),
        ({"a.b": {"type": "categorical", "choices": []}}, TypeError, r"Expected `a.b.choices` to be a non-empty list"),
        ({"a.b": {"type": "int", "low": 1, "high": 8, "log": True, "step": 2}}, ValueError, r"either `a.b.log` or"),
        # Optuna would raise in every trial, and every trial would be a FAIL kept in the study.
        ({"a.b": {"type": "float", "low": float("nan"), "high": 1.0}}, ValueError, r"Expected a finite `a.b.low`"),
        ({"a.b": {"type": "float", "low": 0.0, "high": float("inf")}}, ValueError, r"Expected a finite `a.b.high`"),
        (
            {"a.b": {"type": "int", "low": 1, "high": 8, "step": 1.5}},
            TypeError,
            r"`a.b.step` to be an int, but got 1.5",
        ),
        ({"a.b": {"type": "float", "low": 0, "high": 1, "step": True}}, TypeError, r"`a.b.step` to be a number"),
        ({"a.b": {"type": "float", "low": 0, "high": 1, "step": -0.1}}, ValueError, r"`a.b.step` > 0, but got -0.1"),
    ],
)
def test_a_malformed_space_is_refused_with_the_key(raw, error, match):
    with pytest.raises(error, match=match):
        parse_space(raw)


def test_suggested_values_lie_in_the_space():
    dims = parse_space(
        {
            "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
            "steps": {"type": "int", "low": 1, "high": 5},
            "ways": {"type": "categorical", "choices": [5, 10]},
            "grid": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        lr, steps, ways, grid = (dim.suggest(study.ask()) for dim in dims)
        assert 1e-3 <= lr <= 1.0 and steps in range(1, 6) and ways in (5, 10) and grid in (0, 0.25, 0.5, 0.75, 1)


def test_overrides_are_yaml_values():
    assert overrides({"a.lr": 0.001, "a.hidden": [8, 8], "a.act": "relu", "a.flag": True}) == [
        "--a.lr=0.001",
        "--a.hidden=[8, 8]",
        "--a.act=relu",
        "--a.flag=true",
    ]


@pytest.mark.parametrize(
    ("key", "spec", "match"),
    [
        (
            "model.init_args.inner_lrr",
            "{type: float, low: 0.1, high: 1}",
            r"but got `model.init_args.inner_lrr` \(did you mean `model.init_args.inner_lr`\?\)",
        ),
        (
            "model.init_args.inner_steps",
            "{type: float, low: 0.5, high: 2.5}",
            r"Expected values of `model.init_args.inner_steps` that fit its argument, but 0.5 does not",
        ),
        (
            # Whole-number bounds would parse as ints: probed as floats, they show that samples will not.
            "model.init_args.inner_steps",
            "{type: float, low: 1, high: 3}",
            r"Expected values of `model.init_args.inner_steps` that fit its argument, but 1.0 does not",
        ),
        ("model.init_args.first_order", "{type: categorical, choices: [true, maybe]}", r"but 'maybe' does not"),
        (
            "data.init_args.val_tasks",
            "{type: int, low: 10, high: 20}",
            r"Expected the validation tasks to be the same in every trial",
        ),
    ],
)
def test_a_space_that_does_not_fit_the_config_is_refused(tiny_config, tmp_path, key, spec, match):
    space = parse_space({key: __import__("yaml").safe_load(spec)})
    with pytest.raises(ValueError, match=match):
        check_space(["--config", str(tiny_config)], space)


def test_searching_training_ways_needs_fixed_evaluation_ways():
    configs = [
        "--config",
        str(ROOT / "configs/omniglot/base.yaml"),
        "--config",
        str(ROOT / "configs/omniglot/protonet_5w1s.yaml"),
    ]
    space = parse_space({"data.init_args.ways": {"type": "categorical", "choices": [5, 10]}})
    check_space(configs, space)  # base.yaml sets eval_ways: the validation tasks stay the same
    with pytest.raises(ValueError, match=r"Expected `data.init_args.eval_ways` set in the config, but got null"):
        check_space([*configs, "--data.init_args.eval_ways=null"], space)


@pytest.mark.parametrize(("stack", "space"), list(TUNE_SEARCHES.values()), ids=list(TUNE_SEARCHES))
def test_every_shipped_search_space_fits_its_configs(stack, space):
    configs = [arg for path in stack for arg in ("--config", str(ROOT / "configs" / path))]
    check_space(configs, load_space(ROOT / "configs" / space))


def test_the_best_config_is_complete_and_holds_the_values(tiny_config):
    import yaml

    config = yaml.safe_load(best_config_yaml(["--config", str(tiny_config)], {"model.init_args.inner_lr": 0.05}))
    assert config["model"]["init_args"]["inner_lr"] == 0.05
    assert config["model"]["init_args"]["inner_steps"] == 1  # a default, spelt out
    assert config["data"]["init_args"]["val_tasks"] == 8 and "config" not in config
