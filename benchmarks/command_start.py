"""Seconds to start ``lit-meta fit --help`` against those to import Lightning, and their ratio.

Each command runs in a fresh process, stdout discarded; the two alternate (one untimed run of each
first, to warm the file cache), so machine load hits both. The ratio is of the medians of wall time: what
the ``lit-meta`` command adds to the import of ``lightning.pytorch`` it cannot do without. The ratio of
the medians of CPU time (user + system, of the process and its children) is printed beside it: on a
loaded machine it varies less.
``--imports`` also lists, from ``python -X importtime``, the import time of the modules the command
imports and the baseline does not, by top-level package (one run each: noisy). The rest of the
difference is the command's own work: LightningCLI building its parsers and printing the help.

    .venv/bin/python benchmarks/command_start.py [--runs 5] [--json command_start.json] [--imports]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMAND = [str(BIN / "lit-meta"), "fit", "--help"]
BASELINE = [sys.executable, "-c", "import lightning.pytorch"]


def seconds(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``command``; raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def import_times(command: list[str]) -> dict[str, int]:
    """``module: self microseconds`` from ``python -X importtime`` for ``command``, whose first element is
    a Python console script or the interpreter itself."""
    argv = [sys.executable, "-X", "importtime", *(command[1:] if command[0] == sys.executable else command)]
    stderr = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    found = {}
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if match:
            found.setdefault(match.group(2), int(match.group(1)))
    return found


def extra_imports(command: list[str], baseline: list[str]) -> list[dict]:
    """The import time of the modules ``command`` imports and ``baseline`` does not, summed by top-level
    package (their own time, without what they import that ``baseline`` imports too), largest first."""
    ours, theirs = import_times(command), import_times(baseline)
    packages: dict[str, list[float]] = {}
    for name, micros in ours.items():
        if name not in theirs:
            packages.setdefault(name.partition(".")[0], []).append(micros / 1000)
    rows = [{"package": name, "ms": sum(times), "modules": len(times)} for name, times in packages.items()]
    return sorted(rows, key=lambda row: -row["ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--imports", action="store_true", help="list the modules the command adds (-X importtime)")
    args = parser.parse_args()
    seconds(COMMAND), seconds(BASELINE)  # warm-up, untimed
    times: dict[str, list[tuple[float, float]]] = {"command": [], "baseline": []}
    for _ in range(args.runs):
        times["command"].append(seconds(COMMAND))
        times["baseline"].append(seconds(BASELINE))
    result: dict = {"command": " ".join(COMMAND), "baseline": " ".join(BASELINE), "runs": args.runs}
    for name, runs in times.items():
        result[f"{name}_seconds"] = [round(wall, 3) for wall, _ in runs]
        result[f"{name}_cpu_seconds"] = [round(cpu, 3) for _, cpu in runs]
        result[f"{name}_median_s"] = statistics.median(wall for wall, _ in runs)
        result[f"{name}_median_cpu_s"] = statistics.median(cpu for _, cpu in runs)
    result["ratio"] = result["command_median_s"] / result["baseline_median_s"]
    result["cpu_ratio"] = result["command_median_cpu_s"] / result["baseline_median_cpu_s"]
    for name in times:
        print(
            f"{result[name]}: median {result[f'{name}_median_s']:.3f} s of {result[f'{name}_seconds']}, "
            f"CPU {result[f'{name}_median_cpu_s']:.3f} s of {result[f'{name}_cpu_seconds']}"
        )
    print(f"ratio: {result['ratio']:.3f} (CPU time: {result['cpu_ratio']:.3f})")
    if args.imports:
        result["extra_imports"] = extra_imports(COMMAND, BASELINE)
        total = sum(row["ms"] for row in result["extra_imports"])
        print(f"imported by the command only: {total:.0f} ms (-X importtime, one run), by package:")
        for row in result["extra_imports"][:20]:
            print(f"  {row['ms']:7.1f} ms  {row['package']} ({row['modules']} modules)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
