"""Backbone networks. Each exposes ``features`` (the body) and ``head`` (the last layer)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lit_meta.validation import check_one_of, check_positive_float, check_positive_int, check_type

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
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        for width in hidden:
            check_positive_int("hidden", width)
        check_one_of("activation", activation, tuple(_ACTIVATIONS))
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
    max-pool, as MAML's Omniglot network (Finn et al., 2017): about 4x fewer operations. BatchNorm
    always normalises with the statistics of the batch at hand (no running statistics), as MAML does:
    a task's support and query sets are normalised by themselves, in training and in evaluation alike.

    Args:
        in_channels: 1 (Omniglot) or 3 (RGB).
        out_features: classes per task (``ways``).
        hidden: filters per convolution (64 in the papers; 32 for MAML on mini-ImageNet).
        blocks: number of conv blocks.
        image_size: input height and width (28 for Omniglot, 84 for mini-ImageNet).
        downsample: ``"maxpool"`` or ``"stride"`` (see above).
        downsample_last: whether the last block downsamples too. ``False`` keeps the last block's map
            (3x3 for 28x28 inputs with max-pooling): a 16-filter network then embeds an image in 144
            dimensions instead of 16 with the same weights and, with max-pooling, the same
            convolutions: room for a small distillation student to take in its teacher's embedding.

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
        downsample_last: bool = True,
    ) -> None:
        super().__init__()
        check_one_of("downsample", downsample, ("maxpool", "stride"))
        check_type("downsample_last", downsample_last, bool)
        for name, value in (
            ("in_channels", in_channels),
            ("out_features", out_features),
            ("hidden", hidden),
            ("blocks", blocks),
            ("image_size", image_size),
        ):
            check_positive_int(name, value)
        pooling = blocks if downsample_last else blocks - 1
        if image_size < 2**pooling:
            raise ValueError(
                f"Expected `image_size` >= {2**pooling} for {pooling} pooling blocks, but got {image_size}."
            )
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for block in range(blocks):
            down = block < pooling
            stride = 2 if downsample == "stride" and down else 1
            layers += [
                nn.Conv2d(channels, hidden, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(hidden, track_running_stats=False),
                nn.ReLU(),
            ]
            if downsample == "maxpool" and down:
                layers.append(nn.MaxPool2d(2))
            if down:
                side = (side + 1) // 2 if downsample == "stride" else side // 2
            channels = hidden
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden * side * side, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class _ResidualBlock(nn.Module):
    """One ResNet-12 block: three [3x3 conv, BatchNorm] (LeakyReLU between), a 1x1 conv + BatchNorm
    shortcut, add, LeakyReLU, 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels, track_running_stats=False),
        )
        self.activation = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.activation(self.body(x) + self.shortcut(x)))


class ResNet12(nn.Module):
    """The few-shot ResNet-12 (Oreshkin et al., 2018; Lee et al., 2019).

    ``len(channels)`` residual blocks, each three [3x3 conv (no bias, padding 1), BatchNorm] with
    LeakyReLU(0.1) after the first two, plus a 1x1 conv + BatchNorm shortcut; the sum goes through
    LeakyReLU(0.1) and a 2x2 max-pool. Then global average pooling and a linear ``head``, so the
    embedding (``features``) has ``channels[-1]`` entries whatever the image size. BatchNorm always
    normalises with the statistics of the batch at hand (no running statistics), as MAML does: a
    task's support and query sets are normalised by themselves, in training and in evaluation alike.

    Args:
        in_channels: 1 (Omniglot) or 3 (RGB).
        out_features: classes per task (``ways``).
        channels: filters of each block (``(64, 160, 320, 640)`` in the papers).
        image_size: input height and width (28 for Omniglot, 84 for mini-ImageNet); only checked to
            be large enough for the ``len(channels)`` max-pools.
        dropout: probability of zeroing an embedding entry before the ``head`` (training mode only;
            ``features`` itself is deterministic). Dropout draws random numbers, so ``torch.func.vmap``
            (MAML's ``inner_loop`` ``"batched"``) refuses it in training mode: keep 0 there.

    Shape:
        ``(N, in_channels, image_size, image_size) -> (N, out_features)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_features: int = 5,
        channels: tuple[int, ...] = (64, 160, 320, 640),
        image_size: int = 84,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_features", out_features), ("image_size", image_size)):
            check_positive_int(name, value)
        if len(channels) == 0:
            raise ValueError(f"Expected `channels` to have at least 1 block, but got {channels!r}.")
        for width in channels:
            check_positive_int("channels", width)
        blocks = len(channels)
        if image_size < 2**blocks:
            raise ValueError(f"Expected `image_size` >= {2**blocks} for {blocks} pooling blocks, but got {image_size}.")
        check_positive_float("dropout", dropout, allow_zero=True)
        if dropout >= 1:
            raise ValueError(f"Expected `dropout` < 1, but got {dropout}.")
        layers: list[nn.Module] = []
        width = in_channels
        for size in channels:
            layers.append(_ResidualBlock(width, size))
            width = size
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))
