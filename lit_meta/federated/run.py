"""A whole federated run, as ``lit-meta federate`` starts it: the backend, the server's outputs, resume.

Outputs, in one TensorBoard version folder (``<log_dir>/<version>/``), after every round:

- TensorBoard scalars under ``federated/``: the aggregated training loss, the pooled personalised
  accuracy (or MSE) of the unseen test clients with its 95% CI and each client's figure, the
  replies and failures, and the bytes sent to and received from the clients;
- ``checkpoints/round_<r>.ckpt`` and ``checkpoints/last.ckpt``: the global meta-learner as a
  Lightning checkpoint, which ``lit-meta test`` and ``lit-meta adapt`` read as they read one of
  ``lit-meta fit``; it also holds the round and the server optimiser's state, for ``resume``;
- ``federated_result.json``: the run's settings, every round's record and each client's last result.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any, Literal

import lightning
import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy
from lightning.pytorch.loggers import TensorBoardLogger

from lit_meta.algorithms.base import MetaLearner
from lit_meta.checkpoints import check_same_learner, config_class_paths, read_checkpoint, trusted_modules
from lit_meta.federated.client import MetaClient, client_app
from lit_meta.federated.data import FederatedData
from lit_meta.federated.grid import InProcessGrid
from lit_meta.federated.records import load_arrays, personal_names
from lit_meta.federated.server import FederationError, federate
from lit_meta.files import atomic_open, atomic_torch_save, check_writable_folder
from lit_meta.validation import check_one_of, check_positive_float, check_positive_int, check_type

log = logging.getLogger(__name__)

Backend = Literal["in_process", "simulation"]


#: Scalars Flower's strategies change from round to round (the adaptive-clipping DP wrappers'
#: clipping norm); every other scalar attribute is a setting, which a resumed run takes from its config.
ROUND_SCALARS = ("clipping_norm",)

#: Settings a resumed run must share with its checkpoint: they decide what the rounds compute.
RESUME_SETTINGS = ("strategy", "clients", "local_steps", "seed", "transfer", "personal")


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The state a server optimiser accumulates over rounds (FedAdam's and FedYogi's moments, FedAvgM's
    momentum, an adaptive-clipping wrapper's clipping norm): every attribute of ``strategy`` (and of
    the strategies it wraps) that maps names to arrays (FedOpt's), lists arrays (FedAvgM's) or is
    one of :data:`ROUND_SCALARS`, keyed by its dotted attribute path; arrays become tensors."""
    state, prefix, inner = {}, "", strategy
    while isinstance(inner, Strategy):
        for name, value in vars(inner).items():
            if isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
                state[prefix + name] = {k: torch.from_numpy(np.array(v)) for k, v in value.items()}
            elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
                state[prefix + name] = [torch.from_numpy(np.array(v)) for v in value]
            elif name in ROUND_SCALARS and isinstance(value, float):
                state[prefix + name] = value
        inner, prefix = getattr(inner, "strategy", None), f"{prefix}strategy."
    return state


def accountant_state(strategy: Strategy) -> dict | None:
    """The state of a DP wrapper's privacy accountant (the releases composed so far), if any."""
    accountant = getattr(strategy, "accountant", None)
    return accountant.state_dict() if accountant is not None else None


def load_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Put :func:`strategy_state`'s ``state`` back into ``strategy``."""
    for path, value in state.items():
        owner, *parents, name = [strategy, *path.split(".")]
        for parent in parents:
            owner = getattr(owner, parent)
        if name.endswith("[]"):  # a list in the older format: `name[]`, its arrays keyed by position
            name, value = name[:-2], [value[str(i)] for i in range(len(value))]
        if isinstance(value, dict):
            setattr(owner, name, {k: v.numpy() for k, v in value.items()})
        elif isinstance(value, list):
            setattr(owner, name, [v.numpy() for v in value])
        else:
            setattr(owner, name, float(value))


