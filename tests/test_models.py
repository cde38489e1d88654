import pytest
import torch

from lit_meta.models import CNN4, MLP


@pytest.mark.parametrize(("downsample", "image_size", "features"), [("maxpool", 28, 64), ("stride", 28, 64 * 2 * 2), ("maxpool", 84, 64 * 5 * 5)])
def test_cnn4_shapes(downsample, image_size, features):
    net = CNN4(in_channels=3, out_features=7, image_size=image_size, downsample=downsample)
    x = torch.randn(4, 3, image_size, image_size)
    assert net.features(x).shape == (4, features)
    assert net(x).shape == (4, 7)


def test_cnn4_normalises_each_batch_by_itself_in_eval_mode_too():
    net = CNN4(hidden=8).eval()
    x = torch.randn(6, 1, 28, 28)
    # No running statistics: a sample's output depends on the batch it is in, as in MAML.
    assert not torch.allclose(net(x)[:3], net(x[:3]))
    assert not any(name.endswith("running_mean") for name, _ in net.named_buffers())


def test_cnn4_arguments():
    with pytest.raises(ValueError, match=r"Expected `image_size` >= 16 for 4 pooling blocks, but got 8\."):
        CNN4(image_size=8)
    with pytest.raises(ValueError, match=r"Expected `downsample` to be one of 'maxpool', 'stride', but got 'avg'\."):
        CNN4(downsample="avg")


def test_mlp_has_features_and_head():
    net = MLP(1, (40, 40), 1)
    assert net.head.in_features == 40 and net(torch.zeros(5, 1)).shape == (5, 1)
