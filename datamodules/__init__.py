"""Episodic datamodules: each batch is a :class:`lit_meta.Task` meta-batch."""

from datamodules.cifar_fs import CIFARFSDataModule
from datamodules.episodic import EpisodicDataModule
from datamodules.fc100 import FC100DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mini_imagenet import MiniImageNetDataModule
from datamodules.omniglot import OmniglotDataModule
from datamodules.sinusoid import SinusoidDataModule, sample_sinusoid_tasks
from datamodules.tiered_imagenet import TieredImageNetDataModule

__all__ = [
    "CIFARFSDataModule",
    "EpisodicDataModule",
    "FC100DataModule",
    "ImageFolderDataModule",
    "MiniImageNetDataModule",
    "OmniglotDataModule",
    "SinusoidDataModule",
    "TieredImageNetDataModule",
    "sample_sinusoid_tasks",
]
