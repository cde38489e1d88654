"""A real, secured Flower deployment on 127.0.0.1 for tests: a SuperLink and SuperNodes as separate processes.

Flower 1.42: one HTTPS port per SuperLink (it serves the Fleet, Control and ServerAppIo APIs; each
SuperNode serves its ClientAppIo API on a port of its own, for its local ClientApps only),
connections named in ``$FLWR_HOME/config.toml``, and ``flwr run --stream`` blocks until the run
ends (its exit status is 0 even when the ServerApp failed: ``flwr ls`` says how the run ended).

Secured as a deployment across machines would be: the SuperLink serves TLS only (a test CA and a
certificate for 127.0.0.1, see ``tests.helpers.tls``) and authenticates SuperNodes
(``--enable-supernode-auth``): each node's public key is registered with ``flwr supernode register``
before the node starts with its private key; a SuperNode and ``flwr`` verify the SuperLink against
the CA (``--root-certificates``, ``root-certificates`` in ``config.toml``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.tls import write_ca, write_node_keys, write_server_certificate

BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr, and what they spawn by name
CONNECTION = "test-superlink"
HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (the OS's choice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def flower_env(home: Path) -> dict[str, str]:
    """This process's environment for Flower's commands: ``FLWR_HOME=home``, no telemetry, no update
    check, no runtime dependency installation, this interpreter's scripts first on ``PATH``."""
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