class RunOutputs:
    """Writes TensorBoard scalars, a checkpoint and ``federated_result.json`` after every round.

    Args:
        learner: the federation's learner (copied; its class and hyper-parameters go into checkpoints).
        data: the clients (their image preprocessing goes into checkpoints, for ``lit-meta adapt``).
        strategy: the server's strategy (its optimiser state goes into checkpoints).
        log_dir: TensorBoard's save folder.
        version: the version folder's name (default: TensorBoard's next ``version_<n>``).
        settings: the run's settings, recorded in ``federated_result.json``.
        records: rounds already recorded (a resumed run's).
        personal: the weights the clients keep (absent from the server's arrays).
    """

    def __init__(
        self,
        learner: MetaLearner,
        data: FederatedData,
        strategy: Strategy,
        log_dir: str,
        version: str | None,
        settings: dict[str, Any],
        records: list[dict] | None = None,
        personal: list[str] | None = None,
    ) -> None:
        self.learner, self.strategy, self.settings = copy.deepcopy(learner), strategy, settings
        self.personal = list(personal or [])
        self.preprocessing = data.preprocessing()
        self.logger = TensorBoardLogger(save_dir=log_dir, name="", version=version, default_hp_metric=False)
        self.dir = self.logger.log_dir
        self.records = list(records or [])
        self.metric = learner.metric_name
        self.started = time.monotonic()

    def checkpoint_path(self, server_round: int | None = None) -> str:
        name = "last.ckpt" if server_round is None else f"round_{server_round:04d}.ckpt"
        return os.path.join(self.dir, "checkpoints", name)

    def __call__(self, server_round: int, arrays: ArrayRecord, record: dict) -> None:
        record = {"round": server_round, "seconds": round(time.monotonic() - self.started, 2), **record}
        self.records.append(record)
        self._log(server_round, record)
        self._checkpoint(server_round, arrays)
        self.write_result()
        shown = (
            f" {self.metric} {record[self.metric]:.4f} +- {record[self.metric + '-ci95']:.4f}"
            if self.metric in record
            else ""
        )
        log.info(
            "Round %d: %d/%d replies, train loss %.4f%s",
            server_round,
            record.get("replies", 0),
            record.get("sent", 0),
            record.get("train-loss", float("nan")),
            shown,
        )

    def _log(self, server_round: int, record: dict) -> None:
        scalars = {
            f"federated/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "round"
        }
        for client, figures in record.get("clients", {}).items():
            scalars[f"federated/client_{client}/{self.metric}"] = figures[self.metric]
        self.logger.log_metrics(scalars, step=server_round)
        self.logger.save()

    def _checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        load_arrays(self.learner, arrays, absent=self.personal)
        checkpoint = {
            "pytorch-lightning_version": lightning.__version__,
            "epoch": 0,
            "global_step": server_round,
            "state_dict": self.learner.state_dict(),
            "hyper_parameters": dict(self.learner.hparams),
            # The global arrays exactly as the server holds them (FedAdam's are float64), for resume.
            "federated": {
                "round": server_round,
                "arrays": {k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()},
                "strategy": strategy_state(self.strategy),
                "accountant": accountant_state(self.strategy),
                "settings": self.settings,
            },
        }
        if self.preprocessing is not None:
            checkpoint["lit_meta"] = {"preprocessing": self.preprocessing.to_dict()}
        os.makedirs(os.path.dirname(self.checkpoint_path()), exist_ok=True)
        for path in (self.checkpoint_path(server_round), self.checkpoint_path()):
            atomic_torch_save(checkpoint, path)  # a kill or a full disk leaves the previous checkpoint whole

    def write_result(self) -> str:
        """``federated_result.json``: settings, rounds, and each client's latest result; its path."""
        clients: dict[str, dict] = {}
        for record in self.records:
            clients.update({str(c): {"round": record["round"], **v} for c, v in record.get("clients", {}).items()})
        path = os.path.join(self.dir, "federated_result.json")
        with atomic_open(path) as f:
            json.dump({"settings": self.settings, "rounds": self.records, "clients": clients}, f, indent=2)
        return path


