"""lit-meta: meta-learning as PyTorch Lightning modules, built on learn2learn."""

try:
    import learn2learn  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "lit-meta needs learn2learn 0.2.0, which is not installed. Its PyPI sdist does not build on "
        "Python >= 3.11; run `make setup` in the lit-meta repository (it builds a wheel with Cython 3 "
        "via scripts/build_learn2learn.sh), or `pip install learn2learn==0.2.0` on Python <= 3.10."
    ) from err

from lit_meta.tasks import Task, split_support_query

__version__ = "0.1.0"
__all__ = ["Task", "split_support_query", "__version__"]
