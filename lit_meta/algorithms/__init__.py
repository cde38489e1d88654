"""Meta-learning algorithms, each a :class:`MetaLearner` LightningModule."""

from lit_meta.algorithms.base import MetaLearner
from lit_meta.algorithms.maml import MAML

__all__ = ["MetaLearner", "MAML"]
