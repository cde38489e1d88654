"""Distributed hyper-parameter search of ``lit-meta fit`` configs on Optuna (``lit-meta tune``).

- :mod:`~lit_meta.tuning.space`: the search space, YAML keyed by ``lit-meta fit`` argument names.
- :mod:`~lit_meta.tuning.fit_config`: the trial's command line, checked against the fit parser
  before any trial runs, and the best trial's complete config.
- :mod:`~lit_meta.tuning.storage`: journal file or SQLAlchemy database, with heartbeats and retries,
  and a connection timeout.
- :mod:`~lit_meta.tuning.pruning`: every validation reported to the pruner at its count.
- :mod:`~lit_meta.tuning.study`: the worker loop, one ``lit-meta fit`` per trial; the study holds the
  trial budget; a bug in a trial stops it, an expected failure (out of memory, divergence) does not.
- :mod:`~lit_meta.tuning.report`: the table of trials and its CSV.
- :mod:`~lit_meta.tuning.cli`: the command.

Nothing in the rest of ``lit_meta`` imports this package (bar the ``lit-meta tune`` dispatch), so
Optuna is only needed to tune.
"""

from lit_meta.extras import require_extra

require_extra("tune", "hyper-parameter search (lit_meta.tuning, `lit-meta tune`)")

from lit_meta.tuning.space import Dimension, load_space, parse_space  # noqa: E402
from lit_meta.tuning.study import TuneSpec, counted, open_study, work  # noqa: E402

__all__ = ["Dimension", "TuneSpec", "counted", "load_space", "open_study", "parse_space", "work"]
