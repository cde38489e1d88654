"""Writing files so that a kill or a full disk never leaves a half-written one: the new content goes
to a temporary file in the same folder, is flushed to disk, and replaces the old file in one rename
(``os.replace``, atomic on POSIX file systems). Until then the previous file is intact.

Every file lit-meta writes for a user (checkpoints, results, predictions, tables) goes through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import torch

#: What the operating system says when a file cannot be written: no space (or quota, or file size limit),
#: no permission, a read-only file system, a path through a file, a missing folder.
WRITE_ERRNOS = (
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.ENOENT,
)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``, on an
    error it is removed and ``path`` keeps its previous content.

    Args:
        path: the file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        **kwargs: passed to :func:`open` (``newline``, ``encoding``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Expected `mode` 'w' or 'wb', but got {mode!r}.")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as `open` would create it (mkstemp's file is private)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = path  # a failed write names no file: name the one the user asked for
        raise


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], binary: bool = False, **kwargs: Any) -> None:
    """Call ``write(file)`` on a temporary file that then replaces ``path`` (see :func:`atomic_open`)."""
    with atomic_open(path, "wb" if binary else "w", **kwargs) as f:
        write(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it, before any long work.

    Args:
        folder: the folder.
        what: how the error names it, e.g. "the log folder (`trainer.logger.init_args.save_dir`)".

    Raises:
        ValueError: the folder cannot be created or written (one line, with the system's reason).
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"Expected {what} {os.fspath(folder)!r} to be writable, but got: {err.strerror}.") from err


def write_failure(err: BaseException) -> OSError | None:
    """The ``OSError`` of ``err``'s chain that says a file could not be written (no space, no permission,
    read-only), if there is one."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


def cannot_write(err: OSError) -> str:
    """The one line for a file that could not be written (see :func:`write_failure`)."""
    where = f" {err.filename!r}" if err.filename else " a file"
    return f"Expected to write{where}, but got: {err.strerror or err}; the previous file, if any, is intact."
