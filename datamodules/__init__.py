"""Episodic datamodules: each batch is a :class:`lit_meta.Task` meta-batch."""

from datamodules.sinusoid import SinusoidDataModule, sample_sinusoid_tasks

__all__ = ["SinusoidDataModule", "sample_sinusoid_tasks"]
