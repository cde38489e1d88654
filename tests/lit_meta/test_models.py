import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from lit_meta.models import CNN4, MLP, ResNet12


@pytest.mark.parametrize(
    ("downsample", "downsample_last", "image_size", "features"),
    [
        ("maxpool", True, 28, 64),
        ("stride", True, 28, 64 * 2 * 2),
        ("maxpool", True, 84, 64 * 5 * 5),
        ("maxpool", False, 28, 64 * 3 * 3),
        ("stride", False, 28, 64 * 4 * 4),
    ],
)
def test_cnn4_shapes(downsample, downsample_last, image_size, features):
    net = CNN4(
        in_channels=3, out_features=7, image_size=image_size, downsample=downsample, downsample_last=downsample_last
    )
    x = torch.randn(4, 3, image_size, image_size)
    assert net.features(x).shape == (4, features)
    assert net(x).shape == (4, 7)


def test_cnn4_without_the_last_downsampling_has_the_same_weights():
    pooled, kept = CNN4(hidden=16), CNN4(hidden=16, downsample_last=False)
    assert [p.shape for p in pooled.features.parameters()] == [p.shape for p in kept.features.parameters()]
    assert sum(isinstance(m, nn.MaxPool2d) for m in kept.features) == 3


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
    with pytest.raises(ValueError, match=r"Expected `image_size` >= 8 for 3 pooling blocks, but got 7\."):
        CNN4(image_size=7, downsample_last=False)
    with pytest.raises(TypeError, match=r"Expected `downsample_last`"):
        CNN4(downsample_last="no")


def test_mlp_has_features_and_head():
    net = MLP(1, (40, 40), 1)
    assert net.head.in_features == 40 and net(torch.zeros(5, 1)).shape == (5, 1)


@pytest.mark.parametrize(
    ("in_channels", "image_size", "channels"), [(3, 84, (64, 160, 320, 640)), (1, 28, (8, 16, 16, 32))]
)
def test_resnet12_shapes(in_channels, image_size, channels):
    net = ResNet12(in_channels=in_channels, out_features=7, channels=channels, image_size=image_size)
    x = torch.randn(2, in_channels, image_size, image_size)
    features = net.features(x)
    assert features.shape == (2, channels[-1]) == (2, net.head.in_features)
    assert net(x).shape == (2, 7)


def test_resnet12_has_the_standard_parameters():
    net = ResNet12()
    # Per block: three bias-free 3x3 convs, a bias-free 1x1 shortcut, four BatchNorms (weight, bias).
    expected, width = 0, 3
    for size in (64, 160, 320, 640):
        expected += 9 * width * size + 2 * 9 * size * size + width * size + 4 * 2 * size
        width = size
    expected += 640 * 5 + 5
    assert sum(p.numel() for p in net.parameters()) == expected  # 12.4M, as in Lee et al. (2019)
    assert not any(name.endswith("running_mean") for name, _ in net.named_buffers())
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1} and not any(isinstance(m, nn.ReLU) for m in net.modules())


def test_resnet12_normalises_each_batch_by_itself_in_eval_mode_too():
    net = ResNet12(channels=(4, 8), image_size=8).eval()
    x = torch.randn(6, 3, 8, 8)
    assert not torch.allclose(net(x)[:3], net(x[:3]))


def test_resnet12_dropout_only_before_the_head():
    net = ResNet12(channels=(4, 8), image_size=8, dropout=0.5).train()
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(net.features(x), net.features(x))
    assert not torch.allclose(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net.head(net.features(x)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, r"Expected `in_channels` >= 1, but got 0\."),
        ({"out_features": 0}, r"Expected `out_features` >= 1, but got 0\."),
        ({"channels": ()}, r"Expected `channels` to have at least 1 block, but got \(\)\."),
        ({"channels": (64, 0)}, r"Expected `channels` >= 1, but got 0\."),
        ({"image_size": 8}, r"Expected `image_size` >= 16 for 4 pooling blocks, but got 8\."),
        ({"image_size": 0}, r"Expected `image_size` >= 1, but got 0\."),
        ({"dropout": -0.1}, r"Expected `dropout` >= 0, but got -0\.1\."),
        ({"dropout": 1.0}, r"Expected `dropout` < 1, but got 1\.0\."),
    ],
)
def test_resnet12_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet12(**kwargs)


def test_resnet12_vmap_grad_matches_a_loop_over_tasks():
    torch.manual_seed(0)
    net = ResNet12(channels=(4, 8, 8, 8), image_size=16, out_features=3)
    params = dict(net.named_parameters())
    xs, ys = torch.randn(2, 6, 3, 16, 16), torch.randint(0, 3, (2, 6))

    def loss(p, x, y):
        return nn.functional.cross_entropy(functional_call(net, p, (x,)), y)

    batched = vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
    for task in range(2):
        looped = torch.autograd.grad(loss(params, xs[task], ys[task]), list(params.values()))
        for (name, g_batched), g_looped in zip(batched.items(), looped):
            assert g_batched.shape == (2, *params[name].shape)
            torch.testing.assert_close(g_batched[task], g_looped, atol=1e-5, rtol=1e-4)
    # The tasks differ, so their gradients must too (a vmap that mixed them would not pass above).
    assert not torch.allclose(batched["head.weight"][0], batched["head.weight"][1])
