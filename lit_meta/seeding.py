"""Random streams as pure functions of keys, so that a run resumed from a checkpoint draws what an
uninterrupted one would: the datamodules' tasks (keyed by seed, rank and step) and the learners'
own randomness (the global streams, re-seeded before every training step)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch


def key_seed(key: Sequence[int]) -> int:
    """A 32-bit seed that is a pure function of the integers ``key``."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def seed_streams(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global streams (all devices) with ``seed``, silently."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
