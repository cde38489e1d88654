"""The ``lit-meta fit`` command a trial runs, checked before the first trial and exported after the last.

A trial is ``lit-meta fit`` of the user's configs with the sampled values as ``--key=value`` overrides,
so the search space is checked against the very parser that will read them: every key must name an
argument of the parsed config, and every bound or choice must parse as that argument's type.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from typing import Any

import yaml

from lit_meta._cli_errors import CommandLineError
from lit_meta.meta_cli import MetaCLI, make_cli
from lit_meta.tuning.space import Dimension

# Arguments that decide the validation tasks: a search over them would compare trials on different tasks.
_VALIDATION_KEYS = ("eval_ways", "eval_shots", "eval_queries", "val_tasks", "eval_seed")
# A null evaluation argument takes its training argument's value: searching the latter moves the former.
_FOLLOWERS = {"ways": "eval_ways", "shots": "eval_shots", "queries": "eval_queries"}


class _ParseOnly(MetaCLI):
    """Parses a ``lit-meta fit`` command line and stops there: nothing is instantiated or run."""

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def overrides(values: dict[str, Any]) -> list[str]:
    """``--key=value`` arguments of ``{dotted key: value}``, values in YAML (as jsonargparse reads them)."""
    return [
        f"--{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
        for key, value in values.items()
    ]


def _parse_only(fit_args: Sequence[str], cli: _ParseOnly | None = None) -> _ParseOnly:
    """The parsed ``lit-meta fit`` command line; with ``cli``, parsed again by that CLI's parser."""
    with warnings.catch_warnings():  # LightningCLI warns when `args` are given from within a command
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        if cli is None:
            return make_cli(["fit", *fit_args], cli_class=_ParseOnly)
        cli.parse_arguments(cli.parser, ["fit", *fit_args])
        return cli


def parse_fit(fit_args: Sequence[str]) -> tuple[Any, Any]:
    """``(parser, config)`` of ``lit-meta fit`` with ``fit_args``; a mistake raises ``CommandLineError``."""
    cli = _parse_only(fit_args)
    return cli._parser("fit"), cli.config.fit


def check_space(fit_args: Sequence[str], space: Sequence[Dimension]) -> None:
    """Refuse, before any trial, a key that is not an argument of the config, a key that would change
    the validation tasks, and a bound or choice that does not parse as its argument's type.

    Raises:
        ValueError: naming the key (and the nearest argument for a misspelt one).
    """
    cli = _parse_only(fit_args)
    config = cli.config.fit
    known = [key for key, _ in config.items(branches=True) if key != "config"]
    for dim in space:
        if dim.key not in known:
            hint = difflib.get_close_matches(dim.key, known, n=1, cutoff=0.6)
            suggestion = f" (did you mean `{hint[0]}`?)" if hint else ""
            raise ValueError(
                f"Expected a search key that names an argument of the config, but got `{dim.key}`{suggestion}."
            )
        name = dim.key.rsplit(".", 1)[-1]
        if dim.key.startswith("data.") and name in _VALIDATION_KEYS:
            raise ValueError(
                f"Expected the validation tasks to be the same in every trial, but `{dim.key}` is searched; "
                "search the training episodes instead."
            )
        if dim.key.startswith("data.") and name in _FOLLOWERS:
            follower = dim.key.rsplit(".", 1)[0] + "." + _FOLLOWERS[name]
            if follower in known and config[follower] is None:
                raise ValueError(
                    f"Expected `{follower}` set in the config, but got null: it defaults to the searched "
                    f"`{dim.key}`, so the validation tasks would change from trial to trial."
                )
    for dim in space:
        for value in dim.probes():
            try:  # the same parser again (building one per value would cost a second each)
                _parse_only([*fit_args, *overrides({dim.key: value})], cli)
            except CommandLineError as err:  # the parser's one-line message, under the search space's name
                raise ValueError(
                    f"Expected values of `{dim.key}` that fit its argument, but {value!r} does not: {err}"
                ) from None


def best_config_yaml(fit_args: Sequence[str], params: dict[str, Any]) -> str:
    """The complete ``lit-meta fit`` config of ``fit_args`` with the ``params`` of a trial: every
    argument spelt out, so that ``lit-meta fit --config best.yaml`` runs it as is."""
    parser, config = parse_fit([*fit_args, *overrides(params)])
    config = config.clone()
    config.pop("config", None)
    return parser.dump(config, skip_none=False)
