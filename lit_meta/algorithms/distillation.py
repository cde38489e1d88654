"""Meta knowledge distillation: a small meta-learned student that adapts like a meta-trained teacher."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from lit_meta.algorithms.base import MetaLearner
from lit_meta.algorithms.checkpoints import load_learner
from lit_meta.algorithms.reptile import Reptile
from lit_meta.functional import distillation_losses, feature_hint_losses, relational_distance_losses
from lit_meta.tasks import Task
from lit_meta.validation import check_positive_float, check_type, check_unit_interval


class MetaDistillation(MetaLearner):
    """Meta-train a student learner to predict, once adapted, what an adapted teacher predicts.

    Per task, the frozen teacher adapts to the support set its own way and predicts the queries; the
    student adapts its own way, and its objective on the queries is

    ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``

    (Hinton, Vinyals and Dean, 2015, applied after adaptation rather than before it as in P-MAML,
    Zhang et al., ECAI 2020), plus, with ``beta > 0``, the feature hint ``beta * ||proj(f_s(x)) -
    f_t(x)||^2`` on the support and query images (Romero et al., "FitNets", ICLR 2015), ``f`` the
    unadapted embeddings and ``proj`` a linear map meta-learned with the student and unused after
    training, and, with ``gamma > 0``, the relational term ``gamma * RKD(f_s, f_t)`` on the same
    images: the student's pairwise distances made to match the teacher's, each divided by its mean
    (Park et al., "Relational Knowledge Distillation", CVPR 2019; no projection, so nothing extra
    is learned). Regression students mix the MSE to the targets and to the teacher instead.

    The objective replaces the student's query loss inside the student's own training step, so the
    distillation gradient flows through its inner loop (second order where the student is), under
    ``backward_per_task`` too; a Reptile student fine-tunes on it in its inner steps. Validation,
    test, ``adapt`` and the callbacks see the student alone: evaluation never needs the teacher, and
    a checkpoint holds the student (and the projection) but not the teacher.

    A teacher distilled this way can teach the next generation (self-distillation, Tian et al.,
    "Rethinking Few-Shot Image Classification", ECCV 2020): point ``teacher_ckpt`` at its checkpoint.

    Args:
        student: the learner trained, with its optimizer and schedule (MAML and its variants,
            Reptile, Prototypical or Matching Networks).
        teacher_ckpt: a ``lit-meta fit`` checkpoint of the teacher, any learner; loaded when fitting
            starts and checked against the student and the data. It is never updated: its
            parameters stay out of the optimizer, its predictions are constants, it stays in eval mode.
        alpha: weight of the teacher term in ``[0, 1]`` (0: the student alone).
        temperature: ``T > 0`` of the soft targets (classification).
        beta: weight of the feature hint (0: none). Reptile has no meta-gradient for the projection
            to learn from: keep 0 there.
        gamma: weight of the relational (pairwise distance) term (0: none; 0 for Reptile, as ``beta``).
        standardize_logits: z-score each query's logits, the student's and the teacher's each by its own
            mean and standard deviation, before the temperature of the teacher term (Sun et al.,
            "Logit Standardization in Knowledge Distillation", CVPR 2024): the student matches the
            teacher's relative logits, not their size (classification only).

    Shape:
        Those of the student: a task with support ``(B, Ns, *input_shape)`` gives query predictions
        ``(B, Nq, *out)``.
    """

    def __init__(
        self,
        student: MetaLearner,
        teacher_ckpt: str,
        alpha: float = 0.5,
        temperature: float = 4.0,
        beta: float = 0.0,
        gamma: float = 0.0,
        standardize_logits: bool = False,
    ) -> None:
        check_type("student", student, MetaLearner)
        if isinstance(student, MetaDistillation):
            raise TypeError(
                "Expected `student` to be a learner such as MAML or PrototypicalNetworks (a distilled learner's "
                "checkpoint can be the next teacher), but got MetaDistillation."
            )
        check_type("teacher_ckpt", teacher_ckpt, str)
        check_unit_interval("alpha", alpha)
        check_positive_float("temperature", temperature)
        check_positive_float("beta", beta, allow_zero=True)
        check_positive_float("gamma", gamma, allow_zero=True)
        check_type("standardize_logits", standardize_logits, bool)
        if standardize_logits and student.loss != "cross_entropy":
            raise ValueError(
                f"Expected a classification student (loss 'cross_entropy') with `standardize_logits`, but got loss "
                f"{student.loss!r}."
            )
        if isinstance(student, Reptile):
            _check_no_embedding_terms_for_reptile(beta, gamma)
        super().__init__(
            loss=student.loss,
            eval_inner_steps=student.eval_inner_steps,
            optimizer=student._optimizer_factory,
            lr_scheduler=student._scheduler_factory,
        )
        self.student = student
        self.teacher_ckpt, self.alpha, self.temperature, self.beta = teacher_ckpt, alpha, temperature, beta
        self.gamma, self.standardize_logits = gamma, standardize_logits
        self.automatic_optimization = student.automatic_optimization
        self.projection: nn.Linear | None = None  # built with the teacher, whose embedding size it maps to
        # Outside the module tree: not in the state dict, the optimizer, DDP or Lightning's device moves.
        self._teacher: list[MetaLearner] = []
        self._teacher_preprocessing: dict | None = None  # how the teacher's training images were prepared
        # The teacher's outputs for the task in hand: the multi-step loss asks after every inner step.
        self._teacher_cache: tuple[Tensor, Tensor, Tensor | None, Tensor | None] | None = None
        student.train_as_part(self.distillation_losses, self.log)

    # ---- the student is the learner ----------------------------------------------------------------
    @property
    def max_ways(self) -> int | None:
        return self.student.max_ways

    @property
    def embedding_dim(self) -> int:
        """The student's embedding size ``D``."""
        return embedding_size(self.student)

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def embed(self, x: Tensor) -> Tensor:
        return self.student.embed(x)

    def episode(self, task: Task, *, training: bool, steps: int | None = None, every_step: bool = False) -> Tensor:
        return self.student.episode(task, training=training, steps=steps, every_step=every_step)

    def training_losses(self, predictions: Tensor, task: Task) -> Tensor:
        return self.distillation_losses(predictions, task)

    def training_episode(self, task: Task) -> tuple[Tensor, Tensor]:
        return self.student.training_episode(task)  # the student's objective is distillation_losses

    def training_step(self, batch: Task, batch_idx: int) -> Tensor:
        # The student's own step (its inner loop, Reptile's manual update, one backward per task),
        # with `distillation_losses` as its objective, logging through this module (`train_as_part`).
        try:
            return self.student.training_step(batch, batch_idx)
        finally:
            self._teacher_cache = None

    # ---- the teacher -------------------------------------------------------------------------------
    @property
    def teacher(self) -> MetaLearner:
        """The frozen teacher, loaded from ``teacher_ckpt`` on first use."""
        if not self._teacher:
            teacher, record = load_learner(self.teacher_ckpt, what="`teacher_ckpt`")
            if teacher.loss != self.loss:
                raise ValueError(
                    f"Expected a teacher with loss {self.loss!r} like the student, but got one with loss "
                    f"{teacher.loss!r} in `teacher_ckpt` {self.teacher_ckpt!r}."
                )
            for name in ("beta", "gamma"):  # the embedding terms
                for role, learner in (("student", self.student), ("teacher", teacher)):
                    if getattr(self, name) > 0 and type(learner).embed is MetaLearner.embed:
                        raise ValueError(
                            f"Expected a {role} that exposes its embeddings (`embed`) with `{name}` > 0, but got "
                            f"{type(learner).__name__}."
                        )
            if self.beta > 0 and self.projection is None:
                self.projection = feature_projection(embedding_size(self.student), embedding_size(teacher))
            teacher.eval()
            self._teacher.append(teacher)  # only once every check passed: a refused teacher is not kept
            self._teacher_preprocessing = record.get("preprocessing")
        return self._teacher[0]

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return  # evaluation needs the student only
        self._check_teacher_data(getattr(self.trainer, "datamodule", None))  # loads the teacher (and projection)

    def _check_teacher_data(self, datamodule: Any) -> None:
        """The teacher must read the training images as they come and predict as many classes."""
        teacher, ways = self.teacher, getattr(datamodule, "ways", None)
        if isinstance(ways, int) and teacher.max_ways is not None and ways > teacher.max_ways:
            raise ValueError(
                f"Expected `data.ways` <= {teacher.max_ways} (the teacher's `out_features`), but got {ways}."
            )
        if isinstance(ways, int) and self.is_classifier:  # a head predicts its size, a metric learner `ways`
            taught, learnt = teacher.max_ways or ways, self.student.max_ways or ways
            if taught != learnt:
                raise ValueError(
                    f"Expected a teacher predicting {learnt} classes per {ways}-way task like the student, but got "
                    f"one predicting {taught} in `teacher_ckpt` {self.teacher_ckpt!r}."
                )
        preprocessing = getattr(datamodule, "preprocessing", None)
        data = preprocessing() if callable(preprocessing) else None
        taught = self._teacher_preprocessing
        if data is None or taught is None:
            return
        if (taught["channels"], taught["image_size"]) != (data.channels, data.image_size):
            raise ValueError(
                f"Expected a teacher trained on images like the data's ({data.channels} channel(s), "
                f"{data.image_size}x{data.image_size}), but got one trained on {taught['channels']} channel(s), "
                f"{taught['image_size']}x{taught['image_size']} in `teacher_ckpt` {self.teacher_ckpt!r}."
            )

    def distillation_losses(self, predictions: Tensor, task: Task) -> Tensor:
        """``(B,)`` the student's objective for its query predictions ``(B, Nq, *out)`` of ``task``."""
        if self.alpha == 0 and self.beta == 0 and self.gamma == 0:
            return self.student.task_losses(predictions, task.query_y)  # the student alone: no teacher to run
        teacher_predictions, teacher_features = self._teacher_outputs(task, predictions.device)
        if self.alpha > 0:
            losses = distillation_losses(
                predictions,
                teacher_predictions,
                task.query_y,
                self.loss,
                self.alpha,
                self.temperature,
                self.standardize_logits,
            )
        else:  # the embedding terms alone: no teacher episode
            losses = self.student.task_losses(predictions, task.query_y)
        if teacher_features is not None:
            # One forward per task over its support and query images, as the learners embed them.
            images = torch.cat([task.support_x, task.query_x], 1)
            student_features = torch.stack([self.student.embed(x) for x in images])
            if self.projection is not None:
                hint = feature_hint_losses(self.projection(student_features), teacher_features)
                losses = losses + self.beta * hint.to(losses.dtype)
            if self.gamma > 0:
                relational = relational_distance_losses(student_features, teacher_features)
                losses = losses + self.gamma * relational.to(losses.dtype)
        return losses

    def _teacher_outputs(self, task: Task, device: torch.device) -> tuple[Tensor | None, Tensor | None]:
        """The teacher's query predictions (``alpha > 0``) and embeddings of the support and query
        images (``beta`` or ``gamma > 0``) for ``task``, computed once per task of a training step."""
        cached = self._teacher_cache
        if cached is not None and cached[0] is task.support_x and cached[1] is task.query_x:
            return cached[2], cached[3]
        teacher = self.teacher
        if teacher.device != device:
            teacher.to(device)
        predictions = teacher.evaluate_episode(task) if self.alpha > 0 else None
        features = None
        if self.beta > 0 or self.gamma > 0:
            with torch.no_grad():
                features = torch.stack([teacher.embed(x) for x in torch.cat([task.support_x, task.query_x], 1)])
        self._teacher_cache = (task.support_x, task.query_x, predictions, features)  # holds them: ids stay unique
        return predictions, features

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._teacher:  # which teacher trained this student: a resumed run must get the same one
            checkpoint["lit_meta"]["teacher"] = weights_fingerprint(self._teacher[0])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        expected = checkpoint.get("lit_meta", {}).get("teacher")
        resuming = self._trainer is not None and self.trainer.state.fn == "fit"
        if resuming and expected is not None and (found := weights_fingerprint(self.teacher)) != expected:
            raise ValueError(
                f"Expected the teacher this run was trained with (weights {expected}) in `teacher_ckpt` "
                f"{self.teacher_ckpt!r} to resume it, but got other weights ({found})."
            )
        # A student trained with the feature hint kept its projection: rebuild it to load the weights.
        weight = checkpoint.get("state_dict", {}).get("projection.weight")
        if weight is not None and self.projection is None:
            self.projection = feature_projection(weight.shape[1], weight.shape[0])


