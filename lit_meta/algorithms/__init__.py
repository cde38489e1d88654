"""Meta-learning algorithms, each a :class:`MetaLearner` LightningModule."""

from lit_meta.extras import require_learn2learn

require_learn2learn()  # the learners adapt through its differentiable clones: one line if it is missing


from lit_meta.algorithms.anil import ANIL  # noqa: E402
from lit_meta.algorithms.base import MetaLearner  # noqa: E402
from lit_meta.algorithms.distillation import MetaDistillation  # noqa: E402
from lit_meta.algorithms.ditto import Ditto  # noqa: E402
from lit_meta.algorithms.fedrep import FedRep  # noqa: E402
from lit_meta.algorithms.maml import MAML  # noqa: E402
from lit_meta.algorithms.matching import MatchingNetworks  # noqa: E402
from lit_meta.algorithms.metasgd import MetaSGD  # noqa: E402
from lit_meta.algorithms.metric import MetricLearner  # noqa: E402
from lit_meta.algorithms.perfedavg import PerFedAvg  # noqa: E402
from lit_meta.algorithms.pfedme import PFedMe  # noqa: E402
from lit_meta.algorithms.protonet import PrototypicalNetworks  # noqa: E402
from lit_meta.algorithms.reptile import Reptile  # noqa: E402
from lit_meta.algorithms.supervised import SupervisedTransfer  # noqa: E402

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
    "PerFedAvg",
    "Ditto",
    "FedRep",
    "PFedMe",
]