def resume_from(
    path: str, learner: MetaLearner, strategy: Strategy, settings: dict[str, Any] | None = None
) -> tuple[int, ArrayRecord, str, list[dict]]:
    """Load a round checkpoint of :class:`RunOutputs` into ``learner`` and ``strategy``.

    Args:
        path: the checkpoint.
        learner: the run's learner (of the checkpoint's class).
        strategy: the run's strategy.
        settings: the run's :meth:`FederatedRun.settings`; those of :data:`RESUME_SETTINGS` must
            equal the checkpoint's.

    Returns:
        ``(round, the server's global arrays, version folder, records so far)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a federated checkpoint, one of another learner class, or one of a run with
            other settings (strategy, clients, local steps, seed, transfer dtype or personal weights).
    """
    # The classes this run's own config names (its learner's hyper-parameters) are the user's choice.
    trusted = [*trusted_modules(), *config_class_paths(dict(learner.hparams))]
    checkpoint = read_checkpoint(path, "a federated round checkpoint", trusted)
    if "federated" not in checkpoint:
        raise ValueError(f"Expected a checkpoint written by `lit-meta federate` in {path!r}, but got another file.")
    check_same_learner(type(learner), checkpoint.get("hyper_parameters", {}).get("_class_path"))
    _check_same_settings(path, checkpoint["federated"].get("settings"), settings)
    learner.load_state_dict(checkpoint["state_dict"])
    load_strategy_state(strategy, checkpoint["federated"]["strategy"])
    if checkpoint["federated"].get("accountant") is not None and getattr(strategy, "accountant", None) is not None:
        strategy.accountant.load_state_dict(checkpoint["federated"]["accountant"])
    version_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    records: list[dict] = []
    result = os.path.join(version_dir, "federated_result.json")
    if os.path.isfile(result):
        with open(result) as f:
            records = [r for r in json.load(f)["rounds"] if r["round"] <= checkpoint["federated"]["round"]]
    arrays = ArrayRecord({k: Array(v.numpy()) for k, v in checkpoint["federated"]["arrays"].items()})
    return int(checkpoint["federated"]["round"]), arrays, version_dir, records


def _check_same_settings(path: str, saved: dict[str, Any] | None, settings: dict[str, Any] | None) -> None:
    if saved is None or settings is None:  # a checkpoint written before settings were kept
        return
    for key in RESUME_SETTINGS:
        if key in saved and saved[key] != settings.get(key):
            raise ValueError(
                f"Expected `{key}` {saved[key]!r} to resume the run of {path!r}, but got {settings.get(key)!r}."
            )


