"""What a finished search leaves: the table of trials (printed and as CSV) and the best config."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from lit_meta.tuning.study import retried_numbers

COLUMNS = ("number", "state", "value", "steps", "seconds", "retry_of")


def trial_rows(trials: Sequence[FrozenTrial], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, steps run, seconds, the trial it retries, parameters."""
    replaced = retried_numbers(trials)
    rows = []
    for t in trials:
        seconds = t.duration.total_seconds() if t.duration is not None else None
        state = t.state.name
        if t.state == TrialState.FAIL and t.number in replaced:
            state = "FAIL (retried)"
        history = t.system_attrs.get("retry_history") or [None]
        rows.append(
            {
                "number": t.number,
                "state": state,
                "value": t.value if t.values else None,
                "steps": t.user_attrs.get("steps"),
                "seconds": round(seconds, 1) if seconds is not None else None,
                "retry_of": history[-1],
                **{key: t.params.get(key) for key in keys},
            }
        )
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as aligned text; a parameter's column is headed by its last name (``inner_lr``), or
    by as many of its last names as tell it apart from the others (``optimizer.init_args.lr``)."""
    if not rows:
        return "(no trials)"
    keys = list(rows[0])
    heads = short_names(keys)

    def text(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [[text(row[key]) for key in keys] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def short_names(keys: Sequence[str]) -> list[str]:
    """Each dotted key's shortest suffix of whole names that no other key ends with."""
    parts = [key.split(".") for key in keys]
    names = []
    for i, key in enumerate(parts):
        for length in range(1, len(key) + 1):
            suffix = key[-length:]
            if all(other[-length:] != suffix for j, other in enumerate(parts) if j != i):
                break
        names.append(".".join(suffix))
    return names
