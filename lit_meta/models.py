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
