"""Episodic datamodules: each batch is a :class:`lit_meta.Task` meta-batch."""

from datamodules.episodic import EpisodicDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.omniglot import OmniglotDataModule
from datamodules.sinusoid import SinusoidDataModule, sample_sinusoid_tasks

__all__ = ["EpisodicDataModule", "ImageFolderDataModule", "OmniglotDataModule", "SinusoidDataModule", "sample_sinusoid_tasks"]
