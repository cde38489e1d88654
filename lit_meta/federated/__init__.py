"""Federated meta-learning on Flower: clients meta-learn on private tasks, a server aggregates.

Flower is the engine (its ``ClientApp``, ``ServerApp``, strategies and runtimes); this package adds
what a meta-learner needs on top of it:

- :class:`~lit_meta.federated.client.MetaClient`: a client that wraps any lit-meta learner, loads the
  received weights, meta-trains them for a few meta-steps on its own tasks with a Lightning
  ``Trainer`` and replies with the new weights; it evaluates by adapting to its own tasks (a training
  client, to tasks of its own local test data). Each call trains a new copy of the learner
  with a lean ``Trainer`` (:mod:`~lit_meta.federated.trainer`).
- :class:`~lit_meta.federated.data.FederatedData`: the clients' data contract
  (``datamodules.federated.ClientPartition`` implements it), participant evaluation included.
- :class:`~lit_meta.federated.grid.InProcessGrid`: a Flower ``Grid`` that runs the real ``ClientApp``
  of each node in this process (serially and deterministic, or some side by side within the round
  timeout): no Ray, for tests and small runs.
- :class:`~lit_meta.federated.pool.ClientPool`: any number of virtual clients served by a few nodes
  of a Flower runtime (the ``simulation`` backend), so that clients never sampled cost nothing.
- :mod:`~lit_meta.federated.records`: the learner's weights as a Flower ``ArrayRecord`` and the checks
  a reply must pass before it may enter an aggregate.
- :mod:`~lit_meta.federated.roles`: which node is which client (asked, or known from the data), checked
  once, and the strategy checked against them.
- :class:`~lit_meta.federated.settings.RunSettings`: the rounds' settings, validated once.
- :class:`~lit_meta.federated.guarded.Guarded`: any Flower strategy with clients chosen by role,
  replies checked, weights sent in the transfer dtype, and the test clients' results pooled;
  :func:`~lit_meta.federated.server.federate` runs it on any grid.
- :class:`~lit_meta.federated.run.FederatedRun`: a whole run of ``lit-meta federate``
  (:mod:`~lit_meta.federated.cli`) on the in-process grid, Flower's simulation or (through
  :mod:`~lit_meta.federated.app`) its deployment runtime; what it writes after every round
  (:mod:`~lit_meta.federated.outputs`), its round checkpoints and resume
  (:mod:`~lit_meta.federated.checkpoint`).

Nothing in the rest of ``lit_meta`` imports this package (bar the ``lit-meta federate`` dispatch), so
``flwr`` is only needed to federate.
"""

from lit_meta.extras import require_extra

require_extra("federated", "federated meta-learning (lit_meta.federated, `lit-meta federate`)", ("flwr",))

from lit_meta.federated.client import MetaClient, ProximalTerm, client_app  # noqa: E402
from lit_meta.federated.data import FederatedData  # noqa: E402
from lit_meta.federated.errors import FederationError  # noqa: E402
from lit_meta.federated.grid import InProcessGrid  # noqa: E402
from lit_meta.federated.guarded import Guarded  # noqa: E402
from lit_meta.federated.pool import ClientPool  # noqa: E402
from lit_meta.federated.records import check_arrays, learner_arrays, load_arrays  # noqa: E402
from lit_meta.federated.run import FederatedRun  # noqa: E402
from lit_meta.federated.server import federate  # noqa: E402
from lit_meta.federated.settings import RunSettings  # noqa: E402

__all__ = [
    "ClientPool",
    "FederatedData",
    "FederatedRun",
    "FederationError",
    "Guarded",
    "InProcessGrid",
    "MetaClient",
    "ProximalTerm",
    "RunSettings",
    "check_arrays",
    "client_app",
    "federate",
    "learner_arrays",
    "load_arrays",
]
