"""Small learners and data for tests: every algorithm, built the same way."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.utils.data import DataLoader

from lit_meta.algorithms import (
    ANIL,
    MAML,
    Ditto,
    FedRep,
    MatchingNetworks,
    MetaDistillation,
    MetaLearner,
    MetaSGD,
    PerFedAvg,
    PFedMe,
    PrototypicalNetworks,
    Reptile,
    SupervisedTransfer,
)
from lit_meta.meta_cli import make_cli
from lit_meta.models import MLP
from tests.helpers.tasks import make_classification_task

WAYS, FEATURES = 3, 4


def _mlp(out: int) -> MLP:
    return MLP(FEATURES if out == WAYS else 1, (8,), out)


def _mlp_norm(out: int) -> MLP:
    """The MLP with a BatchNorm after its hidden layer (batch statistics), for per-step BatchNorm."""
    mlp = _mlp(out)
    mlp.features = nn.Sequential(mlp.features[0], nn.BatchNorm1d(8, track_running_stats=False), mlp.features[1])
    return mlp


# What the MAML++ learners share: two inner steps with learned rates and the multi-step loss.
_PLUS_PLUS = {
    "inner_lr": 0.1,
    "inner_steps": 2,
    "eval_inner_steps": 3,
    "learn_inner_lrs": True,
    "multi_step_loss_steps": 10,
}

# Every algorithm in lit_meta.algorithms, built by (output size, loss). A new algorithm must be added
# here: tests/lit_meta/algorithms/test_contract.py fails until it is.
LEARNERS = {
    "maml": lambda out, loss: MAML(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "maml_batched": lambda out, loss: MAML(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "maml_per_task": lambda out, loss: MAML(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, backward_per_task=True
    ),
    # MAML++: every option on, the clone loop with per-step BatchNorm; the batched one anneals the order.
    "maml_plus_plus": lambda out, loss: MAML(_mlp_norm(out), loss=loss, per_step_batch_norm=True, **_PLUS_PLUS),
    "maml_plus_plus_batched": lambda out, loss: MAML(
        _mlp(out), loss=loss, inner_loop="batched", first_order_steps=1, **_PLUS_PLUS
    ),
    "fomaml": lambda out, loss: MAML(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, first_order=True),
    "metasgd": lambda out, loss: MetaSGD(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "metasgd_batched": lambda out, loss: MetaSGD(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "anil": lambda out, loss: ANIL(_mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2),
    "anil_batched": lambda out, loss: ANIL(
        _mlp(out), inner_lr=0.1, loss=loss, eval_inner_steps=2, inner_loop="batched"
    ),
    "reptile": lambda out, loss: Reptile(_mlp(out), inner_lr=0.1, inner_steps=2, loss=loss, eval_inner_steps=2),
    "protonet": lambda out, loss: PrototypicalNetworks(_mlp(out)),
    "protonet_cosine": lambda out, loss: PrototypicalNetworks(_mlp(out), distance="cosine"),
    "matching": lambda out, loss: MatchingNetworks(_mlp(out)),
    "matching_fce": lambda out, loss: MatchingNetworks(_mlp(out), fce=True, fce_steps=2),
    "supervised": lambda out, loss: SupervisedTransfer(_mlp(out)),
    "supervised_finetune": lambda out, loss: SupervisedTransfer(_mlp(out), adapt="finetune", finetune_steps=3),
    # Personalised federated learning baselines (lit_meta/algorithms/{perfedavg,ditto,fedrep,pfedme}.py).
    "perfedavg_fo": lambda out, loss: PerFedAvg(
        _mlp(out), alpha=0.1, beta=0.05, variant="fo", loss=loss, eval_inner_steps=2
    ),
    "perfedavg_hf": lambda out, loss: PerFedAvg(
        _mlp(out), alpha=0.1, beta=0.05, variant="hf", loss=loss, eval_inner_steps=2
    ),
    "ditto": lambda out, loss: Ditto(_mlp(out), lam=0.1, lr=0.1, loss=loss, eval_inner_steps=2),
    "fedrep": lambda out, loss: FedRep(_mlp(out), head_steps=1, lr=0.1, loss=loss, eval_inner_steps=2),
    "fedrep_new_head": lambda out, loss: FedRep(
        _mlp(out), head_steps=1, lr=0.1, eval_head="new", loss=loss, eval_inner_steps=2
    ),
    "pfedme": lambda out, loss: PFedMe(
        _mlp(out), lam=15.0, personal_lr=0.05, personal_steps=2, lr=0.05, loss=loss, eval_inner_steps=2
    ),
}
# MetaDistillation with a student of each family, taught by a small MAML checkpoint.
for _family in ("maml", "maml_batched", "maml_per_task", "anil", "reptile", "protonet", "matching"):
    LEARNERS[f"distill_{_family}"] = functools.partial(
        lambda student, out, loss: MetaDistillation(
            LEARNERS[student](out, loss), teacher_checkpoint(out, loss), alpha=0.5, temperature=2.0
        ),
        _family,
    )
LEARNERS["distill_maml_features"] = lambda out, loss: MetaDistillation(
    LEARNERS["maml"](out, loss), teacher_checkpoint(out, loss), beta=0.1
)

# Metric-based and supervised-transfer learners classify; they have no regression form.
CLASSIFIERS_ONLY = {
    "protonet",
    "protonet_cosine",
    "matching",
    "matching_fce",
    "supervised",
    "supervised_finetune",
    "distill_protonet",
    "distill_matching",
}

CASES = [
    (name, kind)
    for name in sorted(LEARNERS)
    for kind in ("regression", "classification")
    if kind == "classification" or name not in CLASSIFIERS_ONLY
]


def build(name: str, task: str) -> MetaLearner:
    """``task``: ``"regression"`` (sinusoid) or ``"classification"`` (Gaussian blobs, 3-way)."""
    return LEARNERS[name](1, "mse") if task == "regression" else LEARNERS[name](WAYS, "cross_entropy")


class BlobsDataModule(LightningDataModule):
    """3-way classification episodes of Gaussian blobs: fixed tasks, fast, no files."""

    def __init__(self, batches: int = 3, meta_batch_size: int = 2) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.tasks = [make_classification_task(meta_batch_size, WAYS, 2, 3, FEATURES) for _ in range(batches)]
        torch.random.set_rng_state(generator_state)

    def _loader(self) -> DataLoader:
        return DataLoader(self.tasks, batch_size=None)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader


def teacher_checkpoint(out: int, loss: str) -> str:
    """A ``lit-meta fit`` checkpoint of a small MAML teacher on :class:`BlobsDataModule` (classification,
    ``out`` = 3) or sinusoid tasks (regression).

    Written once into the folder ``$LIT_META_TEST_TEACHERS`` (made and exported on first use, so that
    subprocesses such as the DDP script's ranks find the same files instead of training their own),
    with the global random state left as it was: learners built before and after are the same.
    """
    if "LIT_META_TEST_TEACHERS" not in os.environ:  # not `setdefault`: that would make a folder every call
        os.environ["LIT_META_TEST_TEACHERS"] = tempfile.mkdtemp(prefix="lit_meta_teachers_")
    folder = Path(os.environ["LIT_META_TEST_TEACHERS"])
    path = folder / f"maml_{loss}_{out}.ckpt"
    if path.exists():
        return str(path)
    run = folder / path.stem
    data = (
        ["--data=tests.helpers.learners.BlobsDataModule"]
        if loss == "cross_entropy"
        else ["--data=datamodules.SinusoidDataModule", "--data.meta_batch_size=2", "--data.val_tasks=2"]
    )
    features = FEATURES if loss == "cross_entropy" else 1
    with isolate_rng():
        make_cli(
            [
                "fit",
                "--seed_everything=0",
                "--model=lit_meta.algorithms.MAML",
                f"--model.backbone={{'class_path': 'lit_meta.models.MLP', 'init_args': {{'in_features': {features}, "
                f"'hidden': [16], 'out_features': {out}}}}}",
                f"--model.loss={loss}",
                "--model.inner_lr=0.1",
                "--model.eval_inner_steps=2",
                *data,
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=1",
                "--test_after_fit=none",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
                f"--trainer.default_root_dir={run}",
                f"--trainer.logger.init_args.save_dir={run}",
            ]
        )
    shutil.copy(next(run.rglob("*.ckpt")), path)
    return str(path)
