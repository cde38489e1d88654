"""Argument validation shared by every lit-meta class, and public for yours: a datamodule, learner or
callback written in the project's style validates its constructor arguments with these, once.

One message template everywhere: "Expected `ways` <= 136 classes in split 'train', but got 200."
`ValueError` for bad values, `TypeError` for bad types.

Example:
    >>> from lit_meta.validation import check_positive_int
    >>> check_positive_int("shots", 0)
    Traceback (most recent call last):
    ...
    ValueError: Expected `shots` >= 1, but got 0.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = [
    "check_one_of",
    "check_positive_float",
    "check_positive_int",
    "check_range",
    "check_type",
    "check_unit_interval",
]


def check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` unless ``value`` (the argument ``name``) is an instance of ``expected``; a
    ``bool`` is no ``int`` here (``shots: true`` is a typo, not a count)."""
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        raise TypeError(f"Expected `{name}` to be {_type_name(expected)}, but got bool {value!r}.")
    if not isinstance(value, expected):
        raise TypeError(f"Expected `{name}` to be {_type_name(expected)}, but got {type(value).__name__} {value!r}.")


def check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise unless ``value`` is an ``int`` >= ``minimum`` (``TypeError`` for another type, ``ValueError``
    for a smaller one)."""
    check_type(name, value, int)
    if value < minimum:
        raise ValueError(f"Expected `{name}` >= {minimum}, but got {value}.")


def check_positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite number > 0 (>= 0 with ``allow_zero``)."""
    check_type(name, value, (int, float))
    if not math.isfinite(value):
        raise ValueError(f"Expected a finite `{name}`, but got {value}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Expected `{name}` {bound}, but got {value}.")


def check_unit_interval(name: str, value: Any) -> None:
    """A number in ``[0, 1]`` (a weight or a probability)."""
    check_type(name, value, (int, float))
    if not 0 <= value <= 1:
        raise ValueError(f"Expected `{name}` in [0, 1], but got {value}.")


def check_one_of(name: str, value: Any, choices: Collection[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``; the message lists them."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected `{name}` to be one of {options}, but got {value!r}.")


def check_range(name: str, value: Any) -> None:
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
