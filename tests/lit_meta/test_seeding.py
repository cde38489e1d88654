"""`lit_meta.seeding`: keyed seeds and the seeding of every global stream."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lit_meta import seeding
from lit_meta.seeding import key_seed, seed_streams


def draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_seed_streams_draws_as_seeding_each_stream_by_hand() -> None:
    seed_streams(1234)
    ours = draws()
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    assert ours == draws()
    assert torch.initial_seed() == 1234


def test_seed_streams_seeds_every_device_once_an_accelerator_started(monkeypatch: pytest.MonkeyPatch) -> None:
    seeded: list[int] = []
    monkeypatch.setattr(torch, "manual_seed", seeded.append)
    monkeypatch.setattr(seeding, "_accelerator_started", lambda: False)
    seed_streams(7)
    assert seeded == []  # the CPU generator only: no device is in use
    monkeypatch.setattr(seeding, "_accelerator_started", lambda: True)
    seed_streams(8)
    assert seeded == [8]


def test_key_seed_is_a_pure_function_of_the_key() -> None:
    assert key_seed((1, 2, 3)) == key_seed([1, 2, 3]) != key_seed((1, 2, 4))
    assert 0 <= key_seed((5,)) < 2**32
