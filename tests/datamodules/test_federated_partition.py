"""Clients cut from an episodic datamodule: by alphabet (and drawer), or by a Dirichlet label skew."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules import OmniglotDataModule
from datamodules.federated import ClientPartition, class_groups, dirichlet_split
from tests.helpers.fabricate import minimal_omniglot


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    """small1 and small2 with 2 alphabets of 6 characters each (20 drawers), no image in common."""
    return minimal_omniglot(str(tmp_path_factory.mktemp("omniglot")), characters=6)


def _omniglot(folder: str, **episode) -> OmniglotDataModule:
    shape = dict(ways=3, shots=1, queries=2, meta_batch_size=2, train_batches_per_epoch=3, test_tasks=4)
    return OmniglotDataModule(data_dir=folder, split="minimal", download=False, **{**shape, **episode})


def _images(task) -> set[bytes]:
    return {image.numpy().tobytes() for part in (task.support_x, task.query_x) for image in part.flatten(0, 1)}


def _client_images(partition: ClientPartition, partition_id: int) -> set[bytes]:
    dataset, _, _ = partition(partition_id, 0).build_split(
        "train" if partition.role(partition_id) == "train" else "test"
    )
    return {dataset[i][0].numpy().tobytes() for i in range(len(dataset))}


def test_class_groups_are_parent_paths_and_rotations_stay_with_their_alphabet():
    names = ["a/Greek/c1", "a/Greek/c2", "a/Latin/c1", "a/Greek/c1 (rotated 90)", "plain"]
    assert class_groups(names) == {"a/Greek": [0, 1, 3], "a/Latin": [2], "plain": [4]}


def test_alphabets_are_clients_training_ones_from_small1_test_ones_from_small2(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir))
    names = [share.name for share in partition.shares()]
    assert names == [
        "images_background_small1/Alphabet_0",
        "images_background_small1/Alphabet_1",
        "images_background_small2/Alphabet_0",
        "images_background_small2/Alphabet_1",
    ]
    assert [partition.role(i) for i in range(4)] == ["train", "train", "test", "test"]
    assert (partition.num_clients, partition.num_train_clients, partition.num_test_clients) == (4, 2, 2)
    # 6 characters x 4 rotations x 20 drawers per training alphabet; test alphabets unrotated.
    assert [len(share.indices) for share in partition.shares()] == [480, 480, 120, 120]
    assert partition(0, 1).num_examples == 480
    assert partition(2, 1).num_examples == 0


def test_clients_hold_disjoint_images_and_draw_tasks_only_from_their_own(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir))
    own = [_client_images(partition, i) for i in range(4)]
    assert all(own[i].isdisjoint(own[j]) for i in range(4) for j in range(i + 1, 4))
    client = partition(1, server_round=3)
    client.setup("fit")
    batch = next(iter(client.train_dataloader()))
    assert _images(batch) <= own[1]
    tester = partition(3, server_round=3)
    tester.setup("test")
    assert _images(next(iter(tester.test_dataloader()))) <= own[3]


def test_tasks_repeat_for_the_same_client_and_round_and_differ_otherwise(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir))

    def first_batch(partition_id, server_round, stage="fit"):
        client = partition(partition_id, server_round)
        client.setup(stage)
        loader = client.train_dataloader() if stage == "fit" else client.test_dataloader()
        return next(iter(loader)).support_x

    assert torch.equal(first_batch(0, 2), first_batch(0, 2))
    assert not torch.equal(first_batch(0, 2), first_batch(0, 3))
    # A test client's evaluation tasks are the same every round, so rounds compare like with like.
    assert torch.equal(first_batch(2, 1, "test"), first_batch(2, 5, "test"))


def test_pooled_is_one_training_client_with_the_same_test_clients(omniglot_dir):
    pooled = ClientPartition(_omniglot(omniglot_dir), scheme="pooled")
    grouped = ClientPartition(_omniglot(omniglot_dir))
    assert [s.name for s in pooled.shares()] == ["pooled training data"] + [s.name for s in grouped.shares()[2:]]
    assert pooled.shares()[0].indices == list(range(960))
    assert pooled.shares()[1:] == grouped.shares()[2:]


def test_splits_per_group_cuts_each_alphabet_by_drawer(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, queries=4), splits_per_group=4)
    train = [s for s in partition.shares() if s.role == "train"]
    assert [s.name for s in train[:2]] == [
        "images_background_small1/Alphabet_0 [1/4]",
        "images_background_small1/Alphabet_0 [2/4]",
    ]
    assert len(train) == 8 and partition.num_test_clients == 2
    # Every training sample is in exactly one client; each holds 5 drawers of each of its 24 classes.
    every = sorted(i for s in train for i in s.indices)
    assert every == list(range(960))
    _, labels, _ = partition.data.split_data("train")
    counts = np.bincount([labels[i] for i in train[0].indices])
    assert set(counts[counts > 0]) == {5} and (counts > 0).sum() == 24


def test_a_client_with_too_few_classes_is_refused_before_training(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, eval_ways=7))
    with pytest.raises(
        ValueError,
        match=r"Expected `ways` <= 6 classes in split 'test of client 2 \(images_background_small2/Alphabet_0\)', "
        r"but got 7\.",
    ):
        partition.shares()


def test_drawer_groups_too_small_for_the_task_are_refused(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, queries=5), splits_per_group=4)
    with pytest.raises(ValueError, match=r"Expected `ways` <= 0 classes in split 'train of client 0 "):
        partition.shares()


def test_an_unknown_partition_id_is_refused(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir))
    with pytest.raises(
        ValueError, match=r"Expected a `partition-id` in \[0, 4\) \(2 training and 2 test clients\), but got 4"
    ):
        partition(4, 1)


def test_a_training_client_holds_out_the_last_drawers_and_evaluates_its_participant_tasks_on_them(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, eval_queries=15), local_test_fraction=0.25)
    dataset, labels, _ = partition.data.split_data("train")
    share = partition.shares()[1]
    # Each of the client's 24 classes: 20 drawers in sample order, the last 5 held out.
    position = {}  # image -> its drawer (its rank among its class's samples)
    for label in {labels[i] for i in share.indices}:
        members = [i for i in share.indices if labels[i] == label]
        assert len(members) == 20
        position.update({dataset[i][0].numpy().tobytes(): rank for rank, i in enumerate(members)})
    client = partition(1, server_round=2)
    assert client.num_examples == 24 * 15
    client.setup("fit")
    trained = set()
    for _, batch in zip(range(3), client.train_dataloader()):
        trained |= _images(batch)
    assert {position[image] for image in trained} <= set(range(15))  # drawers 1-15 only
    participant = partition.participant_tasks(1)
    participant.setup("test")
    tasks = list(participant.test_dataloader())
    assert sum(t.num_tasks for t in tasks) == 4
    for task in tasks:
        # 3-way 1-shot (the test tasks' shape), min(eval_queries 15, 5 held-out drawers) = 5 queries a class.
        assert task.support_x.shape[1] == 3 and task.query_x.shape[1] == 15
        assert task.query_y[0].tolist() == [0] * 5 + [1] * 5 + [2] * 5
        assert {position[x.numpy().tobytes()] for x in task.support_x.flatten(0, 1)} <= set(range(15))
        assert {position[x.numpy().tobytes()] for x in task.query_x.flatten(0, 1)} <= set(range(15, 20))
    again = partition.participant_tasks(1)
    again.setup("test")
    assert torch.equal(next(iter(again.test_dataloader())).query_x, tasks[0].query_x)  # the same every round
    with pytest.raises(ValueError, match=r"Expected a training client for a participant evaluation, but got client 2"):
        partition.participant_tasks(2)
    with pytest.raises(ValueError, match=r"Expected `local_test_fraction` > 0 \(training clients holding local test"):
        ClientPartition(_omniglot(omniglot_dir)).participant_tasks(0)


def test_a_client_too_small_for_its_participant_tasks_is_refused_before_training(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, eval_shots=17), local_test_fraction=0.25)
    with pytest.raises(
        ValueError,
        match=r"Expected client 0 \(images_background_small1/Alphabet_0\) to hold >= 3 classes \(`eval_ways`\) with "
        r">= 17 training and 2 local test samples each for its participant tasks, but got 0\.",
    ):
        partition.shares()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"scheme": "alphabet"},
            ValueError,
            r"Expected `scheme` to be one of 'groups', 'pooled', 'dirichlet', but got 'alphabet'",
        ),
        ({"splits_per_group": 0}, ValueError, r"Expected `splits_per_group` >= 1, but got 0"),
        ({"alpha": 0.0}, ValueError, r"Expected `alpha` > 0, but got 0.0"),
        ({"data": "omniglot"}, TypeError, r"Expected `data` to be EpisodicDataModule, but got str"),
        ({"local_test_fraction": 1}, ValueError, r"Expected `local_test_fraction` < 1 \(a training client trains"),
    ],
)
def test_bad_arguments_are_refused(omniglot_dir, kwargs, error, match):
    with pytest.raises(error, match=match):
        ClientPartition(**{"data": _omniglot(omniglot_dir), **kwargs})


def test_dirichlet_split_gives_every_sample_to_one_client_and_repeats_for_a_seed():
    labels = [label for label in range(10) for _ in range(40)]
    parts = dirichlet_split(labels, clients=4, alpha=0.5, seed=3)
    assert sorted(i for part in parts for i in part) == list(range(400))
    assert parts == dirichlet_split(labels, clients=4, alpha=0.5, seed=3)
    assert parts != dirichlet_split(labels, clients=4, alpha=0.5, seed=4)


def test_dirichlet_concentration_controls_the_label_skew():
    labels = [label for label in range(20) for _ in range(100)]

    def skew(alpha):  # mean over clients of the largest class's share of the client's samples
        shares = []
        for part in dirichlet_split(labels, clients=5, alpha=alpha, seed=0):
            counts = np.bincount([labels[i] for i in part], minlength=20)
            shares.append(counts.max() / counts.sum())
        return float(np.mean(shares))

    assert skew(100.0) < 0.08 < 0.25 < skew(0.1)  # near IID (1/20 = 0.05) vs a few classes per client


def test_dirichlet_clients_of_omniglot_train_and_test(omniglot_dir):
    partition = ClientPartition(
        _omniglot(omniglot_dir), scheme="dirichlet", train_clients=3, test_clients=2, alpha=100.0
    )
    assert [partition.role(i) for i in range(5)] == ["train"] * 3 + ["test"] * 2
    client = partition(0, 1)
    client.setup("fit")
    assert _images(next(iter(client.train_dataloader()))) <= _client_images(partition, 0)


def test_global_labels_name_each_training_sample_by_its_class_in_the_training_split(omniglot_dir):
    partition = ClientPartition(_omniglot(omniglot_dir, global_labels=True))
    dataset, labels, names = partition.data.split_data("train")
    by_image = {dataset[i][0].numpy().tobytes(): labels[i] for i in range(len(dataset))}
    client = partition(1, server_round=2)
    client.setup("fit")
    batch = next(iter(client.train_dataloader()))
    for images, targets in ((batch.support_x, batch.support_y), (batch.query_x, batch.query_y)):
        assert [by_image[x.numpy().tobytes()] for x in images.flatten(0, 1)] == targets.flatten().tolist()
    # Training classes run character by character within each rotation (12 characters): client 1 holds
    # the second alphabet's characters 6..11 and their rotations.
    assert all(label % 12 >= 6 for label in batch.query_y.flatten().tolist())
    tester = partition(2, server_round=2)
    tester.setup("test")
    assert set(next(iter(tester.test_dataloader())).query_y.flatten().tolist()) == {0, 1, 2}  # tasks' own 0..ways-1