def _wait(ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Expected {what}, but the process exited with {process.returncode}.")
        if ready():
            return
        time.sleep(0.2)
    raise TimeoutError(f"Expected {what} within {timeout:g} s.")


def health(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> int:
    """The HTTP status of ``GET url`` (a SuperLink's ``/health``); raises what ``urllib`` raises."""
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.status


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


@dataclass
class Deployment:
    """A running SuperLink (TLS, SuperNode authentication) and the SuperNodes started for it.

    Attributes:
        work: The folder of the processes' logs (``<name>.log``), ``pki/`` and ``flwr_home/``.
        env: The environment in which ``flwr ... CONNECTION`` reaches the SuperLink over TLS.
        port: The SuperLink's HTTPS port on 127.0.0.1.
        ca: The CA certificate the SuperLink's certificate is verified against.
        processes: The SuperLink first, then every SuperNode started, stopped by ``superlink``.
    """

    work: Path
    env: dict[str, str]
    port: int
    ca: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The SuperLink's address as SuperNodes take it."""
        return f"{HOST}:{self.port}"

    @property
    def pki(self) -> Path:
        """The folder of the CA, the SuperLink's certificate and the SuperNodes' keys."""
        return self.work / "pki"

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca))

    def log(self, name: str) -> str:
        """What the process started as ``name`` has written so far."""
        return (self.work / f"{name}.log").read_text(errors="replace")

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        """Start ``command`` in ``work``, its output in ``<name>.log``; it is stopped with the SuperLink."""
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - the process writes to it until stopped
        process = subprocess.Popen(
            command, cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def register(self, public_key: Path) -> int:
        """``flwr supernode register public_key CONNECTION``; returns the node ID the SuperLink gives it."""
        done = subprocess.run(
            [str(BIN / "flwr"), "supernode", "register", str(public_key), CONNECTION, "--format", "json"],
            cwd=self.work, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed ({done.returncode}): {done.stdout}{done.stderr}")
        return int(json.loads(done.stdout)["node-id"])

    def start_supernode(
        self,
        name: str,
        private_key: Path | None,
        node_config: str | None = None,
        *,
        tls: bool = True,
        extra: Sequence[str] = (),
    ) -> subprocess.Popen:
        """Start ``flower-supernode`` for this SuperLink.

        Args:
            name: Its log's name.
            private_key: Its authentication key (OpenSSH format), or None for none.
            node_config: Its ``--node-config``.
            tls: False to connect in plaintext (``--insecure``) instead of TLS verified against the CA.
            extra: More ``flower-supernode`` arguments.

        Returns:
            The process.
        """
        command = [str(BIN / "flower-supernode")]
        command += ["--root-certificates", str(self.ca)] if tls else ["--insecure"]
        command += ["--superlink", self.address, "--host", HOST, "--port", str(free_ports(1)[0])]
        if private_key is not None:
            command += ["--auth-supernode-private-key", str(private_key)]
        if node_config is not None:
            command += ["--node-config", node_config]
        return self.start(name, command + list(extra))

    def connect_supernodes(self, node_configs: list[str]) -> list[int]:
        """Connect one authenticated SuperNode per ``--node-config`` string, over TLS.

        Each gets a key pair (``pki/supernode<i>``, ``pki/supernode<i>.pub``), its public key is
        registered with ``flwr supernode register``, then all start with their private keys (logs
        ``supernode<i>.log``); each is up once it logs the node ID its key was registered under.

        Args:
            node_configs: One ``--node-config`` per SuperNode.

        Returns:
            Their node IDs.
        """
        first = len(list(self.work.glob("supernode*.log")))
        started = []
        for i, config in enumerate(node_configs, start=first):
            private_key, public_key = write_node_keys(self.pki, f"supernode{i}")
            node_id = self.register(public_key)
            started.append((f"supernode{i}", node_id, self.start_supernode(f"supernode{i}", private_key, config)))
        for name, node_id, node in started:
            _wait(
                lambda name=name, node_id=node_id: f"SuperNode ID: {node_id}" in self.log(name),
                node,
                f"{name} to connect as the registered node {node_id}",
            )
        return [node_id for _, node_id, _ in started]


@contextlib.contextmanager
def superlink(work: Path) -> Iterator[Deployment]:
    """A SuperLink on 127.0.0.1 that serves TLS only and admits registered SuperNodes only.

    Writes a CA and a certificate for 127.0.0.1 in ``work/pki`` and a ``config.toml`` whose
    connection ``CONNECTION`` verifies the SuperLink against that CA; every process started through
    the yielded ``Deployment`` is stopped on exit.

    Args:
        work: An existing folder for the logs, certificates and ``FLWR_HOME``.

    Yields:
        The deployment, its SuperLink answering ``/health`` over HTTPS.
    """
    home, pki = work / "flwr_home", work / "pki"
    home.mkdir()
    pki.mkdir()
    ca, ca_key = write_ca(pki)
    certificate, key = write_server_certificate(pki, ca, ca_key, ip=HOST)
    (port,) = free_ports(1)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{HOST}:{port}"\nroot-certificates = "{ca}"\n'
    )
    deployment = Deployment(work=work, env=flower_env(home), port=port, ca=ca)
    try:
        link = deployment.start(
            "superlink",
            [
                str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(certificate),
                "--ssl-keyfile", str(key), "--enable-supernode-auth", "--host", HOST, "--port", str(port),
            ],
        )  # fmt: skip
        context = deployment.tls_context()

        def healthy() -> bool:
            with contextlib.suppress(OSError):
                return health(f"https://{deployment.address}/health", context, timeout=0.5) == 200
            return False

        _wait(healthy, link, "the SuperLink to answer /health over HTTPS")
        yield deployment
    finally:
        _stop(deployment.processes)


@contextlib.contextmanager
def local_deployment(work: Path, node_configs: list[str]) -> Iterator[Deployment]:
    """A ``superlink`` with one authenticated SuperNode per ``--node-config`` string connected to it.

    Args:
        work: An existing folder for the logs, certificates and ``FLWR_HOME``.
        node_configs: One ``--node-config`` per SuperNode (see ``Deployment.connect_supernodes``).

    Yields:
        The deployment; ``flwr run <app> CONNECTION`` reaches it in ``deployment.env``.
    """
    with superlink(work) as deployment:
        deployment.connect_supernodes(node_configs)
        yield deployment


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
