"""The search space of ``lit-meta tune``: YAML keyed by the ``lit-meta fit`` argument names.

.. code-block:: yaml

    model.init_args.inner_lr: {type: float, low: 1.0e-3, high: 1.0, log: true}
    model.init_args.inner_steps: {type: int, low: 1, high: 5}
    model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.init_args.ways: {type: categorical, choices: [5, 10]}

``float`` and ``int`` take ``low``, ``high`` and optionally ``log`` and ``step`` (Optuna's
``suggest_float`` / ``suggest_int``); ``categorical`` takes ``choices``. Whether each key names an
argument of the config, and whether each value fits its type, is checked against the ``lit-meta fit``
parser (:func:`lit_meta.tuning.fit_config.check_space`) before any trial runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("float", "int", "categorical")
_FIELDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


@dataclass(frozen=True)
class Dimension:
    """One searched argument.

    Args:
        key: the dotted ``lit-meta fit`` argument, e.g. ``"model.init_args.inner_lr"``.
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: the range of a number (inclusive).
        log: sample a number on a log scale.
        step: the grid step of a number (``None``: continuous floats, steps of 1 for ints).
        choices: the values of a categorical.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value Optuna's ``trial`` suggests for this argument."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def probes(self) -> list[Any]:
        """Values that must all fit the argument's type: the bounds, or every choice. A float's bounds
        go as floats: bounds written ``1`` and ``3`` would pass an ``int`` argument, and every
        trial's sample would then fail."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [self.low, self.high]
        return [float(self.low), float(self.high)]


def load_space(path: str | Path) -> list[Dimension]:
    """The dimensions of the search-space file ``path``; ``ValueError``/``TypeError`` naming the key on a mistake."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Expected a search-space YAML file, but got {str(path)!r} (no such file).")
    return parse_space(yaml.safe_load(path.read_text()), str(path))


def parse_space(raw: Any, source: str = "the search space") -> list[Dimension]:
    """The dimensions of a parsed search space ``{key: {type: ..., ...}}``."""
    if not isinstance(raw, dict) or not raw:
        raise TypeError(
            f"Expected {source} to map argument names to ranges, e.g. "
            f"'model.init_args.inner_lr: {{type: float, low: 0.001, high: 1.0}}', but got {raw!r}."
        )
    return [_dimension(str(key), spec) for key, spec in raw.items()]


def _dimension(key: str, spec: Any) -> Dimension:
    if not isinstance(spec, dict):
        raise TypeError(
            f"Expected `{key}` to be a mapping such as {{type: float, low: 0.001, high: 1.0}}, but got {spec!r}."
        )
    kind = spec.get("type")
    if kind not in KINDS:
        raise ValueError(f"Expected `{key}.type` to be one of {', '.join(map(repr, KINDS))}, but got {kind!r}.")
    unknown = sorted(set(spec) - _FIELDS[kind] - {"type"})
    if unknown:
        raise ValueError(
            f"Expected the fields of a {kind} `{key}` among {', '.join(sorted(_FIELDS[kind]))}, "
            f"but got {', '.join(unknown)}."
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise TypeError(f"Expected `{key}.choices` to be a non-empty list, but got {choices!r}.")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise TypeError(
                    f"Expected the choices of `{key}` to be numbers, strings, booleans or null, but got {choice!r}."
                )
        return Dimension(key, kind, choices=tuple(choices))
    numbers = (int,) if kind == "int" else (int, float)
    for field in ("low", "high"):
        value = spec.get(field)
        if isinstance(value, bool) or not isinstance(value, numbers):
            raise TypeError(
                f"Expected `{key}.{field}` to be {'an int' if kind == 'int' else 'a number'}, but got {value!r}."
            )
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for field, value in (("low", low), ("high", high)):
        if not math.isfinite(value):
            raise ValueError(f"Expected a finite `{key}.{field}`, but got {value}.")
    if low > high:
        raise ValueError(f"Expected `{key}.low` <= `{key}.high`, but got low {low} and high {high}.")
    if not isinstance(log, bool):
        raise TypeError(f"Expected `{key}.log` to be a boolean, but got {log!r}.")
    if log and low <= 0:
        raise ValueError(f"Expected `{key}.low` > 0 on a log scale, but got {low}.")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, numbers):
            raise TypeError(
                f"Expected `{key}.step` to be {'an int' if kind == 'int' else 'a number'}, but got {step!r}."
            )
        if not math.isfinite(step) or step <= 0:
            raise ValueError(f"Expected `{key}.step` > 0, but got {step!r}.")
        if log:
            raise ValueError(f"Expected either `{key}.log` or `{key}.step`, but got both.")
    return Dimension(key, kind, low=low, high=high, log=log, step=step)
