"""A throw-away PostgreSQL 15 server in a temporary folder, on a free local port, for one test.

The server refuses to run as root: as root, its commands run as the ``postgres`` system user
(``runuser``), and the folder is handed to that user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(os.environ.get("LIT_META_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (BIN / "initdb").is_file() and (BIN / "pg_ctl").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL (``postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres``),
    then stop it and delete its folder."""
    root = Path(tempfile.mkdtemp(prefix="lit-meta-pg-"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    try:
        subprocess.run(
            _as_server_user([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_server_user([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]),
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while subprocess.run([str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.2)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            subprocess.run(
                _as_server_user([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
            )
        shutil.rmtree(root, ignore_errors=True)
