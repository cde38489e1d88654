"""The benchmarks to run first on a lent GPU, in one command that writes one JSON file.

Parts, each in its own process (a CUDA out-of-memory error or a crash in one is recorded in its entry,
and the suite goes on to the next):

- ``inner_loop``: ``benchmarks/inner_loop_omniglot.py``, learn2learn clones against the batched
  (``torch.func.vmap``) inner loop, second-order MAML at meta-batch 32, precisions 32, bf16 and 16;
- ``maml_memory``: ``benchmarks/maml_memory.py``, peak memory of a second-order meta-step with and
  without ``backward_per_task`` at meta-batches 4, 16 and 32;
- ``ddp``: seconds per meta-step of MAML (CNN-4, 16 tasks per process, random 5-way 1-shot tasks) under
  ``Trainer.fit`` on 1 process and on 2 DDP processes (weak scaling: the ideal is the same time per
  step); on CUDA only where there are 2 GPUs or more (skipped with a note otherwise), on CPU with 2
  gloo processes;
- ``peers``: ``benchmarks/peers.py``, where it exists, with ``--device`` (on CUDA skipped with a note where
  it has no such option) and ``--json``, ``--data_dir`` and ``--quick`` where it has them; its table goes to
  the suite's JSON, not to the docs page (``--markdown`` in the suite's folder); a full run trains and tests
  (parts 1 and 2) in 2 rounds of 100 timed steps, the rest of the budget (``make bench-peers`` on CPU takes 12
  minutes with its 4 rounds, sampling and start parts, which are the CPU's).

The whole suite stays within ``--budget`` seconds (8 minutes): each part's time limit is cut to what
is left. ``--device cpu --quick`` runs every part tiny on CPU: about a minute on 2 busy cores, 40 s with
``--jobs 3`` (the parts side by side), as the test of this script runs it.

    .venv/bin/python benchmarks/gpu_suite.py --device cuda --output gpu_suite.json    (or `make gpu-suite`)
    .venv/bin/python benchmarks/gpu_suite.py --device cpu --quick --output /tmp/gpu_suite.json

The JSON file (rewritten after each part): ``suite``, ``date``, ``command``, ``quick``, ``budget_s``,
``wall_s``, ``device`` (name, count, capability, memory in GiB; on CPU the CPU model, cores and torch
threads), ``versions`` (Python, torch, CUDA, cuDNN, Lightning) and ``parts``, one entry per part:
``status`` (``ok``, ``failed``, ``timeout`` or ``skipped``), ``command``, ``wall_s``, ``returncode``,
``results`` (the part's own JSON; what a failed part wrote before it failed), ``error`` (the end of its
output) and ``note``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
PARTS = ("inner_loop", "maml_memory", "ddp", "peers")
#: Each part's own time limit in seconds (full run, quick run); the suite's budget may cut it shorter.
LIMITS = {"inner_loop": (200, 90), "maml_memory": (150, 90), "ddp": (180, 120), "peers": (400, 120)}
DDP_SIZES = {
    False: dict(hidden=64, meta_batch=16, warmup=3, steps=20),
    True: dict(hidden=8, meta_batch=2, warmup=1, steps=2),
}


def device_info(device: str) -> dict[str, Any]:
    """What ran the suite: the device and the versions (in a child process, like the parts: the suite's own
    process never touches CUDA)."""
    import torch

    info: dict[str, Any] = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "lightning": importlib.metadata.version("lightning"),
        }
    }
    if device == "cuda":
        if not torch.cuda.is_available():
            info["device"] = {"type": "cuda", "available": False, "count": 0}
            return info
        properties = torch.cuda.get_device_properties(0)
        info["device"] = {
            "type": "cuda",
            "available": True,
            "name": torch.cuda.get_device_name(),
            "count": torch.cuda.device_count(),
            "capability": list(torch.cuda.get_device_capability()),
            "memory_gib": round(properties.total_memory / 2**30, 1),
        }
    else:
        info["device"] = {
            "type": "cpu",
            "name": cpu_model(),
            "count": 1,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    return info


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ddp_step_time(device: str, processes: int, quick: bool, output: str) -> None:
    """Seconds per MAML meta-step under ``Trainer.fit`` on ``processes`` DDP processes; rank 0 writes
    ``output``. Run as ``gpu_suite.py --child ddp``: Lightning's launcher re-runs that command line for
    the other ranks."""
    import torch
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader

    from lit_meta.algorithms import MAML
    from lit_meta.models import CNN4
    from lit_meta.tasks import Task

    size = DDP_SIZES[quick]
    warmup, steps, meta_batch = size["warmup"], size["steps"], size["meta_batch"]

    class Clock(Callback):
        start = seconds = inner_loop = None

        def _now(self) -> float:
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                self.inner_loop = pl_module.resolved_inner_loop()
                self.start = self._now()

        def on_train_end(self, trainer, pl_module):
            self.seconds = (self._now() - self.start) / steps

    torch.manual_seed(0)
    learner = MAML(CNN4(1, 5, size["hidden"], 4, 28), inner_lr=0.4)  # inner_loop "auto": batched on CUDA
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(meta_batch, 80, 1, 28, 28, generator=generator)
    y = torch.arange(5).repeat(16)[None].expand(meta_batch, -1).contiguous()
    task = Task(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])
    clock = Clock()
    trainer = Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # each process its own tasks
        callbacks=[clock],
    )
    trainer.fit(learner, DataLoader([task] * (warmup + steps), batch_size=None))
    if trainer.global_rank == 0:
        result = {
            "processes": processes,
            "inner_loop": clock.inner_loop,
            "hidden": size["hidden"],
            "meta_batch_per_process": meta_batch,
            "global_meta_batch": meta_batch * processes,
            "steps": steps,
            "s_per_step": clock.seconds,
            "tasks_per_s": meta_batch * processes / clock.seconds,
        }
        Path(output).write_text(json.dumps(result, indent=2) + "\n")


def run_process(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``command`` in the repository root in its own process group; ``(returncode, output)``, with
    ``None`` for a command stopped (its whole group: DDP ranks included) after ``timeout`` seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def run_part(command: list[str], json_path: Path | None, timeout: float) -> dict[str, Any]:
    """One part: its command run, timed, and its JSON (``json_path``) read, even after a failure."""
    start = time.perf_counter()
    returncode, output = run_process(command, timeout)
    entry: dict[str, Any] = {
        "status": "ok" if returncode == 0 else "timeout" if returncode is None else "failed",
        "command": [os.path.relpath(c, ROOT) if c.startswith(str(BENCHMARKS)) else c for c in command],
        "wall_s": round(time.perf_counter() - start, 2),
        "returncode": returncode,
        "results": None,
    }
    if json_path is not None and json_path.exists():
        try:
            entry["results"] = json.loads(json_path.read_text())
        except json.JSONDecodeError as err:
            entry["error"] = f"unreadable JSON: {err}"
    elif json_path is None:
        entry["results"] = {"stdout": output[-4000:]}
    if returncode != 0:
        entry["error"] = (
            output[-4000:] if returncode is not None else f"stopped after {timeout:.0f} s\n{output[-4000:]}"
        )
    elif entry["results"] is None:
        entry["status"] = "failed"
        entry["error"] = f"no results written\n{output[-4000:]}"
    return entry


class Suite:
    """The parts, run one after the other (``--jobs``: side by side) within the budget, into one dictionary."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.python = sys.executable
        self.deadline = time.monotonic() + args.budget

    def timeout(self, part: str) -> float:
        return max(1.0, min(LIMITS[part][self.args.quick], self.deadline - time.monotonic()))

    def script(self, name: str) -> str:
        return str(BENCHMARKS / name)

    def inner_loop(self) -> dict[str, Any]:
        # One process per precision: a precision that fails (an error, an out-of-memory) leaves the others' rows.
        entry: dict[str, Any] = {"status": "ok", "command": [], "wall_s": 0.0, "results": {"rows": []}}
        errors = []
        for precision in ("32",) if self.args.quick else ("32", "bf16", "16"):
            out = self.work / f"inner_loop_{precision}.json"
            command = [
                *(self.python, self.script("inner_loop_omniglot.py"), "--device", self.args.device),
                *("--precision", precision, "--json", str(out)),
                *(("--meta_batch", "1", "--steps", "1") if self.args.quick else ("--meta_batch", "32")),
            ]
            run = run_part(command, out, self.timeout("inner_loop"))
            entry["command"].append(run["command"])
            entry["wall_s"] = round(entry["wall_s"] + run["wall_s"], 2)
            if run["results"] is not None:
                entry["results"].update({k: v for k, v in run["results"].items() if k != "rows"})
                entry["results"]["rows"] += run["results"]["rows"]
            if run["status"] != "ok":
                entry["status"] = run["status"] if entry["status"] == "ok" else entry["status"]
                errors.append(f"precision {precision}: {run.get('error')}")
        if errors:
            entry["error"] = "\n\n".join(errors)
        return entry

    def maml_memory(self) -> dict[str, Any]:
        out = self.work / "maml_memory.json"
        command = [self.python, self.script("maml_memory.py"), "--device", self.args.device, "--json", str(out)]
        if self.args.quick:
            command += ["--meta_batch", "1"]
        return run_part(command, out, self.timeout("maml_memory"))

    def ddp(self, info: dict[str, Any]) -> dict[str, Any]:
        device = info.get("device", {})
        if self.args.device == "cuda" and device.get("count", 0) < 2:
            return {
                "status": "skipped",
                "note": f"DDP needs 2 GPUs or more; this machine has {device.get('count', 0)}",
                "results": None,
            }
        # Quick: only the 2-process run, the one that can break; otherwise 1 process, then 2.
        entry: dict[str, Any] = {"status": "ok", "command": [], "wall_s": 0.0, "results": {"runs": []}}
        for processes in (2,) if self.args.quick else (1, 2):
            out = self.work / f"ddp_{processes}.json"
            command = [
                self.python,
                self.script("gpu_suite.py"),
                "--device",
                self.args.device,
                "--child",
                "ddp",
                str(processes),
                str(out),
            ]
            if self.args.quick:
                command.append("--quick")
            run = run_part(command, out, self.timeout("ddp"))
            entry["command"].append(run["command"])
            entry["wall_s"] = round(entry["wall_s"] + run["wall_s"], 2)
            if run["results"] is not None:
                entry["results"]["runs"].append(run["results"])
            if run["status"] != "ok":
                entry.update(status=run["status"], returncode=run["returncode"], error=run.get("error"))
                break
        runs = {run["processes"]: run["s_per_step"] for run in entry["results"]["runs"]}
        if 1 in runs and 2 in runs:
            # Same tasks per process: the ideal 2-process step takes as long as the 1-process one.
            entry["results"]["scaling_efficiency"] = runs[1] / runs[2]
        return entry

    def peers(self) -> dict[str, Any]:
        path = BENCHMARKS / "peers.py"
        if not path.exists():
            return {"status": "skipped", "note": "benchmarks/peers.py does not exist", "results": None}
        source = path.read_text()
        out = self.work / "peers.json"
        command, notes = [self.python, str(path)], []
        if '"--device"' in source:
            command += ["--device", self.args.device]
        elif self.args.device == "cuda":  # the GPU's time is for GPU figures
            return {"status": "skipped", "note": "peers.py has no --device option: its table would run on CPU"}
        else:
            notes.append("peers.py has no --device option: it ran on its own default device")
        if '"--json"' in source:
            command += ["--json", str(out)]
        else:
            notes.append("peers.py has no --json option: results are the end of its output")
        if self.args.data_dir and '"--data_dir"' in source:
            command += ["--data_dir", self.args.data_dir]
        if '"--markdown"' in source:  # the docs page holds make bench-peers' CPU table
            command += ["--markdown", str(self.work / "peers.md")]
        if self.args.quick and '"--quick"' in source:
            command.append("--quick")
        elif not self.args.quick and '"--rounds"' in source:
            command += ["--rounds", "2", "--timing_steps", "100", "--parts", "protonet", "maml"]
        entry = run_part(command, out if '"--json"' in source else None, self.timeout("peers"))
        if notes:
            entry["note"] = "; ".join(notes)
        return entry

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        info_path = self.work / "info.json"
        info_run = run_part(
            [self.python, self.script("gpu_suite.py"), "--device", self.args.device, "--child", "info", str(info_path)],
            info_path,
            120,
        )
        info = info_run["results"] or {"device": {"type": self.args.device, "error": info_run.get("error")}}
        report: dict[str, Any] = {
            "suite": "gpu_suite",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]],
            "quick": self.args.quick,
            "budget_s": self.args.budget,
            "device": info.get("device"),
            "versions": info.get("versions"),
            "parts": {},
        }
        if self.args.jobs == 1:
            for part in self.args.parts:
                self.record(report, part, self.run_one(part, info), start)
        else:  # side by side: a check of the suite, not a measurement
            with concurrent.futures.ThreadPoolExecutor(self.args.jobs) as pool:
                futures = {part: pool.submit(self.run_one, part, info) for part in self.args.parts}
                for part, future in futures.items():
                    self.record(report, part, future.result(), start)
        return report

    def run_one(self, part: str, info: dict[str, Any]) -> dict[str, Any]:
        """One part's entry; a part that raises (the suite's own mistake) is recorded as failed."""
        if time.monotonic() >= self.deadline:
            return {"status": "skipped", "note": f"the suite's {self.args.budget} s budget was spent"}
        print(f"[gpu_suite] {part} ...", flush=True)
        try:
            return self.ddp(info) if part == "ddp" else getattr(self, part)()
        except Exception as err:
            return {"status": "failed", "error": f"{type(err).__name__}: {err}", "results": None}

    def record(self, report: dict[str, Any], part: str, entry: dict[str, Any], start: float) -> None:
        report["parts"][part] = entry
        print(f"[gpu_suite] {part}: {entry['status']} ({entry.get('wall_s', 0)} s)", flush=True)
        self.save(report, start)

    def save(self, report: dict[str, Any], start: float) -> None:
        report["wall_s"] = round(time.perf_counter() - start, 2)
        Path(self.args.output).write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--output", default="gpu_suite.json", help="the JSON file written (default gpu_suite.json)")
    parser.add_argument("--quick", action="store_true", help="every part tiny (a check of the suite, on CPU)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="the parts to run, in order")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole suite (default 480)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="parts run side by side (default 1; more only to check the suite quickly)"
    )
    parser.add_argument("--data_dir", help="Omniglot folder, passed to the parts that read data (peers.py)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "info":
            Path(args.child[1]).write_text(json.dumps(device_info(args.device), indent=2) + "\n")
        elif args.child[0] == "ddp":
            ddp_step_time(args.device, int(args.child[1]), args.quick, args.child[2])
        return
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as work:
        report = Suite(args, Path(work)).run()
    failed = [name for name, part in report["parts"].items() if part["status"] in ("failed", "timeout")]
    print(f"[gpu_suite] wrote {args.output} in {report['wall_s']} s; failed: {', '.join(failed) or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
