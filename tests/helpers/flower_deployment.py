"""A real Flower deployment on 127.0.0.1 for tests: a SuperLink and SuperNodes as separate processes.

Flower 1.42: one HTTP port per process (the SuperLink's serves the Fleet, Control and ServerAppIo
APIs; each SuperNode's its ClientAppIo API), connections named in ``$FLWR_HOME/config.toml``, and
``flwr run --stream`` blocks until the run ends (its exit status is 0 even when the ServerApp
failed: ``flwr ls`` says how the run ended).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr, and what they spawn by name
CONNECTION = "test-superlink"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def flower_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_HOME=str(home),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _wait(ready, process: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Expected {what}, but the process exited with {process.returncode}.")
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"Expected {what} within {timeout:g} s.")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


def _descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(processes: list[subprocess.Popen]) -> None:
    """SuperNodes first (they would retry a stopped SuperLink forever), then the SuperLink; then any
    process they started that is still there (the SuperLink's SuperExec runs in its own session)."""
    tracked = [p.pid for p in processes] + _descendants([p.pid for p in processes])
    for process in processes[1:] + processes[:1]:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid in tracked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def local_deployment(work: Path, node_configs: list[str]) -> Iterator[dict[str, str]]:
    """A SuperLink and one SuperNode per ``--node-config`` string, started in ``work``; yields the
    environment in which ``flwr run <app> CONNECTION`` reaches them. Everything is stopped on exit."""
    home = work / "flwr_home"
    home.mkdir(parents=True)
    link_port, *node_ports = free_ports(1 + len(node_configs))
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env, processes = flower_env(home), []

    def start(name: str, command: list[str]) -> subprocess.Popen:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the process writes to it until stopped
        process = subprocess.Popen(
            command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        processes.append(process)
        return process

    try:
        link = start(
            "superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link_port)]
        )
        _wait(lambda: _healthy(link_port), link, "the SuperLink to answer /health")
        for i, (config, port) in enumerate(zip(node_configs, node_ports)):
            node = start(
                f"supernode{i}",
                [
                    str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                    "--host", "127.0.0.1", "--port", str(port), "--node-config", config,
                ],
            )  # fmt: skip
            log = work / f"supernode{i}.log"
            _wait(
                lambda log=log: "SuperNode ID:" in log.read_text(errors="replace"), node, f"SuperNode {i} to register"
            )
        yield env
    finally:
        _stop(processes)


def flwr_run(app: Path, run_config: str, env: dict[str, str], work: Path, timeout: float = 400.0) -> str:
    """``flwr run app --stream --run-config ...``; returns how the run ended (``flwr ls``'s status,
    e.g. ``"finished:completed"``)."""
    command = [str(BIN / "flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", run_config]
    with open(work / "flwr_run.log", "wb") as log:
        subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=True)
    listed = subprocess.run(
        [str(BIN / "flwr"), "ls", CONNECTION, "--format", "json"], cwd=work, env=env, capture_output=True, text=True
    )
    runs = json.loads(listed.stdout)["runs"]
    return f"{runs[0]['status']} {runs[0].get('status-details', '')}".strip() if runs else "no run"
