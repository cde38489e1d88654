"""benchmarks/gpu_suite.py in its CPU check mode (``--device cpu --quick``): every part runs, tiny, in its own
process, and the one JSON file holds the device, the versions and each part's results."""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.fabricate import minimal_omniglot

SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def run_suite(tmp_path, *parts: str) -> dict:
    output = tmp_path / "gpu_suite.json"
    data_dir = minimal_omniglot(str(tmp_path / "omniglot"))
    command = [
        sys.executable,
        str(SUITE),
        "--device",
        "cpu",
        "--quick",
        "--output",
        str(output),
        "--data_dir",
        data_dir,
    ]
    # The parts side by side (--jobs): this checks the suite, it measures nothing.
    command += ["--jobs", str(len(parts)), "--parts", *parts]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert output.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    failed = {name: part.get("error") for name, part in report["parts"].items() if part["status"] != "ok"}
    assert result.returncode == 0 and not failed, f"{failed}\n{result.stdout[-2000:]}"
    return report


def test_quick_cpu_suite_writes_every_part_into_one_json(tmp_path):
    """The suite's own parts (the peers table is another script's, slow even when quick: the next test)."""
    report = run_suite(tmp_path, "inner_loop", "maml_memory", "ddp")
    assert {"suite", "date", "command", "quick", "budget_s", "device", "versions", "parts", "wall_s"} <= report.keys()
    assert report["quick"] is True
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    assert {"python", "torch", "cuda", "lightning"} <= report["versions"].keys()
    assert list(report["parts"]) == ["inner_loop", "maml_memory", "ddp"]
    for part in report["parts"].values():
        assert {"status", "command", "wall_s", "results"} <= part.keys()

    (row,) = report["parts"]["inner_loop"]["results"]["rows"]
    assert row["precision"] == "32" and row["meta_batch"] == 1
    assert row["clone_s_per_step"] > 0 and row["batched_s_per_step"] > 0
    memory = report["parts"]["maml_memory"]["results"]["rows"]
    assert [r["backward_per_task"] for r in memory] == [False, True]
    assert all(r["peak_mib"] > 0 and r["seconds"] > 0 for r in memory)
    (ddp,) = report["parts"]["ddp"]["results"]["runs"]  # quick: the 2-process run only
    assert ddp["processes"] == 2 and ddp["global_meta_batch"] == 2 * ddp["meta_batch_per_process"]
    assert ddp["s_per_step"] > 0


@pytest.mark.slow
def test_quick_cpu_suite_runs_the_peers_table(tmp_path):
    report = run_suite(tmp_path, "peers")
    peers = report["parts"]["peers"]
    if not (ROOT / "benchmarks" / "peers.py").exists():
        assert "does not exist" in peers["note"]
    else:
        assert peers["results"]


def load_suite():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_suite
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gpu_suite


def test_a_part_that_fails_or_hangs_is_recorded_with_what_it_wrote(tmp_path):
    gpu_suite = load_suite()
    out = tmp_path / "part.json"
    write_then_fail = f"import pathlib; pathlib.Path({str(out)!r}).write_text('[1]'); raise SystemExit(3)"
    failed = gpu_suite.run_part([sys.executable, "-c", write_then_fail], out, timeout=60)
    assert failed["status"] == "failed" and failed["returncode"] == 3 and failed["results"] == [1]
    hung = gpu_suite.run_part(
        [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], None, 2
    )
    assert hung["status"] == "timeout" and hung["wall_s"] < 30 and "started" in hung["error"]


def test_a_part_that_raises_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    gpu_suite = load_suite()
    monkeypatch.setattr(gpu_suite, "run_part", lambda *a: {"status": "ok", "wall_s": 0, "results": {"device": {}}})
    args = gpu_suite.argparse.Namespace(
        device="cpu",
        quick=True,
        budget=60.0,
        output=str(tmp_path / "out.json"),
        data_dir=None,
        parts=["ddp", "peers"],
        jobs=1,
    )
    suite = gpu_suite.Suite(args, tmp_path)
    monkeypatch.setattr(suite, "ddp", lambda info: 1 / 0)
    monkeypatch.setattr(suite, "peers", lambda: {"status": "ok", "wall_s": 0, "results": {"rows": []}})
    report = suite.run()
    assert report["parts"]["ddp"]["status"] == "failed" and "ZeroDivisionError" in report["parts"]["ddp"]["error"]
    assert report["parts"]["peers"]["status"] == "ok"
    assert json.loads((tmp_path / "out.json").read_text())["parts"].keys() == {"ddp", "peers"}


def test_ddp_is_skipped_with_a_note_below_two_gpus(tmp_path, monkeypatch):
    gpu_suite = load_suite()
    args = gpu_suite.argparse.Namespace(device="cuda", quick=True, budget=60.0, data_dir=None)
    entry = gpu_suite.Suite(args, tmp_path).ddp({"device": {"type": "cuda", "count": 1}})
    assert entry["status"] == "skipped" and "2 GPUs" in entry["note"]


def test_peers_runs_on_cuda_with_its_device_option_and_leaves_the_docs_page_alone(tmp_path, monkeypatch):
    gpu_suite = load_suite()
    ran = []
    monkeypatch.setattr(gpu_suite, "run_part", lambda command, out, timeout: ran.append(command) or {"status": "ok"})
    args = gpu_suite.argparse.Namespace(device="cuda", quick=False, budget=60.0, data_dir="/data/omniglot")
    suite = gpu_suite.Suite(args, tmp_path)
    assert suite.peers()["status"] == "ok"
    (command,) = ran
    options = command[2:]
    assert options[options.index("--device") + 1] == "cuda"
    assert options[options.index("--markdown") + 1] == str(tmp_path / "peers.md")
    assert options[options.index("--data_dir") + 1] == "/data/omniglot"
    assert options[options.index("--rounds") + 1] == "2" and "--quick" not in options
