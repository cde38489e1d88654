"""lit-meta: meta-learning as PyTorch Lightning modules, built on learn2learn."""

from lit_meta.tasks import Task, split_support_query

__version__ = "0.1.0"
__all__ = ["Task", "split_support_query", "__version__"]
