"""A whole federated run, as ``lit-meta federate`` starts it: settings checked once, the backend, resume.

What it writes after every round: :mod:`~lit_meta.federated.outputs`; its round checkpoints and
resume: :mod:`~lit_meta.federated.checkpoint`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any, Literal

from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.checkpoint import resume_from
from lit_meta.federated.client import MetaClient, client_app
from lit_meta.federated.data import FederatedData
from lit_meta.federated.errors import FederationError
from lit_meta.federated.grid import InProcessGrid
from lit_meta.federated.outputs import RunOutputs
from lit_meta.federated.pool import ClientPool
from lit_meta.federated.records import personal_names
from lit_meta.federated.roles import known_roles, role_summary
from lit_meta.federated.server import federate
from lit_meta.federated.settings import RunSettings
from lit_meta.files import check_writable_folder
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int, check_type

log = logging.getLogger(__name__)

Backend = Literal["in_process", "simulation"]
#: Flower nodes of the ``simulation`` backend, at least (``2 * num_cpus`` where that is more; never more
#: than the clients): the clients are virtual, served by these nodes in turn (:class:`ClientPool`).
SIMULATION_NODES = 32


class FederatedRun:
    """Federated meta-learning of ``model`` on the clients of ``data``, aggregated by ``strategy``.

    Args:
        model: the meta-learner (any :class:`~lit_meta.algorithms.MetaLearner`).
        data: the clients (e.g. ``datamodules.federated.ClientPartition``).
        strategy: a Flower strategy (``flwr.serverapp.strategy.FedAvg``, ``FedAdam``, ``FedMedian``,
            ``FedTrimmedAvg``, a DP wrapper, or lit-meta's ``InverseVarianceFedAvg``).
        rounds: federated rounds.
        local_steps: meta-steps each training client runs per round.
        backend: ``"in_process"`` (the clients run in this process, ``client_workers`` at a time: by
            default one after another, deterministic; no Ray) or ``"simulation"`` (Flower's simulation
            engine on Ray, one CPU per client; the clients are virtual, served by a few Flower nodes
            through a :class:`~lit_meta.federated.pool.ClientPool`, so that clients never sampled cost
            nothing).
        min_replies: usable training replies a round needs, else the run stops.
        round_timeout: seconds the server waits for the replies of a round's training (and again for
            its evaluation); a reply later than that is not used (the round's ``late``).
        evaluate_every: evaluate on the test clients every this many rounds (and after the last).
        evaluate_participants: the share of the training clients also evaluated at each evaluation, in
            [0, 1] (0: none; at least one when > 0): each adapts its personal state (the global weights
            and the personal ones it keeps) to tasks of its own local test data, which it never trains
            on (``data.participant_tasks``), and their pooled figures are recorded apart from the test
            clients' (``participants-accuracy``, ...), as personalised FL evaluates the clients that train.
        seed: seed of client sampling and of the clients' local training.
        accelerator: the clients' Lightning accelerator.
        precision: the clients' Lightning precision.
        transfer: the dtype weights travel in; ``"float16"`` halves the bytes (aggregation stays float32).
        personal: ``fnmatch`` patterns of weights each client keeps (in its Flower ``Context.state``; in
            ``simulation``, the server keeps them for it) and never sends to be aggregated (partial
            federation: ``["*head*"]`` federates only the body, FedPer/FedRep style; the patterns of the
            body federate only the head). Checkpoints hold the initial values.
        num_cpus: CPUs Ray may use in ``simulation`` (each client takes one).
        client_gpus: the share of a GPU each client asks Ray for in ``simulation`` (e.g. 0.25: four
            clients per GPU); Ray hides the GPUs from a client that asks for none, so a GPU
            ``accelerator`` needs it > 0.
        client_workers: ``in_process``: clients that run side by side (threads), so that a round whose
            slow clients outlive ``round_timeout`` still ends on time with the others' replies. With
            more than 1 the clients' trainers share torch's global generators and a run is not
            bit-reproducible. ``simulation`` runs ``num_cpus`` clients at a time; this must stay 1.
        log_dir: folder of the TensorBoard version folders.
        version: name of this run's version folder (default ``version_<n>``).
        resume: a round checkpoint (``<version>/checkpoints/last.ckpt``) to continue from; the run goes
            on in that checkpoint's version folder (a ``version`` given too must name it). Its strategy,
            clients, local steps, seed, transfer dtype and personal patterns must be this run's;
            personal weights restart from their initial values (a warning says so).
        overwrite: a new run whose ``version`` folder holds another run's files empties it first;
            without it such a run is refused before round 1.

    Attributes:
        settings: the rounds' :class:`~lit_meta.federated.settings.RunSettings` (``personal`` as the
            names of the weights the patterns match).
    """

    def __init__(
        self,
        model: MetaLearner,
        data: FederatedData,
        strategy: Strategy,
        rounds: int = 10,
        local_steps: int = 50,
        backend: Backend = "in_process",
        min_replies: int = 1,
        round_timeout: float = 3600.0,
        evaluate_every: int = 1,
        evaluate_participants: float = 0.0,
        seed: int = 0,
        accelerator: str = "cpu",
        precision: str = "32-true",
        transfer: Literal["float32", "float16"] = "float32",
        personal: list[str] | None = None,
        num_cpus: int = 2,
        client_gpus: float = 0.0,
        client_workers: int = 1,
        log_dir: str = "lightning_logs",
        version: str | None = None,
        resume: str | None = None,
        overwrite: bool = False,
    ) -> None:
        check_type("model", model, MetaLearner)
        check_type("data", data, FederatedData)
        check_type("strategy", strategy, Strategy)
        self.settings = RunSettings(
            rounds=rounds,
            local_steps=local_steps,
            min_replies=min_replies,
            round_timeout=round_timeout,
            evaluate_every=evaluate_every,
            evaluate_participants=evaluate_participants,
            seed=seed,
            transfer=transfer,
            personal=personal_names(model, personal or ()),
        )
        check_one_of("backend", backend, ("in_process", "simulation"))
        check_positive_int("num_cpus", num_cpus)
        check_positive_float("client_gpus", client_gpus, allow_zero=True)
        check_positive_int("client_workers", client_workers)
        if backend == "simulation" and accelerator in ("gpu", "cuda") and client_gpus == 0:
            raise ValueError(
                f"Expected `client_gpus` > 0 for simulated clients on accelerator {accelerator!r} (Ray hides the "
                f"GPUs from clients that ask for none), but got {client_gpus}."
            )
        if backend == "simulation" and client_workers != 1:
            raise ValueError(
                f"Expected `client_workers` 1 with backend 'simulation' (Ray runs `num_cpus` clients at a time), but "
                f"got {client_workers}."
            )
        check_type("overwrite", overwrite, bool)
        self.model, self.data, self.strategy, self.backend = model, data, strategy, backend
        self.accelerator, self.precision, self.num_cpus, self.client_gpus = (
            accelerator,
            precision,
            num_cpus,
            client_gpus,
        )
        self.client_workers, self.log_dir, self.version, self.resume = client_workers, log_dir, version, resume
        self.overwrite = overwrite
        self._roles: list[str] | None = None  # every client's role, by partition id (read once)
        self._folder_checked = False

    def client_roles(self) -> list[str]:
        """Every client's role, by partition id, read from ``data`` once."""
        if self._roles is None:
            self._roles = [self.data.role(i) for i in range(self.data.num_clients)]
        return self._roles

    def record(self) -> dict[str, Any]:
        """The run's settings as ``federated_result.json`` and its checkpoints record them: the learner's
        and strategy's classes, the clients (:func:`~lit_meta.federated.roles.role_summary`), the
        backend and the rounds' settings."""
        return {
            "model": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "strategy": f"{type(self.strategy).__module__}.{type(self.strategy).__qualname__}",
            "clients": role_summary(self.client_roles()),
            "backend": self.backend,
            "client_workers": self.client_workers,
            **self.settings.record(),
        }

    def check_new_folder(self) -> None:
        """Refuse (or, with ``overwrite``, empty) the ``version`` folder of an earlier run, for a new run;
        once per run.

        Raises:
            ValueError: the folder holds another run's files and ``overwrite`` is off.
        """
        if self._folder_checked:
            return
        check_writable_folder(self.log_dir, "the log folder (`log_dir`)")
        folder = os.path.join(self.log_dir, self.version) if self.version is not None else None
        if self.resume is None and folder is not None and os.path.isdir(folder) and os.listdir(folder):
            if not self.overwrite:
                raise ValueError(
                    f"Expected a new version folder for a new run, but got {folder!r}, which holds another run's "
                    "files (continue it with `--resume`, overwrite it with `--overwrite true`, or choose another "
                    "`version`)."
                )
            shutil.rmtree(folder)
        self._folder_checked = True

    def check_participant_tasks(self) -> None:
        """With ``evaluate_participants`` > 0, refuse before round 1 data whose training clients hold no
        local test data: the first training client's ``participant_tasks`` (a datamodule, not yet set up).

        Raises:
            ValueError: the data has no participant tasks (or no client of role ``"train"``).
        """
        if not self.settings.evaluate_participants:
            return
        roles = self.client_roles()
        if "train" not in roles:
            raise ValueError(
                f"Expected >= 1 training client of role 'train' to evaluate with `evaluate_participants` "
                f"{self.settings.evaluate_participants}, but got none (a client of role 'both' is evaluated as a "
                "test client)."
            )
        self.data.participant_tasks(roles.index("train"))

    def client(self, pooled: bool = False) -> MetaClient:
        """The client every node runs (on a SuperNode: built from the same config); ``pooled``: one
        that serves whichever client a message names (behind a :class:`ClientPool`)."""
        return MetaClient.of_run(self.model, self.data, self.settings, self.accelerator, self.precision, pooled)

    def run(self, wrap_client_app: Callable[[ClientApp], ClientApp] | None = None) -> RunOutputs:
        """Run the remaining rounds on the ``backend``; returns the outputs (folder, records, checkpoints).

        ``wrap_client_app`` (for fault-injection benchmarks) replaces every node's ``ClientApp`` by
        ``wrap_client_app(app)``, any ``(message, context) -> message`` callable.
        """
        if self.resume is None:
            self.check_new_folder()  # before the clients are built: a refused run costs nothing
        nodes = self.data.num_clients  # a ClientPartition builds and checks every client's share here
        self.check_participant_tasks()  # here too: Flower's simulation would report a refusal as an early stop
        app = client_app(self.client(pooled=self.backend == "simulation"))
        app = app if wrap_client_app is None else wrap_client_app(app)
        if self.backend == "in_process":
            return self.serve(InProcessGrid(app, nodes, workers=self.client_workers))
        from flwr.simulation import run_simulation

        finished: list[RunOutputs] = []
        server = ServerApp()
        server.main()(lambda grid, context: finished.append(self.serve(ClientPool(grid, nodes))))
        run_simulation(
            server,
            app,
            num_supernodes=min(nodes, max(SIMULATION_NODES, 2 * self.num_cpus)),
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": float(self.client_gpus)},
                "init_args": {"num_cpus": self.num_cpus},
            },
        )
        if not finished:
            raise FederationError(
                f"Expected Flower's simulation to finish {self.settings.rounds} rounds, but it stopped early (see "
                "its log)."
            )
        return finished[0]

    def serve(self, grid: Grid, expected_nodes: int | None = None) -> RunOutputs:
        """The server's side of the run on ``grid`` (any Flower runtime's): resume, rounds, outputs.

        On an :class:`~lit_meta.federated.grid.InProcessGrid` or a :class:`ClientPool` the server knows
        which partition each node holds, so the clients' roles come from ``data``; on Flower's deployment
        runtime it asks every node.

        Args:
            grid: the grid of the nodes.
            expected_nodes: nodes to wait for before round 1 (default: every client of ``data``).
        """
        settings, arrays, version, records, log_dir = self.settings, None, self.version, [], self.log_dir
        self.check_participant_tasks()
        record = self.record()
        if self.resume is not None:
            resumed = resume_from(self.resume, self.model, self.strategy, record)
            if settings.personal:
                log.warning(
                    "Resuming: the clients' personal weights (%s) start again from their initial values; "
                    "they lived with the clients (a node's Flower Context.state; in simulation, the server's client "
                    "pool), not in the checkpoints.",
                    ", ".join(settings.personal[:3]) + (", ..." if len(settings.personal) > 3 else ""),
                )
            log_dir, version = os.path.dirname(resumed.version_dir), os.path.basename(resumed.version_dir)
            if self.version is not None and self.version != version:
                raise ValueError(
                    f"Expected `version` {version!r} (the folder of `resume` {self.resume!r}) or none, but got "
                    f"{self.version!r}."
                )
            try:
                settings = dataclasses.replace(settings, start_round=resumed.round)
            except ValueError:  # what RunSettings checks of `start_round`: fewer than `rounds`
                raise ValueError(
                    f"Expected `rounds` > {resumed.round}, the rounds done in {self.resume!r}, but got "
                    f"{settings.rounds}."
                ) from None
            arrays, records = resumed.arrays, resumed.records
        else:
            self.check_new_folder()
        roles = None
        if isinstance(grid, (InProcessGrid, ClientPool)):
            roles = known_roles(grid.partitions(), self.data.role)
        outputs = RunOutputs(self.model, self.data, self.strategy, log_dir, version, record, records, settings.personal)
        federate(
            grid,
            self.model,
            self.strategy,
            settings,
            roles=roles,
            initial_arrays=arrays,
            on_round=outputs,
            expected_nodes=expected_nodes or self.data.num_clients,
        )
        outputs.write_result()
        return outputs
