"""``lit-meta federate`` on Flower's deployment runtime, secured: a SuperLink (TLS only, SuperNode
authentication) and two registered SuperNodes started as separate processes on 127.0.0.1 (free
ports), the app of ``configs/federated/flower_app``; the same SuperLink refuses a SuperNode whose key
was never registered, and plaintext connections.

One SuperLink per module (per xdist worker) serves every test; only the app's test connects SuperNodes."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess

import pytest
import torch
from cryptography.hazmat.primitives import serialization

from tests.helpers import ROOT
from tests.helpers.fabricate import omniglot_zip
from tests.helpers.flower_deployment import Deployment, flwr_run, health, superlink
from tests.helpers.tls import write_node_keys

CONFIGS = ROOT / "configs" / "federated" / "omniglot"
NODE_CONFIG = "partition-id={} num-partitions=2"
# How a client sees the SuperLink hang up on plaintext (a close or a reset, whichever the kernel sends first):
HUNG_UP = "without response|without sending a response|Connection reset by peer"
REFUSAL_DEADLINE = 90.0  # seconds: a bound on a hang, not a speed (a refused SuperNode gives up in about 3 s)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A SuperLink serving TLS only, with SuperNode authentication, for every test here."""
    with superlink(tmp_path_factory.mktemp("deployment")) as running:
        yield running


def _gives_up(deployment: Deployment, name: str, node: subprocess.Popen) -> str:
    """Wait (``REFUSAL_DEADLINE`` at most) for the SuperNode ``name`` to exit without a node ID; returns its log."""
    try:
        node.wait(timeout=REFUSAL_DEADLINE)
    except subprocess.TimeoutExpired:
        node.kill()
        pytest.fail(f"{name} still ran after {REFUSAL_DEADLINE:g} s:\n{deployment.log(name)[-3000:]}")
    log = deployment.log(name)
    assert node.returncode != 0, log
    assert "SuperNode ID:" not in log, log
    return log


def test_a_superlink_and_two_authenticated_supernodes_run_the_federated_app_over_tls(deployment, tmp_path):
    data = tmp_path / "data"
    for archive in ("images_background_small1", "images_background_small2"):  # 1 training, 1 test client
        omniglot_zip(str(data), archive, alphabets=1, characters=6)
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(  # the training client is evaluated on its held-out drawers too
        f"rounds: 2\nlocal_steps: 2\nevaluate_every: 1\nlog_dir: {tmp_path / 'logs'}\nversion: deployed\n"
        "evaluate_participants: 1.0\n"
        "strategy:\n  init_args: {min_train_nodes: 1, min_evaluate_nodes: 1, min_available_nodes: 1}\n"
        "data:\n  init_args:\n    local_test_fraction: 0.25\n    data:\n      init_args:\n"
        f"        {{data_dir: {data}, ways: 3, meta_batch_size: 1, test_tasks: 3}}\n"
    )
    config = ",".join(str(p) for p in (CONFIGS / "base.yaml", CONFIGS / "protonet.yaml", overrides))
    assert len(set(deployment.connect_supernodes([NODE_CONFIG.format(i) for i in range(2)]))) == 2
    status = flwr_run(
        ROOT / "configs" / "federated" / "flower_app", f"config='{config}' nodes=2", deployment.env, tmp_path
    )
    assert status.startswith("finished:completed"), (tmp_path / "flwr_run.log").read_text()[-3000:]
    run = tmp_path / "logs" / "deployed"
    result = json.loads((run / "federated_result.json").read_text())
    assert result["settings"]["clients"] == {
        "train": 1,
        "test": 1,
        "sha256": hashlib.sha256(b"train\ntest\n").hexdigest(),
    }
    assert [(r["round"], r["replies"]) for r in result["rounds"]] == [(1, 1), (2, 1)]
    assert result["rounds"][-1]["test-tasks"] == 3  # the test client evaluated after the last round
    assert result["rounds"][-1]["participants-tasks"] == 3 and set(result["participants"]) == {"0"}
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["federated"]["round"] == 2


def test_supernodes_with_an_unregistered_key_or_none_are_refused(deployment):
    private_key, public_key = write_node_keys(deployment.pki, "unregistered")  # valid TLS, a key never registered
    unregistered = deployment.start_supernode("unregistered", private_key, NODE_CONFIG.format(0))
    anonymous = deployment.start_supernode("anonymous", None, NODE_CONFIG.format(1))  # no key: asks to register
    log = _gives_up(deployment, "unregistered", unregistered)
    assert "Failed to activate SuperNode" in log, log
    pem = serialization.load_ssh_public_key(public_key.read_bytes()).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )  # how the SuperLink logs the key it refused
    assert f"{pem!r}, exception: No SuperNode found with the given public key" in deployment.log("superlink")
    log = _gives_up(deployment, "anonymous", anonymous)
    assert "SuperNode authentication is enabled. All SuperNodes must be registered via the CLI." in log, log


def test_the_superlink_refuses_plaintext_connections(deployment):
    address = deployment.address
    assert health(f"https://{address}/health", deployment.tls_context()) == 200
    with pytest.raises(ConnectionResetError, match=HUNG_UP):  # the TLS handshake fails; closed, no HTTP answer
        health(f"http://{address}/health")
    # A SuperNode without TLS (and without a key: Flower's SuperNode itself refuses to send one in plaintext);
    # --max-retries 0: it gives up after the first refused attempt instead of retrying forever.
    node = deployment.start_supernode("plaintext", None, NODE_CONFIG.format(0), tls=False, extra=["--max-retries", "0"])
    log = _gives_up(deployment, "plaintext", node)
    assert re.search(rf"Failed to initialize the connection to the SuperLink.\n.*({HUNG_UP})", log), log
