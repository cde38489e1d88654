"""``lit-meta federate`` end to end on fabricated Omniglot: outputs, checkpoints others read, resume, errors."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_meta.cli import main
from tests.helpers import ROOT
from tests.lit_meta.test_adapt import task_folders
from tests.lit_meta.test_runs import hashes

CONFIGS = ROOT / "configs" / "federated" / "omniglot"
# base.yaml and the files that modify a run (not learners), each tested below.
MODIFIERS = ("base", "centralised", "dp", "fedavgm")
LEARNERS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem not in MODIFIERS)


def federate(data_dir: str, logs: Path, *options: str, learner: str = "protonet") -> None:
    """Two alphabets train and two test (fabricated small1/small2), tiny rounds."""
    main(
        [
            "federate",
            "--config",
            str(CONFIGS / "base.yaml"),
            "--config",
            str(CONFIGS / f"{learner}.yaml"),
            f"--data.init_args.data.init_args.data_dir={data_dir}",
            "--data.init_args.data.init_args.ways=3",
            "--data.init_args.data.init_args.meta_batch_size=1",
            "--data.init_args.data.init_args.test_tasks=3",
            "--strategy.init_args.min_train_nodes=2",
            "--strategy.init_args.min_evaluate_nodes=2",
            "--strategy.init_args.min_available_nodes=2",
            "--rounds=2",
            "--local_steps=2",
            "--evaluate_every=1",
            f"--log_dir={logs}",
            *options,
        ]
    )


def error_of(capsys, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        federate(*args, **kwargs)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    federate(data_dir, logs, "--version=run")
    return logs / "run"


def test_the_result_file_records_every_round_and_each_test_client(run_dir):
    result = json.loads((run_dir / "federated_result.json").read_text())
    # Counts and the sha256 of the roles in partition order, one a line: the same size for any number of clients.
    digest = hashlib.sha256(b"train\ntrain\ntest\ntest\n").hexdigest()
    assert result["settings"]["clients"] == {"train": 2, "test": 2, "sha256": digest}
    assert [r["round"] for r in result["rounds"]] == [1, 2]
    last = result["rounds"][-1]
    assert (last["sent"], last["replies"], last["late"], last["failures"]) == (2, 2, 0, 0)
    assert last["bytes-sent"] == last["bytes-received"] > 0
    assert last["test-tasks"] == 6 and set(last["clients"]) == {"2", "3"}
    assert 0.0 <= last["accuracy"] <= 1.0 and last["accuracy-ci95"] > 0
    # The pooled mean is the task-weighted mean of the clients' means (3 tasks each).
    clients = last["clients"].values()
    assert last["accuracy"] == pytest.approx(sum(c["accuracy"] for c in clients) / 2)
    assert result["clients"]["3"]["round"] == 2


def test_tensorboard_has_the_per_round_scalars(run_dir):
    (events,) = run_dir.glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    tags = ("train-loss", "accuracy", "accuracy-ci95", "replies", "late", "failures", "bytes-sent", "bytes-received")
    for tag in (*tags, "train-seconds", "round-seconds"):
        assert f"federated/{tag}" in scalars
    assert "federated/client_2/accuracy" in scalars


def test_lit_meta_test_and_adapt_read_the_round_checkpoint(run_dir, data_dir, tmp_path, capsys):
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert (run_dir / "checkpoints" / "round_0002.ckpt").is_file()
    main(
        [
            "test",
            "--config",
            str(ROOT / "configs" / "omniglot" / "base.yaml"),
            "--config",
            str(ROOT / "configs" / "omniglot" / "protonet_5w1s.yaml"),
            f"--data.data_dir={data_dir}",
            "--data.test_tasks=2",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'test'}",
            "--trainer.enable_progress_bar=false",
            f"--ckpt_path={checkpoint}",
        ]
    )
    assert json.loads(next((tmp_path / "test").rglob("meta_test.json")).read_text())
    support, query = task_folders(tmp_path / "task")
    main(["adapt", "--ckpt_path", str(checkpoint), "--support", str(support), "--query", str(query)])
    assert "Accuracy:" in capsys.readouterr().out


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.mark.parametrize(
    "server",
    [
        ("--strategy=flwr.serverapp.strategy.FedAdam", "--strategy.init_args.eta=0.01"),  # moments: dicts
        ("--strategy=flwr.serverapp.strategy.FedAvgM", "--strategy.init_args.server_momentum=0.9"),  # a list
    ],
    ids=["fedadam", "fedavgm"],
)
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(server, data_dir, tmp_path):
    # A server optimiser's state (FedAdam's moments, FedAvgM's momentum) must come back, not only the weights.
    common = (*server, "--strategy.init_args.min_train_nodes=2", "--strategy.init_args.min_evaluate_nodes=2")
    federate(data_dir, tmp_path, *common, "--rounds=3", "--version=whole")
    federate(data_dir, tmp_path, *common, "--rounds=2", "--version=cut")
    federate(data_dir, tmp_path, *common, "--rounds=3", f"--resume={tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'}")
    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    rounds = json.loads((tmp_path / "cut" / "federated_result.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--seed=1", "Expected `seed` 0 to resume the run of '{ckpt}', but got 1."),
        ("--local_steps=3", "Expected `local_steps` 2 to resume the run of '{ckpt}', but got 3."),
        (
            "--strategy=flwr.serverapp.strategy.FedMedian",
            "Expected `strategy` 'flwr.serverapp.strategy.fedavg.FedAvg' to resume the run of '{ckpt}', but got "
            "'flwr.serverapp.strategy.fedmedian.FedMedian'.",
        ),
    ],
    ids=["seed", "local_steps", "strategy"],
)
def test_a_resume_with_other_settings_is_refused(option, message, data_dir, tmp_path, capsys):
    federate(data_dir, tmp_path, "--rounds=1", "--version=cut")
    checkpoint = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    code, line = error_of(capsys, data_dir, tmp_path, "--rounds=2", option, f"--resume={checkpoint}")
    assert code == 2
    assert line.endswith(message.format(ckpt=checkpoint))


def test_a_checkpoint_listing_every_clients_role_resumes_compared_by_the_same_summary(data_dir, tmp_path, capsys):
    federate(data_dir, tmp_path, "--rounds=1", "--version=cut")
    folder = tmp_path / "cut" / "checkpoints"
    state = torch.load(folder / "last.ckpt", weights_only=True)
    summary = state["federated"]["settings"]["clients"]
    # As checkpoints recorded the clients before summaries: every client's role, by partition id.
    for name, roles in (("same.ckpt", ["train", "train", "test", "test"]), ("other.ckpt", ["train", "test"] * 2)):
        state["federated"]["settings"]["clients"] = {str(i): role for i, role in enumerate(roles)}
        torch.save(state, folder / name)
    code, line = error_of(capsys, data_dir, tmp_path, "--rounds=2", f"--resume={folder / 'other.ckpt'}")
    assert code == 2
    assert line.endswith(f"to resume the run of '{folder / 'other.ckpt'}', but got {summary!r}.")
    federate(data_dir, tmp_path, "--rounds=2", f"--resume={folder / 'same.ckpt'}")
    rounds = json.loads((tmp_path / "cut" / "federated_result.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]


def test_a_resume_needs_rounds_beyond_those_done(data_dir, tmp_path, capsys):
    federate(data_dir, tmp_path, "--rounds=1", "--version=cut")
    checkpoint = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    code, line = error_of(capsys, data_dir, tmp_path, "--rounds=1", f"--resume={checkpoint}")
    assert code == 2
    assert line.endswith(f"Expected `rounds` > 1, the rounds done in '{checkpoint}', but got 1.")


def test_an_adaptive_clipping_norm_and_a_momentum_list_come_back_from_the_strategy_state():
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping, FedAvg, FedAvgM

    from lit_meta.federated.checkpoint import load_strategy_state, strategy_state

    def server() -> DifferentialPrivacyServerSideAdaptiveClipping:
        return DifferentialPrivacyServerSideAdaptiveClipping(FedAvgM(), 0.1, num_sampled_clients=2)

    trained = server()
    trained.clipping_norm = 0.37  # as the wrapper adapts it from round to round
    trained.strategy.momentum_vector = [np.arange(3.0), np.ones((2, 2))]
    state = strategy_state(trained)
    restored = server()
    load_strategy_state(restored, state)
    assert restored.clipping_norm == 0.37
    assert [a.tolist() for a in restored.strategy.momentum_vector] == [[0.0, 1.0, 2.0], [[1.0, 1.0], [1.0, 1.0]]]
    # A list saved as checkpoints before this format did: `name[]`, its arrays keyed by position.
    legacy = FedAvg()
    load_strategy_state(legacy, {"momentum_vector[]": {"0": torch.zeros(2), "1": torch.ones(1)}})
    assert [a.tolist() for a in legacy.momentum_vector] == [[0.0, 0.0], [1.0]]


@pytest.mark.parametrize("learner", LEARNERS)
def test_every_federated_config_runs_a_round(learner, data_dir, tmp_path):
    federate(data_dir, tmp_path, "--rounds=1", "--local_steps=1", "--version=smoke", learner=learner)
    assert json.loads((tmp_path / "smoke" / "federated_result.json").read_text())["rounds"][0]["replies"] == 2


def test_the_fedavgm_config_carries_momentum_over_the_plain_average(data_dir, tmp_path):
    federate(data_dir, tmp_path, "--config", str(CONFIGS / "fedavgm.yaml"), "--version=momentum")
    federate(data_dir, tmp_path, "--strategy.init_args.weighted_by_key=unit-weight", "--version=plain")
    settings = json.loads((tmp_path / "momentum" / "federated_result.json").read_text())["settings"]
    assert "FedAvgM" in json.dumps(settings)
    momentum, plain = _final_weights(tmp_path / "momentum"), _final_weights(tmp_path / "plain")
    # Round 1 is the plain average either way; round 2 adds half of round 1's step.
    assert any(not torch.equal(momentum[k], plain[k]) for k in plain)


def test_the_centralised_config_trains_one_pooled_client_on_the_same_test_clients(data_dir, tmp_path):
    centralised = ("--config", str(CONFIGS / "centralised.yaml"), "--local_steps=2", "--rounds=1")
    federate(data_dir, tmp_path, *centralised, "--version=central")
    result = json.loads((tmp_path / "central" / "federated_result.json").read_text())
    assert result["settings"]["clients"] == {
        "train": 1,
        "test": 2,
        "sha256": hashlib.sha256(b"train\ntest\ntest\n").hexdigest(),
    }
    assert result["rounds"][0]["replies"] == 1 and result["rounds"][0]["test-tasks"] == 6


def test_training_clients_evaluated_on_their_held_out_drawers_are_recorded_apart(data_dir, tmp_path):
    participants = ("--data.init_args.local_test_fraction=0.25", "--evaluate_participants=1.0")
    federate(data_dir, tmp_path, *participants, "--version=participants")
    result = json.loads((tmp_path / "participants" / "federated_result.json").read_text())
    assert result["settings"]["evaluate_participants"] == 1.0
    for record in result["rounds"]:
        assert set(record["participants"]) == {"0", "1"} and set(record["clients"]) == {"2", "3"}
        assert record["participants-tasks"] == record["test-tasks"] == 6  # 3 tasks a client
        assert 0.0 <= record["participants-accuracy"] <= 1.0 and record["participants-eval-failures"] == 0
    assert set(result["participants"]) == {"0", "1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--strategy.init_args.min_train_nodes=5",),
            "Expected `min_available_nodes` and `min_train_nodes` of FedAvg <= 2 train clients, but got 5.",
        ),
        (("--rounds=0",), "Expected `rounds` >= 1, but got 0."),
        (
            ("--data.init_args.data.init_args.eval_ways=7",),
            "Expected `ways` <= 6 classes in split 'test of client 2 (images_background_small2/Alphabet_0)', "
            "but got 7.",
        ),
        (("--strategy=flwr.serverapp.strategy.FedNothing",), "FedNothing"),
        (("--backend=cluster",), "Expected `backend` to be one of 'in_process', 'simulation', but got 'cluster'."),
        (("--evaluate_participants=1.5",), "Expected `evaluate_participants` in [0, 1], but got 1.5."),
        (
            ("--evaluate_participants=0.5",),
            "Expected `local_test_fraction` > 0 (training clients holding local test data) to evaluate participants, "
            "but got 0.",
        ),
        (
            ("--resume=/no/such.ckpt",),
            "Expected a federated round checkpoint file at '/no/such.ckpt', but got no such file.",
        ),
        (
            ("--backend=simulation", "--accelerator=gpu"),
            "Expected `client_gpus` > 0 for simulated clients on accelerator 'gpu' (Ray hides the GPUs from "
            "clients that ask for none), but got 0.0.",
        ),
    ],
)
def test_configuration_mistakes_are_one_line_before_round_1(options, message, data_dir, tmp_path, capsys):
    code, line = error_of(capsys, data_dir, tmp_path, *options)
    assert code == 2
    assert line.startswith("lit-meta federate: error: ")
    assert message in line
    assert not list(tmp_path.rglob("round_*.ckpt"))


def test_print_config_shows_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "federate",
                "--config",
                str(CONFIGS / "base.yaml"),
                "--config",
                str(CONFIGS / "protonet.yaml"),
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    keys = (
        "rounds:",
        "local_steps:",
        "backend:",
        "min_replies:",
        "round_timeout:",
        "resume:",
        "transfer:",
        "personal:",
        "evaluate_participants:",
    )
    for key in (*keys, "min_train_nodes:"):
        assert key in printed
    assert "weighted_by_key: num-examples" in printed


def test_differential_privacy_records_the_epsilon_flowers_accountant_reports(data_dir, tmp_path):
    import dp_accounting

    inner, dp = "--strategy.init_args.strategy.init_args", "--strategy.init_args"
    federate(
        data_dir, tmp_path, "--config", str(CONFIGS / "dp.yaml"), "--version=dp",
        f"{dp}.num_sampled_clients=2", f"{dp}.accountant.init_args.config.population_size=2",
        f"{inner}.min_train_nodes=2", f"{inner}.min_evaluate_nodes=2", f"{inner}.min_available_nodes=2",
    )  # fmt: skip
    rounds = json.loads((tmp_path / "dp" / "federated_result.json").read_text())["rounds"]
    for record in rounds:
        # An independent reference: Google's RDP accountant, one Gaussian release (sigma 0.1) per round.
        reference = dp_accounting.rdp.RdpAccountant()
        reference.compose(dp_accounting.GaussianDpEvent(0.1), record["round"])
        assert record["epsilon"] == pytest.approx(reference.get_epsilon(1e-3), rel=1e-6)
        assert record["delta"] == 1e-3
    assert rounds[1]["epsilon"] > rounds[0]["epsilon"]


def test_the_fedavg_baseline_fine_tunes_a_head_on_each_test_clients_support_set(data_dir, tmp_path):
    finetune = ("--model.init_args.adapt=finetune", "--model.init_args.finetune_steps=5")
    federate(data_dir, tmp_path, *finetune, "--rounds=1", "--version=finetune", learner="supervised")
    record = json.loads((tmp_path / "finetune" / "federated_result.json").read_text())["rounds"][0]
    assert record["replies"] == 2 and 0.0 <= record["accuracy"] <= 1.0


def whole_error(capsys, *args, **kwargs) -> tuple[int, str]:
    """Exit status and the whole of stderr, which must be one line."""
    with pytest.raises(SystemExit) as exit_info:
        federate(*args, **kwargs)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return exit_info.value.code, lines[0]


def test_a_new_run_into_an_existing_runs_version_changes_nothing(run_dir, data_dir, capsys):
    before = hashes(run_dir)
    code, line = whole_error(capsys, data_dir, run_dir.parent, "--version=run")
    assert code == 2
    assert line.startswith("lit-meta federate: error: Expected a new version folder for a new run, but got ")
    assert hashes(run_dir) == before


def test_resuming_into_another_version_is_refused(run_dir, data_dir, capsys):
    before = hashes(run_dir.parent)
    resume = f"--resume={run_dir / 'checkpoints' / 'last.ckpt'}"
    code, line = whole_error(capsys, data_dir, run_dir.parent, resume, "--version=elsewhere", "--rounds=3")
    assert code == 2
    assert "Expected `version` 'run' (the folder of `resume`" in line and "but got 'elsewhere'" in line
    assert hashes(run_dir.parent) == before


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MARKER']}",))


def test_a_resume_checkpoint_with_pickled_objects_runs_nothing(data_dir, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("MARKER", str(marker))
    path = tmp_path / "last.ckpt"
    torch.save({"federated": {"round": 1, "settings": _Payload()}, "hyper_parameters": {}}, path)
    code, line = whole_error(capsys, data_dir, tmp_path / "logs", f"--resume={path}")
    assert code == 2
    assert "it holds pickled objects, which lit-meta never loads" in line
    assert not marker.exists()


def test_overwrite_replaces_an_old_run_whole(data_dir, tmp_path):
    old = tmp_path / "run" / "checkpoints"
    old.mkdir(parents=True)
    (old / "round_0005.ckpt").write_bytes(b"an older run's round")
    federate(data_dir, tmp_path, "--version=run", "--overwrite=true", "--rounds=1")
    assert sorted(p.name for p in old.iterdir()) == ["last.ckpt", "round_0001.ckpt"]
