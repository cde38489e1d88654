"""Four distillation variants measured against plain ``MetaDistillation`` (issue 15), kept so that
their rows in ``benchmarks/RESULTS.md`` can be re-run. None beat the plain teacher term on Omniglot
minimal 20-way 1-shot, so none is in the library. Run one by putting this folder on the path and
naming the class, on top of the distillation configs:

    PYTHONPATH=benchmarks .venv/bin/lit-meta fit --config configs/omniglot/base.yaml \\
        --config configs/omniglot/protonet_20w1s.yaml --config configs/omniglot/distill/protonet.yaml \\
        --model.class_path distillation_variants.DecoupledDistillation --model.init_args.alpha 0.5 \\
        --model.init_args.teacher_ckpt <teacher best.ckpt>

- :class:`MixupDistillation`: function matching (Beyer et al., "Knowledge distillation: A good
  teacher is patient and consistent", CVPR 2022). Each episode gets ``mixup_queries`` extra queries,
  mixtures ``lam * x_i + (1 - lam) * x_j`` of two of its images (``lam`` uniform); the teacher term
  covers them, the cross-entropy only the real queries (``train/acc`` counts a mixture as its larger part).
- :class:`DecoupledDistillation`: decoupled knowledge distillation (Zhao et al., CVPR 2022). The
  teacher term ``T^2 * KL`` is split into the target-class part (TCKD: the binary target vs
  non-target probabilities) and the non-target part (NCKD: the distribution over the other classes),
  weighted ``tckd_weight`` and ``nckd_weight``; plain KD is ``TCKD + (1 - p_target) * NCKD``.
- :class:`AttentionDistillation`: attention transfer (Zagoruyko and Komodakis, ICLR 2017), made for
  a thinner network of the teacher's architecture: after every ReLU of the embedding, the spatial map
  of the squared activations averaged over channels, L2-normalised, should be the teacher's;
  ``at_weight / 2`` times the squared differences averaged over images and positions, summed over
  the layers, on each episode's support and query images (their weight 1000).
- :class:`ContrastiveDistillation`: contrastive representation distillation (Tian, Krishnan and
  Isola, ICLR 2020) within an episode: the student's and the teacher's embeddings of its support
  and query images, each through a learned linear head (``student_features`` and
  ``teacher_features`` to ``crd_dim``, unused after training) and L2-normalised; a symmetric
  InfoNCE loss at ``crd_temperature`` makes image ``i``'s student embedding pick image ``i``'s
  teacher embedding among the episode's, weighted ``crd_weight``, on top of the plain term (the
  paper draws its negatives from a memory bank of the whole dataset; here the episode's images).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_meta.algorithms import MetaDistillation, MetaLearner
from lit_meta.functional import soft_target_kl
from lit_meta.tasks import Task


def _check_no_embedding_terms(kwargs: dict[str, Any], variant: str) -> None:
    # These variants replace the whole objective: a feature hint or relational term would be dropped.
    for name in ("beta", "gamma"):
        if kwargs.get(name, 0.0) != 0:
            raise ValueError(f"Expected `{name}` 0 with {variant} (it has no embedding terms), but got {kwargs[name]}.")


class MixupDistillation(MetaDistillation):
    """``MetaDistillation`` with ``mixup_queries`` mixed images per episode for the teacher term."""

    def __init__(
        self,
        mixup_queries: int = 0,
        **kwargs: Any,
    ) -> None:
        _check_no_embedding_terms(kwargs, "MixupDistillation")
        super().__init__(**kwargs)  # student, teacher_ckpt, alpha, ...: the arguments of MetaDistillation
        self.mixup_queries = mixup_queries
        self._real_queries: int | None = None

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        self._real_queries = batch.query_x.shape[1]
        if self.mixup_queries:
            x = torch.cat([batch.support_x, batch.query_x], 1)
            y = torch.cat([batch.support_y, batch.query_y], 1)
            (tasks, images), m = y.shape, self.mixup_queries
            first = torch.randint(images, (tasks, m), device=x.device)
            second = torch.randint(images, (tasks, m), device=x.device)
            lam = torch.rand(tasks, m, device=x.device)
            ones = [1] * (x.dim() - 2)

            def pick(index: Tensor) -> Tensor:
                return torch.gather(x, 1, index.view(tasks, m, *ones).expand(tasks, m, *x.shape[2:]))

            weight = lam.view(tasks, m, *ones)
            mixed = weight * pick(first) + (1 - weight) * pick(second)
            label = torch.where(lam >= 0.5, torch.gather(y, 1, first), torch.gather(y, 1, second))
            batch = Task(
                batch.support_x,
                batch.support_y,
                torch.cat([batch.query_x, mixed], 1),
                torch.cat([batch.query_y, label], 1),
            )
        return super().training_step(batch, batch_idx)

    def distillation_losses(self, predictions: Tensor, task: Task) -> Tensor:
        real = self._real_queries if self.training and self._real_queries is not None else predictions.shape[1]
        teacher_predictions, _ = self._teacher_outputs(task, predictions.device)
        ce = self.student.task_losses(predictions[:, :real], task.query_y[:, :real])
        kl = soft_target_kl(predictions, teacher_predictions, self.temperature, self.standardize_logits)
        return (1 - self.alpha) * ce + self.alpha * kl.to(ce.dtype)


def decoupled_kd_losses(
    student: Tensor, teacher: Tensor, target: Tensor, temperature: float, tckd_weight: float, nckd_weight: float
) -> Tensor:
    """``(B,)`` ``T^2 * (tckd_weight * TCKD + nckd_weight * NCKD)`` of logits ``(B, N, C)``, labels ``(B, N)``."""
    s, t = student.float() / temperature, teacher.detach().float() / temperature
    mask = F.one_hot(target, s.shape[-1]).bool()
    ps, pt = s.softmax(-1), t.softmax(-1)
    bs = torch.stack([(ps * mask).sum(-1), (ps * ~mask).sum(-1)], -1).clamp_min(1e-12)
    bt = torch.stack([(pt * mask).sum(-1), (pt * ~mask).sum(-1)], -1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(-1)
    log_ps, log_pt = (s - 1000.0 * mask).log_softmax(-1), (t - 1000.0 * mask).log_softmax(-1)  # target left out
    nckd = (log_pt.exp() * (log_pt - log_ps) * ~mask).sum(-1)
    return temperature**2 * (tckd_weight * tckd + nckd_weight * nckd).mean(-1)


class DecoupledDistillation(MetaDistillation):
    """``MetaDistillation`` whose teacher term is decoupled KD (classification students)."""

    def __init__(
        self,
        nckd_weight: float = 8.0,
        tckd_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        _check_no_embedding_terms(kwargs, "DecoupledDistillation")
        super().__init__(**kwargs)  # student, teacher_ckpt, alpha, ...: the arguments of MetaDistillation
        self.nckd_weight, self.tckd_weight = nckd_weight, tckd_weight

    def distillation_losses(self, predictions: Tensor, task: Task) -> Tensor:
        teacher_predictions, _ = self._teacher_outputs(task, predictions.device)
        ce = self.student.task_losses(predictions, task.query_y)
        kd = decoupled_kd_losses(
            predictions, teacher_predictions, task.query_y, self.temperature, self.tckd_weight, self.nckd_weight
        )
        return (1 - self.alpha) * ce + self.alpha * kd.to(ce.dtype)


def attention_maps(learner: MetaLearner, images: Tensor) -> list[Tensor]:
    """``(N, H * W)`` normalised attention map after each ReLU of ``learner.embed(images)``."""
    maps: list[Tensor] = []
    relus = [m for m in learner.modules() if isinstance(m, nn.ReLU)]
    hooks = [m.register_forward_hook(lambda module, inputs, output: maps.append(output)) for m in relus]
    try:
        learner.embed(images)
    finally:
        for hook in hooks:
            hook.remove()
    return [F.normalize(x.float().pow(2).mean(1).flatten(1), dim=1) for x in maps]


class AttentionDistillation(MetaDistillation):
    """``MetaDistillation`` plus attention transfer on the embedding's ReLU outputs."""

    def __init__(
        self,
        at_weight: float = 1000.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # student, teacher_ckpt, alpha, ...: the arguments of MetaDistillation
        self.at_weight = at_weight

    def distillation_losses(self, predictions: Tensor, task: Task) -> Tensor:
        losses = super().distillation_losses(predictions, task)
        if not self.training or self.at_weight == 0:
            return losses
        teacher, terms = self.teacher, []
        for images in torch.cat([task.support_x, task.query_x], 1):
            student_maps = attention_maps(self.student, images)
            with torch.no_grad():
                teacher_maps = attention_maps(teacher, images)
            terms.append(sum((s - t).pow(2).mean() for s, t in zip(student_maps, teacher_maps)))
        return losses + self.at_weight / 2 * torch.stack(terms).to(losses.dtype)


def episode_infonce_losses(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``(B,)`` symmetric InfoNCE between paired embeddings ``(B, N, D)`` of each task's ``N`` images:
    image ``i``'s student embedding should be nearest to image ``i``'s teacher embedding among the
    task's ``N``, and the other way round (both L2-normalised)."""
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    logits = s @ t.transpose(1, 2) / temperature  # (B, N, N)
    target = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
    forward = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(-1)
    backward = F.cross_entropy(logits, target, reduction="none").mean(-1)
    return (forward + backward) / 2


class ContrastiveDistillation(MetaDistillation):
    """``MetaDistillation`` plus a contrastive term on the embeddings of each episode's images."""

    def __init__(
        self,
        crd_weight: float = 0.8,
        crd_temperature: float = 0.07,
        crd_dim: int = 128,
        student_features: int = 16,
        teacher_features: int = 64,
        **kwargs: Any,
    ) -> None:
        _check_no_embedding_terms(kwargs, "ContrastiveDistillation")
        super().__init__(**kwargs)  # student, teacher_ckpt, alpha, ...: the arguments of MetaDistillation
        self.crd_weight, self.crd_temperature = crd_weight, crd_temperature
        # Both heads are meta-learned with the student and unused after training, as in CRD.
        self.student_head = nn.Linear(student_features, crd_dim)
        self.teacher_head = nn.Linear(teacher_features, crd_dim)

    def distillation_losses(self, predictions: Tensor, task: Task) -> Tensor:
        losses = super().distillation_losses(predictions, task)
        if not self.training or self.crd_weight == 0:
            return losses
        images = torch.cat([task.support_x, task.query_x], 1)
        student = torch.stack([self.student.embed(x) for x in images])
        with torch.no_grad():
            teacher = torch.stack([self.teacher.embed(x) for x in images])
        terms = episode_infonce_losses(self.student_head(student), self.teacher_head(teacher), self.crd_temperature)
        return losses + self.crd_weight * terms.to(losses.dtype)
