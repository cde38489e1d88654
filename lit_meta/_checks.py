"""Argument validation shared by every lit-meta class.

One message template everywhere: "Expected `ways` <= 136 classes in split 'train', but got 200."
`ValueError` for bad values, `TypeError` for bad types.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any


def _check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    # bool is an int subclass; `shots: True` is a typo, not a count.
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise TypeError(f"Expected `{name}` to be {_type_name(expected)}, but got bool {value!r}.")
    if not isinstance(value, expected):
        raise TypeError(f"Expected `{name}` to be {_type_name(expected)}, but got {type(value).__name__} {value!r}.")


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    _check_type(name, value, int)
    if value < minimum:
        raise ValueError(f"Expected `{name}` >= {minimum}, but got {value}.")


def _check_positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    _check_type(name, value, (int, float))
    if not math.isfinite(value):
        raise ValueError(f"Expected a finite `{name}`, but got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Expected `{name}` {bound}, but got {value}.")


def _check_unit_interval(name: str, value: Any) -> None:
    """A number in ``[0, 1]`` (a weight or a probability)."""
    _check_type(name, value, (int, float))
    if not 0 <= value <= 1:
        raise ValueError(f"Expected `{name}` in [0, 1], but got {value}.")


def _check_one_of(name: str, value: Any, choices: Collection[Any]) -> None:
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected `{name}` to be one of {options}, but got {value!r}.")


def _check_range(name: str, value: Any) -> None:
    """A (low, high) pair of numbers with low <= high."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"Expected `{name}` to be a (low, high) pair, but got {value!r}.")
    low, high = value
    if low > high:
        raise ValueError(f"Expected `{name}` low <= high, but got ({low}, {high}).")


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__
