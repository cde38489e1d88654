"""Meta-learning algorithms, each a :class:`MetaLearner` LightningModule."""

from lit_meta.algorithms.anil import ANIL
from lit_meta.algorithms.base import MetaLearner
from lit_meta.algorithms.distillation import MetaDistillation
from lit_meta.algorithms.maml import MAML
from lit_meta.algorithms.matching import MatchingNetworks
from lit_meta.algorithms.metasgd import MetaSGD
from lit_meta.algorithms.metric import MetricLearner
from lit_meta.algorithms.protonet import PrototypicalNetworks
from lit_meta.algorithms.reptile import Reptile
from lit_meta.algorithms.supervised import SupervisedTransfer

__all__ = [
    "MetaLearner",
    "MetricLearner",
    "MAML",
    "MetaSGD",
    "ANIL",
    "Reptile",
    "PrototypicalNetworks",
    "MatchingNetworks",
    "SupervisedTransfer",
    "MetaDistillation",
]
