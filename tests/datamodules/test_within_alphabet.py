"""Evaluation tasks within one alphabet (Omniglot's one-shot benchmark of Lake et al., 2015)."""

import pytest
import torch

from datamodules import OmniglotDataModule
from datamodules.omniglot import alphabet
from tests.helpers.fabricate import omniglot_zip

# The evaluation archive's alphabets: 6, 4 and 2 characters; training has 3 alphabets of 4.
SIZES = (6, 4, 2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("omniglot"))
    omniglot_zip(folder, "images_background_small1", alphabets=3, characters=4)
    omniglot_zip(folder, "images_background_small2", characters=SIZES)
    return folder


def omniglot(data_dir, **options) -> OmniglotDataModule:
    options = {"eval_shots": 1, "eval_queries": 2, "test_tasks": 12, "meta_batch_size": 4} | options
    return OmniglotDataModule(data_dir, split="minimal", download=False, **options)


def task_alphabets(data: OmniglotDataModule) -> list[set[str]]:
    """The alphabets of each test task's support images, found by image content."""
    data.setup("test")
    owner = {
        image.numpy().tobytes(): alphabet(character)
        for character in data._split_characters()["test"]
        for image in character.images
    }
    episodes = data.episodes("test")
    tasks = [episodes.task(key) for key in data.eval_task_keys("test")]
    return [{owner[(x * 255).round().to(torch.uint8).numpy().tobytes()] for x in t.support_x[0]} for t in tasks]


def test_every_task_is_within_one_alphabet_and_the_alphabets_take_turns(data_dir):
    alphabets = task_alphabets(omniglot(data_dir, eval_ways=3, eval_within_alphabet=True))
    assert all(len(a) == 1 for a in alphabets)
    # The 2-character alphabet cannot give a 3-way task; the other two alternate, task by task.
    assert [a.pop() for a in alphabets] == ["Alphabet_0", "Alphabet_1"] * 6


def test_across_alphabets_tasks_mix_them(data_dir):
    # The control: without the option, 4-way tasks over 12 characters of three alphabets mix them.
    assert max(len(a) for a in task_alphabets(omniglot(data_dir, eval_ways=4))) > 1


def test_named_alphabets_give_tasks_of_all_their_characters(data_dir):
    data = omniglot(data_dir, eval_ways=4, eval_within_alphabet=True, eval_alphabets=["Alphabet_1"])
    alphabets = task_alphabets(data)
    assert alphabets == [{"Alphabet_1"}] * 12
    task = data.episodes("test").task(data.eval_task_keys("test")[0])
    assert task.support_y.unique().tolist() == [0, 1, 2, 3]  # all four of its characters
    assert data.eval_tasks() == {"within": "alphabet", "alphabets": ["Alphabet_1"]}
    assert omniglot(data_dir).eval_tasks() == {"within": None, "alphabets": None}


def test_tasks_are_fixed_by_their_keys(data_dir):
    first = omniglot(data_dir, eval_ways=3, eval_within_alphabet=True)
    second = omniglot(data_dir, eval_ways=3, eval_within_alphabet=True)
    for data in (first, second):
        data.setup("test")
    keys = first.eval_task_keys("test")
    for key in keys[:4]:
        for a, b in zip(first.episodes("test").task(key), second.episodes("test").task(key)):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"eval_ways": 7, "eval_within_alphabet": True},
            ValueError,
            r"Expected a group with >= 7 classes \(`ways`\) for tasks within one group in split 'test', but got at "
            r"most 6 \(in 'Alphabet_0'\)\.",
        ),
        (
            {"eval_alphabets": ["Alphabet_9"]},
            ValueError,
            r"Expected `eval_alphabets` among the alphabets of split 'val' \(Alphabet_0, Alphabet_1, Alphabet_2\), "
            r"but got 'Alphabet_9'\.",
        ),
        ({"eval_alphabets": []}, ValueError, r"Expected `eval_alphabets` to name at least one alphabet"),
        ({"eval_alphabets": "Alphabet_0"}, TypeError, r"Expected `eval_alphabets` to be list or tuple, but got str"),
        ({"eval_within_alphabet": 1}, TypeError, r"Expected `eval_within_alphabet` to be bool, but got int 1\."),
    ],
)
def test_bad_within_alphabet_options_are_refused(data_dir, options, error, match):
    with pytest.raises(error, match=match):
        omniglot(data_dir, **options).setup("test")


def test_training_tasks_within_one_alphabet_and_rotation(data_dir):
    data = omniglot(data_dir, ways=3, train_within_alphabet=True)
    data.setup("fit")
    episodes = data.episodes("train")
    # Three training alphabets, each in four rotations: twelve groups of four characters.
    assert episodes.groups[:4] == ["Alphabet_0", "Alphabet_1", "Alphabet_2", "Alphabet_0 (rotated 90)"]
    assert len(episodes.groups) == 12
    _, labels, class_names = data.split_data("train")
    groups = dict(zip(class_names, data.class_groups("train")))
    owner = {}
    dataset, _, _ = data.split_data("train")
    for index in range(len(dataset)):
        image, label = dataset[index]
        owner[image.numpy().tobytes()] = groups[class_names[label]]
    drawn = set()
    for step in range(30):
        task = episodes.task((0, 0, step, 0))
        alphabets = {owner[x.numpy().tobytes()] for x in task.support_x[0]}
        assert len(alphabets) == 1
        drawn |= alphabets
    assert len(drawn) > 6  # the groups are drawn by key, not always the first
