"""benchmarks/peers.py (`make bench-peers`): its --quick smoke run, lit-meta's side always, the peers' where
their virtual environment (.cache/peers-venv, built by the make target) exists."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)

DATA = Path(os.environ.get("LIT_META_DATA", ROOT.parent / "shared" / "data")) / "omniglot"
needs_omniglot = pytest.mark.skipif(
    not (DATA / "images_background_small1.zip").exists(), reason=f"no Omniglot minimal zips in {DATA}"
)
needs_peers = pytest.mark.skipif(not peers.PEERS_PYTHON.exists(), reason="no .cache/peers-venv (make bench-peers)")


def quick(tmp_path: Path, *options: str) -> dict:
    output = tmp_path / "peers.json"
    report = peers.main(["--quick", "--in_process", "--data_dir", str(DATA), "--output", str(output), *options])
    assert json.loads(output.read_text())["run"] == report["run"]
    return report


@needs_omniglot
def test_quick_run_measures_lit_meta(tmp_path):
    report = quick(tmp_path, "--sides", "lit-meta", "--parts", "protonet", "maml", "sampling")
    assert report["run"]["sides"] == ["lit-meta"]
    for algorithm in ("protonet", "maml"):
        lit_meta = report["training"][algorithm]["lit-meta"]
        assert lit_meta["errors"] == []
        assert lit_meta["seconds_per_step"] > 0 and lit_meta["peak_rss_mib"] > 0
        assert lit_meta["test_tasks"] == 4 and 0 <= lit_meta["accuracy"] <= 100
    assert report["sampling"]["lit-meta"][0] > 0 and report["sampling"]["peer"][0] > 0
    assert [row[1] for row in peers.rows(report)].count("s / meta-step") == 0  # no peer: no ratio rows
    assert not (tmp_path / "peers.md").exists()


@needs_omniglot
@needs_peers
def test_quick_run_measures_the_peers(tmp_path):
    report = quick(tmp_path, "--parts", "protonet", "maml", "--markdown", str(tmp_path / "peers.md"))
    for algorithm, sides in peers.SIDES.items():
        for side in sides:
            figures = report["training"][algorithm][side]
            assert figures["errors"] == [], (algorithm, side)
            assert figures["seconds_per_step"] > 0 and figures["test_tasks"] == 4
    assert len([row for row in peers.rows(report) if row[1] == "s / meta-step"]) == 3
    text = (tmp_path / "peers.md").read_text()
    assert "| Prototypical Networks (Euclidean distance) vs easyfsl" in text
    assert "| Prototypical Networks (squared Euclidean distance) vs learn2learn" in text


def test_the_peers_backbone_is_lit_metas_layer_for_layer():
    import torch

    for downsample in ("maxpool", "stride"):
        reference, copy = peers.lit_meta_backbone(downsample), peers.PlainCNN4(downsample)
        copy.load_state_dict(reference.state_dict(), strict=True)
        x = torch.randn(3, 1, 28, 28)
        assert torch.equal(copy(x), reference(x))


def test_start_times_alternate_and_count_every_repeat():
    times = peers.start_times(2, {"a": [sys.executable, "-c", "pass"], "b": [sys.executable, "-c", "pass"]})
    assert [len(times["a"]), len(times["b"])] == [2, 2] and min(times["a"] + times["b"]) > 0


def test_the_docs_section_is_replaced_not_appended_twice(tmp_path):
    page = tmp_path / "peers.md"
    page.write_text("# Peers\n\nText.\n")
    peers.write_markdown(page, "first\n")
    peers.write_markdown(page, "second\n")
    text = page.read_text()
    assert text.startswith("# Peers\n\nText.\n") and text.count(peers.BEGIN) == 1
    assert "second" in text and "first" not in text


def test_each_protonet_pair_is_the_same_model_distance_included():
    """easyfsl scores by the Euclidean distance, learn2learn by its square: each is measured against the lit-meta
    side with its distance, and the table's lit-meta column is that side's."""
    assert peers.DISTANCES[peers.LIT_META_SIDE["easyfsl"]] == "euclidean_unsquared"
    assert peers.DISTANCES[peers.LIT_META_SIDE["l2l-lightning"]] == "euclidean"
    side = {"errors": [], "seconds_per_step": 0.1, "seconds_per_round": [0.1], "training_rss_mib": 1.0}
    report = {
        "training": {
            "protonet": {
                "lit-meta": {**side, "seconds_per_step": 0.2},
                "lit-meta-unsquared": {**side, "seconds_per_step": 0.3},
                "easyfsl": side,
                "l2l-lightning": side,
            }
        }
    }
    steps = {row[0]: row[2] for row in peers.rows(report) if row[1] == "s / meta-step"}
    assert steps == {
        f"Prototypical Networks (Euclidean distance) vs {peers.PEER_NAMES['easyfsl']}": "0.300 (1 round)",
        f"Prototypical Networks (squared Euclidean distance) vs {peers.PEER_NAMES['l2l-lightning']}": "0.200 (1 round)",
    }


def test_jobs_carry_the_device_and_cuda_is_refused_without_one(tmp_path, monkeypatch, capsys):
    args = peers.parse_args(["--quick", "--device", "cpu"])
    jobs = peers.training_jobs(args, ["lit-meta", "lit-meta-unsquared", "easyfsl"], tmp_path)
    assert {job["device"] for job in jobs} == {"cpu"}
    assert [job["side"] for job in jobs if job["algorithm"] == "protonet"] == [
        "lit-meta",
        "lit-meta-unsquared",
        "easyfsl",
    ]
    assert peers.parse_args(["--device", "cpu"]).markdown == str(peers.DOCS_PAGE)
    monkeypatch.setattr(peers.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        peers.parse_args(["--device", "cuda"])
    assert "Expected a CUDA device for `--device cuda`, but got none" in capsys.readouterr().err
    monkeypatch.setattr(peers.torch.cuda, "is_available", lambda: True)
    assert peers.parse_args(["--device", "cuda"]).markdown is None  # the docs page holds the CPU table
