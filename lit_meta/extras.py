"""The optional parts of lit-meta and the extra that installs each: one line, naming the extra, when a
part is used without it (``pip install 'lit-meta[federated]'``), instead of a ``ModuleNotFoundError``
deep in an import."""

from __future__ import annotations

import importlib.util
import os
import sys

#: extra -> the third-party modules its parts import.
EXTRAS = {"federated": ("flwr", "ray"), "tune": ("optuna", "sqlalchemy")}


class MissingExtraError(ImportError):
    """A part of lit-meta was used without the extra that installs its libraries."""


def require_extra(extra: str, part: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise :class:`MissingExtraError` unless the libraries of ``extra`` are installed.

    Args:
        extra: the extra's name, e.g. ``"federated"``.
        part: what needs it, e.g. "`lit-meta federate` (lit_meta.federated)".
        modules: the top-level modules to look for (default: all of :data:`EXTRAS` ``[extra]``).
    """
    for module in modules or EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, or half-installed
            found = False
        if not found:
            raise MissingExtraError(
                f"Expected the `{extra}` extra for {part}, but {module!r} is not installed "
                f"(pip install 'lit-meta[{extra}]')."
            )


LEARN2LEARN = (
    "Expected learn2learn 0.2.0, but it is not installed: run `lit-meta install-learn2learn` (it builds it for "
    "Python >= 3.11, whose PyPI sdist does not compile), or `pip install learn2learn==0.2.0` on Python <= 3.10."
)


def require_learn2learn() -> None:
    """Raise :class:`MissingExtraError` saying how to install learn2learn, unless it is installed."""
    try:
        found = importlib.util.find_spec("learn2learn") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(LEARN2LEARN)


#: lit-meta's top-level packages besides ``lit_meta``, which a user's own folder of the same name could shadow.
SIBLINGS = ("datamodules", "callbacks")


def shadowed() -> dict[str, str]:
    """``{package: file imported instead}`` for each of :data:`SIBLINGS` that resolves to another
    folder than lit-meta's own (a user's ``datamodules/`` in the working directory, first on the path)."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = {}
    for package in SIBLINGS:
        module = sys.modules.get(package)
        origin = getattr(module, "__file__", None) if module is not None else None
        if origin is None:
            try:
                spec = importlib.util.find_spec(package)
            except (ImportError, ValueError):
                continue
            origin = spec.origin if spec is not None else None
        if origin and os.path.dirname(os.path.dirname(os.path.abspath(origin))) != home:
            found[package] = origin
    return found


def shadowing_note(message: str) -> str:
    """For an error ``message`` about a class of ``datamodules`` or ``callbacks``: which file was
    imported instead of lit-meta's package, if another one shadows it; else ``""``."""
    for package, origin in shadowed().items():
        if f"{package}." in message:
            return (
                f" (`{package}` was imported from {origin!r}, which shadows lit-meta's own `{package}` "
                "package: rename that folder)"
            )
    return ""
