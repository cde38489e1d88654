"""Where lit-meta keeps data sets: one folder per data set under a user data folder, outside any repository.

The folder is, in this order:

1. ``$LIT_META_DATA``, when set (e.g. ``export LIT_META_DATA=/data/few-shot``);
2. ``$XDG_CACHE_HOME/lit-meta``, when ``XDG_CACHE_HOME`` is set;
3. ``~/.cache/lit-meta``.

A datamodule given no ``data_dir`` reads (and downloads into) :func:`data_dir` of its data set, e.g.
``OmniglotDataModule()`` the zips of ``$LIT_META_DATA/omniglot``.
"""

from __future__ import annotations

import os

__all__ = ["ENV_VAR", "data_dir", "data_root"]

ENV_VAR = "LIT_META_DATA"


def data_root() -> str:
    """The user data folder (absolute; it need not exist yet): ``$LIT_META_DATA``, else
    ``$XDG_CACHE_HOME/lit-meta``, else ``~/.cache/lit-meta``. An empty variable counts as unset."""
    if root := os.environ.get(ENV_VAR):
        return os.path.abspath(os.path.expanduser(root))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(os.path.expanduser(cache), "lit-meta"))


def data_dir(name: str) -> str:
    """The folder of data set ``name`` in the user data folder: ``<data_root()>/<name>``.

    Args:
        name: the data set's folder name, e.g. ``"omniglot"`` or ``"mini-imagenet"``.

    Raises:
        ValueError: ``name`` is not a single folder name.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"Expected a data set's folder name, such as 'omniglot', but got {name!r}.")
    return os.path.join(data_root(), name)
