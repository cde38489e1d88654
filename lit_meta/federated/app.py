"""The Flower App of ``lit-meta federate``, for Flower's deployment runtime (SuperLink + SuperNodes).

Every machine runs the same app and reads the same ``lit-meta federate`` config (its ``data_dir``
pointing at that machine's own data); a SuperNode's ``--node-config "partition-id=<i>"`` says which
client it is. The app directory is ``configs/federated/flower_app`` (its ``pyproject.toml`` names
:data:`server` and :data:`client`); its run config takes:

- ``config``: the config files, comma-separated (paths valid on every machine);
- ``args``: more ``lit-meta federate`` arguments, as on its command line;
- ``nodes``: SuperNodes the server waits for before round 1 (default: every client of ``data``).

    flwr run configs/federated/flower_app my-superlink --stream \\
        --run-config "config='/srv/fed/base.yaml,/srv/fed/protonet.yaml' args='--rounds 20' nodes=8"
"""

from __future__ import annotations

import functools
import shlex

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from lit_meta.federated.cli import parse
from lit_meta.federated.client import MetaClient
from lit_meta.federated.run import FederatedRun


def _command_line(context: Context) -> tuple[str, ...]:
    paths = [path.strip() for path in str(context.run_config.get("config", "")).split(",") if path.strip()]
    if not paths:
        raise ValueError("Expected run config `config` to name >= 1 `lit-meta federate` config file, but got none.")
    return (
        *(item for path in paths for item in ("--config", path)),
        *shlex.split(str(context.run_config.get("args", ""))),
    )


@functools.lru_cache(maxsize=2)
def _run(args: tuple[str, ...]) -> FederatedRun:
    return parse(list(args))


@functools.lru_cache(maxsize=2)
def _client(args: tuple[str, ...]) -> MetaClient:
    return _run(args).client()


server = ServerApp()
client = ClientApp()


@server.main()
def _serve(grid: Grid, context: Context) -> None:
    nodes = int(context.run_config.get("nodes", 0))
    _run(_command_line(context)).serve(grid, expected_nodes=nodes or None)


@client.train()
def _train(message: Message, context: Context) -> Message:
    return _client(_command_line(context)).train(message, context)


@client.evaluate()
def _evaluate(message: Message, context: Context) -> Message:
    return _client(_command_line(context)).evaluate(message, context)


@client.query()
def _query(message: Message, context: Context) -> Message:
    return _client(_command_line(context)).query(message, context)
