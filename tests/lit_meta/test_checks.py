"""The shared argument checks: one message template, ValueError for values, TypeError for types."""

from __future__ import annotations

import math

import pytest

from lit_meta.validation import check_positive_float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_positive_float_must_be_finite(value):
    # NaN passes every comparison unnoticed (`nan < 0` is False): a timeout of NaN ran no trial at all.
    with pytest.raises(ValueError, match=rf"Expected a finite `timeout`, but got {value}\."):
        check_positive_float("timeout", value)


def test_a_positive_float_refuses_zero_unless_allowed_and_other_types():
    check_positive_float("beta", 0.0, allow_zero=True)
    with pytest.raises(ValueError, match=r"Expected `beta` > 0, but got 0\.0\."):
        check_positive_float("beta", 0.0)
    with pytest.raises(TypeError, match=r"Expected `beta` to be int or float, but got str '1'\."):
        check_positive_float("beta", "1")
