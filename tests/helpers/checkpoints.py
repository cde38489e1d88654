"""Checkpoints of `lit-meta fit` on fabricated Omniglot, and image folders to adapt them to."""

from __future__ import annotations

from pathlib import Path

from lit_meta.cli import main
from tests.helpers import ROOT
from tests.helpers.fabricate import minimal_omniglot, png_bytes


def fit_checkpoint(folder: Path, learner: str, *options: str) -> Path:
    """The best checkpoint of `lit-meta fit` with `configs/omniglot/<learner>.yaml` on fabricated
    Omniglot (12 characters) in ``folder``."""
    minimal_omniglot(str(folder / "data"), characters=12)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "omniglot" / "base.yaml"),
            "--config",
            str(ROOT / "configs" / "omniglot" / f"{learner}.yaml"),
            f"--data.data_dir={folder / 'data'}",
            "--data.val_tasks=2",
            "--data.test_tasks=2",
            f"--trainer.default_root_dir={folder}",
            f"--trainer.logger.init_args.save_dir={folder / 'logs'}",
            "--trainer.enable_progress_bar=false",
            *options,
        ]
    )
    return next((folder / "logs").rglob("best.ckpt"))


def task_folders(root: Path, classes: int = 3, queries: int = 4, mode: str = "L") -> tuple[Path, Path]:
    for part, count in (("support", 1), ("query", queries)):
        for k in range(classes):
            (root / part / f"char{k}").mkdir(parents=True)
            for i in range(count):
                (root / part / f"char{k}" / f"{i}.png").write_bytes(png_bytes(1000 * k + 7 * (i + (part == "query"))))
    return root / "support", root / "query"
