"""The run's settings (checked once, when built) and the clients' roles (checked once, asked or known)."""

from __future__ import annotations

import hashlib

import pytest

from lit_meta.federated import FederationError, RunSettings
from lit_meta.federated.roles import check_strategy, known_roles, role_summary


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"rounds": 0}, ValueError, r"Expected `rounds` >= 1, but got 0\."),
        ({"local_steps": 2.0}, TypeError, r"Expected `local_steps` to be int, but got float 2.0\."),
        ({"min_replies": 0}, ValueError, r"Expected `min_replies` >= 1, but got 0\."),
        ({"evaluate_every": -1}, ValueError, r"Expected `evaluate_every` >= 1, but got -1\."),
        ({"round_timeout": 0.0}, ValueError, r"Expected `round_timeout` > 0, but got 0.0\."),
        ({"evaluate_participants": 1.5}, ValueError, r"Expected `evaluate_participants` in \[0, 1\], but got 1.5\."),
        (
            {"evaluate_participants": "all"},
            TypeError,
            r"Expected `evaluate_participants` to be int or float, but got str",
        ),
        ({"round_timeout": float("inf")}, ValueError, r"Expected a finite `round_timeout`, but got inf\."),
        ({"seed": True}, TypeError, r"Expected `seed` to be int, but got bool True\."),
        ({"transfer": "int8"}, ValueError, r"Expected `transfer` to be one of 'float32', 'float16', but got 'int8'\."),
        ({"personal": "head"}, TypeError, r"Expected `personal` to be list or tuple, but got str 'head'\."),
        ({"personal": [3]}, TypeError, r"Expected `personal` to be str, but got int 3\."),
        ({"start_round": -1}, ValueError, r"Expected `start_round` >= 0, but got -1\."),
        (
            {"start_round": 3},
            ValueError,
            r"Expected `rounds` > 3, the rounds already done \(`start_round`\), but got 3\.",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(arguments, error, match):
    with pytest.raises(error, match=match):
        RunSettings(**{"rounds": 3, "local_steps": 2, **arguments})


def test_settings_record_as_plain_data_without_the_start_round():
    settings = RunSettings(rounds=5, local_steps=2, evaluate_every=2, personal=["head.weight"], start_round=1)
    assert settings.personal == ("head.weight",)
    assert settings.record() == {
        "rounds": 5,
        "local_steps": 2,
        "min_replies": 1,
        "round_timeout": 3600.0,
        "evaluate_every": 2,
        "evaluate_participants": 0.0,
        "seed": 0,
        "transfer": "float32",
        "personal": ["head.weight"],
    }
    assert [r for r in range(1, 6) if settings.evaluates(r)] == [2, 4, 5]  # and after the last


def test_the_participants_evaluated_are_a_seeded_sample_of_round_share_of_the_training_clients():
    settings = RunSettings(rounds=3, local_steps=1, evaluate_participants=0.0125, seed=4)
    clients = list(range(800))
    first = settings.participants(clients, 1)
    assert len(first) == 10 and first == sorted(set(first)) and set(first) <= set(clients)  # 0.0125 * 800
    assert settings.participants(list(reversed(clients)), 1) == first  # whatever order the ids come in
    assert settings.participants(clients, 2) != first  # another round, another sample
    other_seed = RunSettings(rounds=3, local_steps=1, evaluate_participants=0.0125, seed=5)
    assert other_seed.participants(clients, 1) != first
    assert len(RunSettings(rounds=3, local_steps=1, evaluate_participants=0.001).participants(clients, 1)) == 1
    assert RunSettings(rounds=3, local_steps=1, evaluate_participants=1.0).participants([3, 1, 2], 1) == [1, 2, 3]
    assert RunSettings(rounds=3, local_steps=1).participants(clients, 1) == []  # 0: none


def test_the_clients_are_recorded_by_counts_and_a_digest_of_their_roles():
    roles = ["train", "train", "test", "both"]
    expected = {"train": 2, "test": 1, "both": 1, "sha256": hashlib.sha256(b"train\ntrain\ntest\nboth\n").hexdigest()}
    assert role_summary(roles) == expected
    # The per-client dict of the checkpoints written before summaries gives the same summary.
    assert role_summary({"0": "train", "1": "train", "2": "test", "3": "both"}) == expected
    assert role_summary(["train", "test", "train", "both"])["sha256"] != expected["sha256"]  # the order counts


def test_known_roles_come_from_the_data_with_the_checks_of_asked_ones():
    roles = known_roles({1000: 0, 1001: 1, 1002: 2}, ["train", "test", "both"].__getitem__)
    assert (roles.partition, roles.train, roles.test) == ({1000: 0, 1001: 1, 1002: 2}, [1000, 1002], [1001, 1002])
    with pytest.raises(FederationError, match=r"Expected one node per partition id, but got 2 nodes \(1000, 1001\)"):
        known_roles({1000: 0, 1001: 0}, lambda partition: "train")
    with pytest.raises(FederationError, match=r"Expected node 1000's role to be one of 'train', 'test', 'both'"):
        known_roles({1000: 0}, lambda partition: "Train")
    with pytest.raises(FederationError, match=r"Expected >= 1 training client among the 1 nodes, but got none\."):
        known_roles({1000: 0}, lambda partition: "test")


def test_a_strategy_that_would_wait_for_more_clients_than_there_are_is_refused():
    from flwr.serverapp.strategy import FedAvg

    roles = known_roles({1000: 0, 1001: 1, 1002: 2}, ["train", "train", "test"].__getitem__)
    check_strategy(FedAvg(min_train_nodes=2, min_evaluate_nodes=1, min_available_nodes=1), roles)
    with pytest.raises(ValueError, match=r"`min_evaluate_nodes` of FedAvg <= 1 test clients, but got 2\."):
        check_strategy(FedAvg(min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=1), roles)
