"""Resolving ``"package.module.Name"`` class paths, as configs and checkpoints name classes."""

from __future__ import annotations

import importlib


def import_subclass(class_path: object, base: type) -> type | None:
    """The class named ``"package.module.Name"`` if it is a subclass of ``base``; ``None`` otherwise
    (not a class path, not importable, or another class)."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) and issubclass(found, base) else None
