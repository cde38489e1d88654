"""``lit-meta tune``: distributed hyper-parameter search of any ``lit-meta fit`` config, on Optuna.

.. code-block:: bash

    lit-meta tune --config configs/omniglot/base.yaml --config configs/omniglot/fomaml_5w1s.yaml \\
        --search configs/tune/maml_space.yaml --study fomaml --n_trials 16 --workers 2

Each trial is ``lit-meta fit`` of the configs (and of any ``--trainer.*``/``--model.*``/``--data.*``
overrides given here) with the sampled values; the search space is checked against the configs
before any trial runs. ``--storage`` is a journal file by default (``journal:./studies/NAME.log``)
or any SQLAlchemy URL; more workers join by running the same command against the same storage,
here (``--workers K`` starts K local processes, one thread each) or on other hosts. At the end the
table of trials is printed and written as CSV, and the best trial's complete config as YAML.

Exit status 2 and one line for a mistake, found before any trial where it can be (the search space,
a storage that refuses or does not answer, an output path that cannot be written) or by the first
trial (a monitored metric that is never logged); 1 when a trial raised what is no expected failure
(a bug: its traceback is shown), when a worker of ``--workers`` failed, or when no trial completed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from lit_meta._cli_errors import CommandLineError
from lit_meta.tuning.fit_config import best_config_yaml, check_space
from lit_meta.tuning.report import check_writable, format_table, trial_rows, write_atomically, write_csv
from lit_meta.tuning.space import load_space
from lit_meta.tuning.storage import STORAGE_TIMEOUT
from lit_meta.tuning.study import TrialError, TuneSpec, counted, open_study, work
from lit_meta.validation import check_positive_float, check_positive_int

PROG = "lit-meta tune"
# A worker process trains on one thread and leaves the progress to the command that started it.
WORKER_FIT_ARGS = ["--num_threads=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class WorkerError(RuntimeError):
    """A worker process of ``--workers`` exited with an error (its own output says why)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, as the other subcommands
        raise CommandLineError(message[:1].upper() + message[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument(
        "--config", action="append", required=True, help="a `lit-meta fit` config; may be given several times"
    )
    p.add_argument("--search", required=True, help="the search space YAML (see lit_meta.tuning.space)")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument(
        "--storage", default=None, help="journal:PATH (default journal:./studies/STUDY.log) or an SQLAlchemy URL"
    )
    p.add_argument(
        "--storage_timeout",
        type=int,
        default=STORAGE_TIMEOUT,
        help=f"seconds a database storage has to answer a connection (default {STORAGE_TIMEOUT})",
    )
    p.add_argument("--n_trials", type=int, required=True, help="trials the study ends with, over all workers")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a worker starts no new trial")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (one thread each)")
    p.add_argument("--sampler", choices=("tpe", "random", "qmc", "gp"), default="tpe")
    p.add_argument(
        "--pruner",
        choices=("median", "percentile", "asha", "hyperband", "none"),
        default="median",
        help="asha: successive halving, each trial against all that reached its validation, top third kept",
    )
    p.add_argument(
        "--pruner_startup", type=int, default=4, help="trials the median/percentile pruner completes before pruning"
    )
    p.add_argument(
        "--pruner_percentile", type=float, default=25.0, help="the top percentile the percentile pruner keeps"
    )
    p.add_argument(
        "--pruner_min_epochs",
        type=int,
        default=1,
        help="validations every trial runs before a pruner may stop it (epochs when each epoch validates once)",
    )
    p.add_argument("--monitor", default="val/acc", help="the validation metric to optimise and prune on")
    p.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    p.add_argument("--grace", type=int, default=30, help="seconds without a heartbeat before a trial is retried")
    p.add_argument("--max_retry", type=int, default=3, help="retries of a trial whose worker died")
    p.add_argument("--table", default=None, help="the CSV of trials (default ./studies/STUDY.csv)")
    p.add_argument("--export", default=None, help="the best config (default ./studies/STUDY_best.yaml)")
    # Set by --workers for its processes: the worker's index, and the trials the study held when it started them.
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_held", type=int, default=None, help=argparse.SUPPRESS)
    return p


def parse(argv: list[str]) -> tuple[TuneSpec, argparse.Namespace]:
    """The worker spec and the options of a ``lit-meta tune`` command line. Arguments it does not know
    go to every trial's ``lit-meta fit`` (``--trainer.max_steps=500``)."""
    options, fit_overrides = build_parser().parse_known_args(argv)
    for name in ("n_trials", "workers", "heartbeat", "grace", "pruner_min_epochs", "storage_timeout"):
        check_positive_int(name, getattr(options, name))
    check_positive_int("max_retry", options.max_retry, minimum=0)
    check_positive_int("pruner_startup", options.pruner_startup, minimum=0)
    if not 0 < options.pruner_percentile <= 100:
        raise ValueError(f"Expected 0 < `pruner_percentile` <= 100, but got {options.pruner_percentile}.")
    if options.timeout is not None:
        check_positive_float("timeout", options.timeout)
    if options.grace <= options.heartbeat:
        raise ValueError(f"Expected `grace` > `heartbeat` ({options.heartbeat} s), but got {options.grace}.")
    if stray := [a for a in fit_overrides if a.startswith("-") and not a.startswith("--")]:
        raise CommandLineError(f"Expected `lit-meta fit` options of the form --key=value, but got {stray[0]!r}.")
    fit_args = [arg for config in options.config for arg in ("--config", config)] + fit_overrides
    spec = TuneSpec(
        fit_args=fit_args,
        space=load_space(options.search),
        study=options.study,
        storage=options.storage or f"journal:./studies/{options.study}.log",
        n_trials=options.n_trials,
        monitor=options.monitor,
        direction=options.direction,
        sampler=options.sampler,
        pruner=options.pruner,
        pruner_startup=options.pruner_startup,
        pruner_percentile=options.pruner_percentile,
        pruner_min_epochs=options.pruner_min_epochs,
        seed=options.seed,
        timeout=options.timeout,
        heartbeat_interval=options.heartbeat,
        grace_period=options.grace,
        max_retry=options.max_retry,
        storage_timeout=options.storage_timeout,
        extra_fit_args=WORKER_FIT_ARGS if options.worker is not None else [],
    )
    return spec, options


def _spawn_workers(argv: list[str], spec: TuneSpec, workers: int) -> None:
    """Start ``workers`` processes of this command and follow the study with a progress bar."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    study = open_study(spec)
    held = len(study.get_trials(deepcopy=False))  # counted once: every worker's seed, whoever starts first
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lit_meta.tuning.cli", *argv, f"--worker={i}", f"--worker_held={held}"], env=env
        )
        for i in range(workers)
    ]
    done: set[int] = set()
    with tqdm(total=spec.n_trials, desc=f"study {spec.study}", unit="trial", dynamic_ncols=True) as bar:
        while True:
            running = [p for p in procs if p.poll() is None]
            trials = study.get_trials(deepcopy=False)  # one read of the storage per poll
            for t in trials:
                if t.state.is_finished() and t.number not in done:
                    done.add(t.number)
                    value = f" {spec.monitor}={t.value:.4f}" if t.values else ""
                    bar.write(
                        f"trial {t.number}: {t.state.name.lower()}{value} after {t.user_attrs.get('steps', '?')} steps"
                    )
            bar.n = min(spec.n_trials, sum(t.state.is_finished() for t in counted(trials)))
            bar.refresh()
            if not running:
                break
            time.sleep(2)
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise WorkerError("; ".join(f"worker {i} exited with status {code}" for i, code in failed))


def outputs(spec: TuneSpec, options: argparse.Namespace) -> dict[str, Path]:
    """The files a search leaves: ``{"table": CSV of trials, "export": best config}``."""
    return {
        "table": Path(options.table or f"studies/{spec.study}.csv"),
        "export": Path(options.export or f"studies/{spec.study}_best.yaml"),
    }


def report(spec: TuneSpec, options: argparse.Namespace) -> optuna.trial.FrozenTrial | None:
    """Print the table of trials, write it as CSV and write the best trial's config; returns the best trial."""
    study = open_study(spec)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, [dim.key for dim in spec.space])
    table, export = outputs(spec, options).values()
    write_csv(rows, table)
    print(format_table(rows))
    kept = counted(trials)
    states = {s: sum(t.state == s for t in kept) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    print(
        f"study {spec.study!r}: {len(kept)} trials ({states[TrialState.COMPLETE]} complete, "
        f"{states[TrialState.PRUNED]} pruned, {states[TrialState.FAIL]} failed); table: {table}"
    )
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    header = f"# lit-meta tune: trial {best.number} of study {spec.study!r}, best {spec.monitor} = {best.value:.6g}\n"
    write_atomically(export, header + best_config_yaml(spec.fit_args, best.params))
    print(f"best trial {best.number}: {spec.monitor} = {best.value:.4f} with {best.params}; config: {export}")
    return best


def main(argv: list[str]) -> None:
    """Entry point of ``lit-meta tune`` (``argv``: the command line after ``tune``)."""
    try:
        spec, options = parse(argv)
        if options.worker is not None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
            work(spec, worker=options.worker, held=options.worker_held)
            return
        check_space(spec.trial_args(0, {}), spec.space)
        for name, path in outputs(spec, options).items():  # now, not after the search
            check_writable(name, path)
        open_study(spec)  # created once, before any worker asks for it
        if options.workers == 1:
            work(spec)
        else:
            try:
                _spawn_workers(argv, spec, options.workers)
            except WorkerError:
                # A worker that died while the others finished its trial (Optuna's retry): the study is
                # whole, so its table and best config are written before the run exits with status 1.
                with contextlib.suppress(Exception):  # the worker's failure is the error to show
                    report(spec, options)
                raise
        if report(spec, options) is None:
            sys.stderr.write(f"{PROG}: error: no trial of study {spec.study!r} completed; see the table above.\n")
            sys.exit(1)
    except TrialError as err:
        # A bug in what a trial runs: its traceback, and the study stops (exit 1); a mistake of the
        # config that only a trial shows: one line (exit 2). Never a one-line "mistake" for a bug's
        # TypeError or ValueError.
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        if err.mistake:
            sys.stderr.write(f"{PROG}: error: {str(err.error).strip().splitlines()[0]}\n")
            sys.exit(2)
        traceback.print_exception(err.error)
        sys.stderr.write(
            f"{PROG}: error: Expected trials that succeed or fail as expected (out of memory, diverged), but {err}; "
            "the study stops (traceback above).\n"
        )
        sys.exit(1)
    except (CommandLineError, ValueError, TypeError, FileNotFoundError, WorkerError) as err:
        # A mistake (found before any trial) exits 2; a worker that broke down, 1.
        if os.environ.get("LIT_META_TRACEBACK"):
            raise
        sys.stderr.write(f"{PROG}: error: {err}\n")
        sys.exit(1 if isinstance(err, WorkerError) else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