def _check_no_embedding_terms_for_reptile(beta: float, gamma: float) -> None:
    # Reptile embeds with its meta-weights, not the weights it fine-tunes, and its outer step is no
    # gradient: a term on its embeddings would reach neither.
    if beta > 0:
        raise ValueError(
            f"Expected `beta` 0 with a Reptile student (its outer step is no gradient the feature projection "
            f"could learn from), but got {beta}."
        )
    if gamma > 0:
        raise ValueError(
            f"Expected `gamma` 0 with a Reptile student (its inner steps fine-tune weights its embeddings do "
            f"not read, and its outer step is no gradient), but got {gamma}."
        )


def feature_projection(student_size: int, teacher_size: int) -> nn.Linear:
    """The hint's linear map, initialised like ``nn.Linear`` but from a fixed seed: a run resumed, a
    DDP rank and a reference built in Python all start from the same one, whatever ran before."""
    with torch.random.fork_rng(devices=[]):  # the global stream is left as it was
        torch.manual_seed(0)
        return nn.Linear(student_size, teacher_size)


def weights_fingerprint(module: nn.Module) -> str:
    """A short hash of ``module``'s state (names, shapes, dtypes and values), to tell two teachers apart."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def embedding_size(learner: MetaLearner) -> int:
    """``D`` of :meth:`MetaLearner.embed`: a metric learner's embedding size, else the head's input size."""
    size = getattr(learner, "embedding_dim", None)
    if isinstance(size, int):
        return size
    linears = [m for m in learner.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"Expected a linear head on {type(learner).__name__} for the feature hint, but got none.")
    return linears[-1].in_features
