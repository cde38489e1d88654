"""Backbone networks. Each exposes ``features`` (the body) and ``head`` (the last layer)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_meta._checks import _check_one_of, _check_positive_int

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected network; ``MLP(1, (40, 40), 1)`` is the sinusoid model of Finn et al. (2017).

    Args:
        in_features: size of each input.
        hidden: widths of the hidden layers.
        out_features: size of each output (classes, for classification).
        activation: nonlinearity after each hidden layer.

    Shape:
        ``(*, in_features) -> (*, out_features)``.
    """

    def __init__(
        self,
        in_features: int = 1,
        hidden: tuple[int, ...] = (40, 40),
        out_features: int = 1,
        activation: Literal["relu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        _check_positive_int("in_features", in_features)
        _check_positive_int("out_features", out_features)
        for width in hidden:
            _check_positive_int("hidden", width)
        _check_one_of("activation", activation, tuple(_ACTIVATIONS))
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), _ACTIVATIONS[activation]()]
            width = size
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class CNN4(nn.Module):
    """The standard few-shot convolutional network (Vinyals et al., 2016; Finn et al., 2017).

    ``blocks`` times [3x3 conv (``hidden`` filters, padding 1), BatchNorm, ReLU, 2x2 max-pool], then a
    linear ``head``. With ``downsample="stride"`` the convolutions have stride 2 instead of the
    max-pool, as MAML's Omniglot network (Finn et al., 2017): about 4x fewer operations. BatchNorm always normalises with the statistics of the batch at hand (no running
    statistics), as MAML does: a task's support and query sets are normalised by themselves, in
    training and in evaluation alike.

    Args:
        in_channels: 1 (Omniglot) or 3 (RGB).
        out_features: classes per task (``ways``).
        hidden: filters per convolution (64 in the papers; 32 for MAML on mini-ImageNet).
        blocks: number of conv blocks.
        image_size: input height and width (28 for Omniglot, 84 for mini-ImageNet).
        downsample: ``"maxpool"`` or ``"stride"`` (see above).

    Shape:
        ``(N, in_channels, image_size, image_size) -> (N, out_features)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_features: int = 5,
        hidden: int = 64,
        blocks: int = 4,
        image_size: int = 28,
        downsample: Literal["maxpool", "stride"] = "maxpool",
    ) -> None:
        super().__init__()
        _check_one_of("downsample", downsample, ("maxpool", "stride"))
        for name, value in (("in_channels", in_channels), ("out_features", out_features), ("hidden", hidden),
                            ("blocks", blocks), ("image_size", image_size)):  # fmt: skip
            _check_positive_int(name, value)
        if image_size < 2**blocks:
            raise ValueError(f"Expected `image_size` >= {2**blocks} for {blocks} pooling blocks, but got {image_size}.")
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for _ in range(blocks):
            stride = 2 if downsample == "stride" else 1
            layers += [
                nn.Conv2d(channels, hidden, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=False),
                nn.ReLU(),
            ]
            if downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            channels, side = hidden, (side + 1) // 2 if downsample == "stride" else side // 2
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden * side * side, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
