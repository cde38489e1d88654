"""Episodic datamodules: each batch is a :class:`lit_meta.Task` meta-batch."""

from lit_meta.extras import require_learn2learn

require_learn2learn()  # task datasets are learn2learn's: one line if it is missing


from datamodules.cifar_fs import CIFARFSDataModule  # noqa: E402
from datamodules.episodic import EpisodicDataModule  # noqa: E402
from datamodules.fc100 import FC100DataModule  # noqa: E402
from datamodules.image_folder import ImageFolderDataModule  # noqa: E402
from datamodules.mini_imagenet import MiniImageNetDataModule  # noqa: E402
from datamodules.omniglot import OmniglotDataModule  # noqa: E402
from datamodules.sinusoid import SinusoidDataModule, sample_sinusoid_tasks  # noqa: E402
from datamodules.synthetic import SyntheticDevices, synthetic_device  # noqa: E402
from datamodules.tiered_imagenet import TieredImageNetDataModule  # noqa: E402

__all__ = [
    "CIFARFSDataModule",
    "EpisodicDataModule",
    "FC100DataModule",
    "ImageFolderDataModule",
    "MiniImageNetDataModule",
    "OmniglotDataModule",
    "SinusoidDataModule",
    "SyntheticDevices",
    "TieredImageNetDataModule",
    "sample_sinusoid_tasks",
    "synthetic_device",
]
