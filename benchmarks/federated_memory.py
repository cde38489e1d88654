"""Peak memory of a federated run: the resident memory of the process and every process it starts
(Ray's workers in ``--backend simulation``), sampled every 0.1 s.

    python benchmarks/federated_memory.py -- --config configs/federated/omniglot/base.yaml \\
        --config configs/federated/omniglot/protonet.yaml --backend simulation --rounds 1

Everything after ``--`` is a ``lit-meta federate`` command line, run in a child process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # a worker that just ended
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("federate", nargs=argparse.REMAINDER, help="-- then a `lit-meta federate` command line")
    options = parser.parse_args()
    args = options.federate[1:] if options.federate[:1] == ["--"] else options.federate
    command = [sys.executable, "-c", "import sys; from lit_meta.cli import main; main(sys.argv[1:])", "federate", *args]
    start = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    process, peak, peak_processes = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        rss = tree_rss(process)
        if rss > peak:
            peak, peak_processes = rss, len(process.children(recursive=True)) + 1
        time.sleep(0.1)
    if child.returncode:
        sys.exit(f"lit-meta federate failed ({child.returncode}): {child.stderr.read()[-2000:]}")
    print(
        f"peak resident memory {peak / 2**30:.2f} GiB over {peak_processes} processes; {time.monotonic() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
