"""What a finished search leaves: the table of trials (printed and as CSV) and the best config.

Both files are checked before the first trial (:func:`check_writable`), so that a path that cannot be
written fails in a second, not after the search, and written whole or not at all
(:func:`write_atomically`): a reader, or a crash mid-write, never sees half a table.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from lit_meta.files import atomic_open
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


def check_writable(name: str, path: str | Path) -> None:
    """Create the folder of output ``path`` (of option ``name``) and check that a file can be written there.

    Raises:
        ValueError: ``path`` is a folder, or its folder cannot be created (a file is in the way) or
            written (one line, naming the option).
    """
    path = Path(path)

    def refuse(reason: str) -> ValueError:
        return ValueError(f"Expected `{name}` in a folder that can be written, but got {str(path)!r} ({reason}).")

    if path.is_dir():
        raise refuse("a folder")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in (folder, *folder.parents) if p.exists() and not p.is_dir())
        raise refuse(f"{str(blocker)!r} is not a folder") from None
    except OSError as err:
        raise refuse(f"{folder} cannot be created: {(err.strerror or str(err)).lower()}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise refuse(f"{folder} cannot be written: {(err.strerror or str(err)).lower()}") from None


def write_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (:func:`lit_meta.files.atomic_open`), its folder created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", newline="") as f:
        f.write(text)


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the ``rows`` of :func:`trial_rows` as CSV, whole (:func:`write_atomically`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else list(COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


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
