"""Federated meta-learning on Flower: clients meta-learn on private tasks, a server aggregates.

Flower is the engine (its ``ClientApp``, ``ServerApp``, strategies and runtimes); this package adds
what a meta-learner needs on top of it:

- :class:`~lit_meta.federated.client.MetaClient`: a client that wraps any lit-meta learner, loads the
  received weights, meta-trains them for a few meta-steps on its own tasks with a Lightning
  ``Trainer`` and replies with the new weights; it evaluates by adapting to its own tasks.
- :class:`~lit_meta.federated.grid.InProcessGrid`: a Flower ``Grid`` that runs the real ``ClientApp``
  of each node serially in this process: deterministic, no Ray, for tests and small runs.
- :mod:`~lit_meta.federated.records`: the learner's weights as a Flower ``ArrayRecord`` and the checks
  a reply must pass before it may enter an aggregate.
- :mod:`~lit_meta.federated.server`: :class:`~lit_meta.federated.server.Guarded` around any Flower
  strategy (node roles, reply checks, pooled personalised accuracy, bytes) and :func:`federate`.
- :class:`~lit_meta.federated.data.FederatedData`: the clients' data contract
  (``datamodules.federated.ClientPartition`` implements it).
- :class:`~lit_meta.federated.run.FederatedRun`: a whole run of ``lit-meta federate``
  (:mod:`~lit_meta.federated.cli`) on the in-process grid, Flower's simulation or (through
  :mod:`~lit_meta.federated.app`) its deployment runtime; TensorBoard, checkpoints, resume.

Nothing in the rest of ``lit_meta`` imports this package (bar the ``lit-meta federate`` dispatch), so
``flwr`` is only needed to federate.
"""

from lit_meta.extras import require_extra

require_extra("federated", "federated meta-learning (lit_meta.federated, `lit-meta federate`)", ("flwr",))

from lit_meta.federated.client import MetaClient, ProximalTerm, client_app  # noqa: E402
from lit_meta.federated.data import FederatedData  # noqa: E402
from lit_meta.federated.grid import InProcessGrid  # noqa: E402
from lit_meta.federated.records import check_arrays, learner_arrays, load_arrays  # noqa: E402
from lit_meta.federated.run import FederatedRun  # noqa: E402
from lit_meta.federated.server import FederationError, Guarded, federate, server_app  # noqa: E402

__all__ = [
    "FederatedData",
    "FederatedRun",
    "FederationError",
    "Guarded",
    "InProcessGrid",
    "MetaClient",
    "ProximalTerm",
    "check_arrays",
    "client_app",
    "federate",
    "learner_arrays",
    "load_arrays",
    "server_app",
]
