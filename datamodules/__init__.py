"""Episodic datamodules: each batch is a :class:`lit_meta.Task` meta-batch."""

from datamodules.episodic import EpisodicDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.omniglot import OmniglotDataModule
from datamodules.sinusoid import SinusoidDataModule, sample_sinusoid_tasks
from datamodules.vision import CIFARFSDataModule, FC100DataModule, MiniImageNetDataModule, TieredImageNetDataModule

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
