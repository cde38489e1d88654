"""benchmarks/pruning_replay.py: a pruner replayed on recorded validation curves, checked by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "pruning_replay.py"
spec = importlib.util.spec_from_file_location("pruning_replay", SCRIPT)
pruning_replay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pruning_replay)

GOOD = [0.5, 0.6, 0.7, 0.8, 0.9]
FAIR = [0.5, 0.6, 0.7, 0.8, 0.85]


def test_a_weak_start_is_pruned_at_the_first_validation_and_counted():
    # Two start-up trials complete; the third is below the kept top 25% at its first validation.
    result = pruning_replay.replay(
        [GOOD, FAIR, [0.1, 0.2, 0.3, 0.4, 0.5]], pruning_replay.parse_pruner("percentile:2:25")
    )
    assert result == {"pruned": pytest.approx(1 / 3), "steps": pytest.approx(11 / 15), "gap": pytest.approx(0.0)}
    assert pruning_replay.meets(result) == {"pruned": False, "steps": False, "gap": True, "all": False}


def test_a_slow_starter_that_would_have_won_is_a_gap():
    late = [0.1, 0.2, 0.3, 0.4, 0.95]
    result = pruning_replay.replay([GOOD, FAIR, late, late], pruning_replay.parse_pruner("percentile:2:25"))
    assert result["pruned"] == 0.5 and result["steps"] == pytest.approx(12 / 20)
    assert result["gap"] == pytest.approx(100 * (0.9 - 0.95))
    assert not pruning_replay.meets(result)["gap"]


def test_the_pruner_text_is_the_tune_commands_options_with_their_defaults():
    assert pruning_replay.parse_pruner("asha") == {"name": "asha", "startup": 4, "percentile": 25.0, "min_epochs": 1}
    assert pruning_replay.parse_pruner("percentile:2:33:3") == {
        "name": "percentile",
        "startup": 2,
        "percentile": 33.0,
        "min_epochs": 3,
    }


@pytest.mark.parametrize("text", ["medain", "percentile:2:25:1:9"])
def test_a_pruner_the_tune_command_does_not_have_is_refused(text):
    with pytest.raises(
        ValueError, match=r"Expected `pruner` name\[:startup\[:percentile\[:min_epochs\]\]\], name one of"
    ):
        pruning_replay.parse_pruner(text)


def test_curves_are_read_from_a_journal_and_too_many_trials_are_refused(tmp_path):
    journal = tmp_path / "none2.log"
    study = optuna.create_study(
        study_name="none2", storage=JournalStorage(JournalFileBackend(str(journal))), direction="maximize"
    )
    for curve in (GOOD, FAIR):
        trial = study.ask()
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
        study.tell(trial, max(curve))
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)  # not a whole curve: left out
    assert pruning_replay.load_curves(str(journal)) == [GOOD, FAIR]
    with pytest.raises(ValueError, match=r"Expected `n_trials` <= 2 curves in the journals, but got 3\."):
        pruning_replay.main([str(journal), "--n_trials", "3", "--pruner", "median:1"])
    out = pruning_replay.main([str(journal), "--n_trials", "2", "--pruner", "median:1", "--resamples", "3"])
    assert out["curves"] == 2 and out["rows"][0]["p_gap"] == 1.0
