import pytest
import torch

from lit_meta import split_support_query


def test_classification_split_groups_by_class_in_original_order():
    # Two tasks, 3 ways, 1 shot + 2 queries, labels shuffled; x encodes (label, order of appearance).
    y = torch.tensor([[2, 0, 1, 0, 2, 1, 1, 2, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2]])
    x = torch.arange(18, dtype=torch.float).view(2, 9, 1)
    task = split_support_query(x, y, shots=1, queries=2, ways=3)
    assert task.support_y.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert task.query_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 2
    # First occurrence of each class is support, next ones are query, in order.
    assert task.support_x[0, :, 0].tolist() == [1, 2, 0]
    assert task.query_x[0, :, 0].tolist() == [3, 8, 5, 6, 4, 7]
    assert task.support_x[1, :, 0].tolist() == [9, 12, 15]
    assert task.query_x.shape == (2, 6, 1)


def test_regression_split_takes_first_shots_as_support():
    x = torch.arange(10.0).view(1, 10, 1)
    task = split_support_query(x, -x, shots=3, queries=5)
    assert task.support_x[0, :, 0].tolist() == [0, 1, 2]
    assert task.query_x[0, :, 0].tolist() == [3, 4, 5, 6, 7]
    assert torch.equal(task.query_y, -task.query_x)


def test_images_keep_their_shape():
    x = torch.randn(4, 5 * 3, 1, 28, 28)
    y = torch.arange(5).repeat(3).expand(4, -1)
    task = split_support_query(x, y, shots=1, queries=2, ways=5)
    assert task.support_x.shape == (4, 5, 1, 28, 28)
    assert task.query_x.shape == (4, 10, 1, 28, 28)
    # The image travels with its label.
    first_of_class_3 = (y[0] == 3).nonzero()[0].item()
    assert torch.equal(task.support_x[0, 3], x[0, first_of_class_3])


def test_wrong_class_counts_name_the_numbers():
    y = torch.tensor([[0, 0, 1]])
    with pytest.raises(
        ValueError, match=r"Expected every task to hold 2 samples .* of each of its 2 classes.*\[\[2, 1\]\]"
    ):
        split_support_query(torch.randn(1, 3, 1), y, shots=1, queries=1, ways=2)


def test_label_outside_ways_is_rejected():
    with pytest.raises(ValueError, match=r"labelled 0\.\.1, but got label counts \[\[1, 1, 2\]\]"):
        split_support_query(torch.randn(1, 4, 1), torch.tensor([[0, 1, 2, 2]]), shots=1, queries=1, ways=2)


def test_bad_shots_and_shapes():
    with pytest.raises(ValueError, match=r"Expected `shots` >= 1, but got -1"):
        split_support_query(torch.randn(1, 4, 1), torch.randn(1, 4, 1), shots=-1, queries=1)
    with pytest.raises(TypeError, match=r"Expected `queries` to be int, but got float 1.5"):
        split_support_query(torch.randn(1, 4, 1), torch.randn(1, 4, 1), shots=1, queries=1.5)
    with pytest.raises(ValueError, match=r"same B and N, but got shapes \(4,\) and \(4,\)"):
        split_support_query(torch.randn(4), torch.randn(4), shots=1, queries=1)
    with pytest.raises(ValueError, match=r"same B and N, but got shapes \(2, 4, 1\) and \(2, 3, 1\)"):
        split_support_query(torch.randn(2, 4, 1), torch.randn(2, 3, 1), shots=1, queries=1)
    with pytest.raises(ValueError, match=r"Expected >= 5 samples per task .* but got 4"):
        split_support_query(torch.randn(1, 4, 1), torch.randn(1, 4, 1), shots=2, queries=3)


def reference_split(x, y, shots, queries, ways):
    """Each task's samples of class c in their order: the first `shots` support, the next `queries` query."""
    parts = [[], [], [], []]
    for xb, yb in zip(x, y):
        support = [i for c in range(ways) for i in (yb == c).nonzero()[:, 0].tolist()[:shots]]
        query = [i for c in range(ways) for i in (yb == c).nonzero()[:, 0].tolist()[shots : shots + queries]]
        for part, values in zip(parts, (xb[support], yb[support], xb[query], yb[query])):
            part.append(values)
    return [torch.stack(part) for part in parts]


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize(("batch", "ways", "shots", "queries"), [(1, 5, 1, 5), (4, 3, 2, 1), (3, 1, 1, 2)])
def test_classification_split_is_byte_identical_to_a_reference(batch, ways, shots, queries, grouped):
    generator = torch.Generator().manual_seed(batch * 100 + ways * 10 + shots)
    labels = torch.arange(ways).repeat_interleave(shots + queries)
    y = torch.stack(
        [labels if grouped else labels[torch.randperm(len(labels), generator=generator)] for _ in range(batch)]
    )
    x = torch.randn(batch, len(labels), 1, 4, 4, generator=generator)
    task = split_support_query(x, y, shots, queries, ways)
    for got, expected in zip(task, reference_split(x, y, shots, queries, ways)):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        assert got.numpy().tobytes() == expected.numpy().tobytes()


def test_negative_labels_are_named():
    with pytest.raises(ValueError, match=r"but got label counts negative labels \(min -1\)"):
        split_support_query(torch.randn(1, 4, 1), torch.tensor([[0, 1, -1, 1]]), shots=1, queries=1, ways=2)
