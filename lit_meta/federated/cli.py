"""``lit-meta federate --config FILE.yaml``: federated meta-learning on Flower, configured as ``lit-meta fit`` is.

The config names the learner (``model``), the clients (``data``: a
:class:`~lit_meta.federated.data.FederatedData` such as ``datamodules.federated.ClientPartition``,
which wraps an episodic datamodule) and the server's ``strategy`` (any Flower strategy) by
``class_path``/``init_args``; the other keys are :class:`~lit_meta.federated.run.FederatedRun`'s
arguments. Configs stack (``--config a.yaml --config b.yaml``), ``--print_config`` shows every
argument, and a mistake is answered in one line with exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
from argparse import ArgumentError
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch import seed_everything
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context  # as LightningCLI does

from lit_meta._cli_errors import parser_message, root_cause
from lit_meta.algorithms.base import MetaLearner
from lit_meta.federated.errors import FederationError
from lit_meta.federated.run import FederatedRun
from lit_meta.files import cannot_write, write_failure
from lit_meta.validation import check_positive_int

PROG = "lit-meta federate"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, exit_on_error=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML config; may be given several times")
    parser.add_argument("--num_threads", type=int | None, default=None, help="torch intra-op threads")
    parser.add_class_arguments(FederatedRun, None, fail_untyped=True, sub_configs=True)
    return parser


class _RecordHyperparameters:
    """Instantiates the learner as LightningCLI does, with its config as hyper-parameters (and its
    class path as ``_class_path``), so that its checkpoints load with ``load_from_checkpoint`` in
    ``lit-meta test`` and ``lit-meta adapt``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.hparams = {"_class_path": config["class_path"], **config.get("init_args", {})}

    def __call__(self, class_type: type, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("applied_instantiation_links", None)
        with _given_hyperparameters_context(
            hparams=self.hparams, instantiator="lightning.pytorch.cli.instantiate_module"
        ):
            return class_type(*args, **kwargs)


def parse(args: list[str]) -> FederatedRun:
    """The :class:`FederatedRun` of a command line; raises ``ValueError`` with one line on a mistake."""
    parser = build_parser()
    try:
        config = parser.parse_args(args)
    except ArgumentError as err:
        options = [o for action in parser._actions for o in action.option_strings]
        raise ValueError(parser_message(str(err), options)) from None
    if config.num_threads is not None:
        check_positive_int("num_threads", config.num_threads)
        torch.set_num_threads(config.num_threads)
    # The model's section as LightningCLI stores hyper-parameters: the parser's own YAML dump.
    dumped = yaml.safe_load(parser.dump(config, skip_none=False))["model"]
    parser.add_instantiator(_RecordHyperparameters(dumped), MetaLearner, subclasses=True)
    seed_everything(config.seed, verbose=False)  # the initial weights too are a function of the seed
    try:
        built = parser.instantiate_classes(config)
    except (ValueError, TypeError) as err:
        raise ValueError(str(root_cause(err))) from err
    return FederatedRun(**{k: v for k, v in vars(built).items() if k not in ("config", "num_threads", "__path__")})


def main(args: list[str]) -> None:
    """Entry point of ``lit-meta federate`` (``args``: the command line after ``federate``)."""
    progress = logging.getLogger("lit_meta.federated")
    if not progress.handlers:  # one line per round, beside Flower's own log
        progress.addHandler(logging.StreamHandler())
        progress.setLevel(logging.INFO)
        progress.propagate = False
    try:
        parse(args).run()
    except (ValueError, TypeError, FileNotFoundError, FederationError) as err:
        # A configuration mistake (found before round 1) exits 2; a federation that broke down, 1.
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        sys.stderr.write(f"{PROG}: error: {err}\n")
        sys.exit(1 if isinstance(err, FederationError) else 2)
    except OSError as err:  # a round's checkpoint or result could not be written (a full disk)
        failure = write_failure(err)
        if failure is None or os.environ.get("LIT_META_TRACEBACK"):
            raise
        sys.stderr.write(f"{PROG}: error: {cannot_write(failure)}\n")
        sys.exit(1)