class FederatedRun:
    """Federated meta-learning of ``model`` on the clients of ``data``, aggregated by ``strategy``.

    Args:
        model: the meta-learner (any :class:`~lit_meta.algorithms.MetaLearner`).
        data: the clients (e.g. ``datamodules.federated.ClientPartition``).
        strategy: a Flower strategy (``flwr.serverapp.strategy.FedAvg``, ``FedAdam``, ``FedMedian``,
            ``FedTrimmedAvg``, a DP wrapper, or lit-meta's ``InverseVarianceFedAvg``).
        rounds: federated rounds.
        local_steps: meta-steps each training client runs per round.
        backend: ``"in_process"`` (clients run one after another in this process: deterministic,
            no Ray) or ``"simulation"`` (Flower's simulation engine on Ray, one CPU per client).
        min_replies: usable training replies a round needs, else the run stops.
        round_timeout: seconds the server waits for a round's replies.
        evaluate_every: evaluate on the test clients every this many rounds (and after the last).
        seed: seed of client sampling and of the clients' local training.
        accelerator: the clients' Lightning accelerator.
        precision: the clients' Lightning precision.
        transfer: the dtype weights travel in; ``"float16"`` halves the bytes (aggregation stays float32).
        personal: ``fnmatch`` patterns of weights each client keeps in its Flower ``Context.state``
            and never sends (partial federation: ``["*head*"]`` federates only the body, FedPer/FedRep
            style; the patterns of the body federate only the head). Checkpoints hold the initial values.
        num_cpus: CPUs Ray may use in ``simulation`` (each client takes one).
        client_gpus: the share of a GPU each client asks Ray for in ``simulation`` (e.g. 0.25: four
            clients per GPU); Ray hides the GPUs from a client that asks for none, so a GPU
            ``accelerator`` needs it > 0.
        log_dir: folder of the TensorBoard version folders.
        version: name of this run's version folder (default ``version_<n>``).
        resume: a round checkpoint (``<version>/checkpoints/last.ckpt``) to continue from; the run goes
            on in that checkpoint's version folder (a ``version`` given too must name it). Its strategy,
            clients, local steps, seed, transfer dtype and personal patterns must be this run's;
            personal weights restart from their initial values (a warning says so).
        overwrite: a new run whose ``version`` folder holds another run's files empties it first;
            without it such a run is refused before round 1.
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
        seed: int = 0,
        accelerator: str = "cpu",
        precision: str = "32-true",
        transfer: Literal["float32", "float16"] = "float32",
        personal: list[str] | None = None,
        num_cpus: int = 2,
        client_gpus: float = 0.0,
        log_dir: str = "lightning_logs",
        version: str | None = None,
        resume: str | None = None,
        overwrite: bool = False,
    ) -> None:
        check_type("model", model, MetaLearner)
        check_type("data", data, FederatedData)
        check_type("strategy", strategy, Strategy)
        for name in ("rounds", "local_steps", "min_replies", "evaluate_every", "num_cpus"):
            check_positive_int(name, locals()[name])
        check_one_of("backend", backend, ("in_process", "simulation"))
        check_one_of("transfer", transfer, ("float32", "float16"))
        check_positive_float("round_timeout", round_timeout)
        check_positive_float("client_gpus", client_gpus, allow_zero=True)
        if backend == "simulation" and accelerator in ("gpu", "cuda") and client_gpus == 0:
            raise ValueError(
                f"Expected `client_gpus` > 0 for simulated clients on accelerator {accelerator!r} (Ray hides the "
                f"GPUs from clients that ask for none), but got {client_gpus}."
            )
        check_type("seed", seed, int)
        self.model, self.data, self.strategy = model, data, strategy
        self.rounds, self.local_steps, self.backend = rounds, local_steps, backend
        self.min_replies, self.round_timeout, self.evaluate_every = min_replies, round_timeout, evaluate_every
        self.seed, self.accelerator, self.precision, self.num_cpus = seed, accelerator, precision, num_cpus
        self.client_gpus = client_gpus
        check_type("overwrite", overwrite, bool)
        self.log_dir, self.version, self.resume, self.transfer = log_dir, version, resume, transfer
        self.overwrite = overwrite
        self.personal = personal_names(model, personal) if personal else []  # checked before round 1

    def settings(self) -> dict[str, Any]:
        keys = (
            "rounds",
            "local_steps",
            "backend",
            "min_replies",
            "round_timeout",
            "evaluate_every",
            "seed",
            "transfer",
            "personal",
        )
        return {
            "model": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
            "strategy": f"{type(self.strategy).__module__}.{type(self.strategy).__qualname__}",
            "clients": {str(i): self.data.role(i) for i in range(self.data.num_clients)},
            **{key: getattr(self, key) for key in keys},
        }

    def check_new_folder(self) -> None:
        """Refuse (or, with ``overwrite``, empty) the ``version`` folder of an earlier run, for a new run.

        Raises:
            ValueError: the folder holds another run's files and ``overwrite`` is off.
        """
        check_writable_folder(self.log_dir, "the log folder (`log_dir`)")
        if self.version is None or self.resume is not None:
            return
        folder = os.path.join(self.log_dir, self.version)
        if not os.path.isdir(folder) or not os.listdir(folder):
            return
        if not self.overwrite:
            raise ValueError(
                f"Expected a new version folder for a new run, but got {folder!r}, which holds another run's files "
                "(continue it with `--resume`, overwrite it with `--overwrite true`, or choose another `version`)."
            )
        shutil.rmtree(folder)

    def client(self) -> MetaClient:
        """The client every node runs (on a SuperNode: built from the same config)."""
        return MetaClient(
            self.model,
            self.data,
            self.local_steps,
            self.seed,
            accelerator=self.accelerator,
            precision=self.precision,
            personal=self.personal,
        )

    def run(self, wrap_client_app: Callable[[ClientApp], ClientApp] | None = None) -> RunOutputs:
        """Run the remaining rounds on the ``backend``; returns the outputs (folder, records, checkpoints).

        ``wrap_client_app`` (for fault-injection benchmarks) replaces every node's ``ClientApp`` by
        ``wrap_client_app(app)``, any ``(message, context) -> message`` callable.
        """
        if self.resume is None:
            self.check_new_folder()  # before the clients are built: a refused run costs nothing
        nodes = self.data.num_clients  # builds and checks every client's share before round 1
        app = client_app(self.client())
        app = app if wrap_client_app is None else wrap_client_app(app)
        if self.backend == "in_process":
            return self.serve(InProcessGrid(app, nodes))
        from flwr.simulation import run_simulation

        finished: list[RunOutputs] = []
        server = ServerApp()
        server.main()(lambda grid, context: finished.append(self.serve(grid)))
        run_simulation(
            server,
            app,
            num_supernodes=nodes,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": float(self.client_gpus)},
                "init_args": {"num_cpus": self.num_cpus},
            },
        )
        if not finished:
            raise FederationError(
                f"Expected Flower's simulation to finish {self.rounds} rounds, but it stopped early (see its log)."
            )
        return finished[0]

    def serve(self, grid: Grid, expected_nodes: int | None = None) -> RunOutputs:
        """The server's side of the run on ``grid`` (any Flower runtime's): resume, rounds, outputs.

        Args:
            grid: the grid of the nodes.
            expected_nodes: nodes to wait for before round 1 (default: every client of ``data``).
        """
        start_round, arrays, version, records = 0, None, self.version, []
        log_dir = self.log_dir
        if self.resume is not None:
            start_round, arrays, version_dir, records = resume_from(
                self.resume, self.model, self.strategy, self.settings()
            )
            if self.personal:
                log.warning(
                    "Resuming: the clients' personal weights (%s) start again from their initial values; "
                    "they lived in each client's Flower Context.state, which a new run starts empty.",
                    ", ".join(self.personal[:3]) + (", ..." if len(self.personal) > 3 else ""),
                )
            log_dir, version = os.path.dirname(version_dir), os.path.basename(version_dir)
            if self.version is not None and self.version != version:
                raise ValueError(
                    f"Expected `version` {version!r} (the folder of `resume` {self.resume!r}) or none, but got "
                    f"{self.version!r}."
                )
            if start_round >= self.rounds:
                raise ValueError(
                    f"Expected `rounds` > {start_round}, the rounds done in {self.resume!r}, but got {self.rounds}."
                )
        else:
            self.check_new_folder()
        outputs = RunOutputs(
            self.model, self.data, self.strategy, log_dir, version, self.settings(), records, self.personal
        )
        federate(
            grid,
            self.model,
            self.strategy,
            self.rounds,
            self.local_steps,
            min_replies=self.min_replies,
            round_timeout=self.round_timeout,
            seed=self.seed,
            evaluate_every=self.evaluate_every,
            start_round=start_round,
            initial_arrays=arrays,
            expected_nodes=expected_nodes or self.data.num_clients,
            on_round=outputs,
            transfer=self.transfer,
            personal=self.personal,
        )
        outputs.write_result()
        return outputs
