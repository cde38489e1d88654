"""MetaDistillation: the losses by hand, the gradient through the inner loop, a frozen teacher, bad input."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from lit_meta.algorithms import MAML, MetaDistillation, MetaLearner, PrototypicalNetworks, Reptile
from lit_meta.cli import main
from lit_meta.functional import (
    distillation_losses,
    feature_hint_losses,
    relational_distance_losses,
    soft_target_kl,
    standardized_logits,
)
from lit_meta.images import ImagePreprocessing
from lit_meta.models import MLP
from tests.helpers import ROOT
from tests.helpers.checkpoints import fit_checkpoint, task_folders
from tests.helpers.learners import FEATURES, WAYS, BlobsDataModule, teacher_checkpoint
from tests.helpers.tasks import make_classification_task
from tests.helpers.trainers import quiet_trainer


# ---- the losses, by hand --------------------------------------------------------------------------
def test_soft_target_kl_by_hand():
    student = torch.tensor([[[0.0, 0.0]]])
    teacher = torch.tensor([[[math.log(3.0), 0.0]]])
    # T = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2).
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    torch.testing.assert_close(soft_target_kl(student, teacher, 1.0), torch.tensor([expected]))
    # T = 2: p_t = (sqrt 3, 1) / (sqrt 3 + 1), times T^2 = 4.
    high, low = math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)
    expected = 4 * (high * math.log(high / 0.5) + low * math.log(low / 0.5))
    torch.testing.assert_close(soft_target_kl(student, teacher, 2.0), torch.tensor([expected]))
    assert soft_target_kl(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_target_kl_averages_each_task_over_its_samples():
    student, teacher = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    per_sample = [
        [soft_target_kl(student[b, n][None, None], teacher[b, n][None, None], 2.0) for n in range(5)] for b in range(3)
    ]
    expected = torch.tensor([sum(row).item() / 5 for row in per_sample])
    torch.testing.assert_close(soft_target_kl(student, teacher, 2.0), expected)


def test_standardized_logits_by_hand():
    # (1, 2, 3): mean 2, population variance 2/3.
    expected = torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3)
    torch.testing.assert_close(standardized_logits(torch.tensor([1.0, 2.0, 3.0]), eps=0.0), expected)
    # Each row by its own statistics; a shift and a positive scale change nothing.
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    z = standardized_logits(logits, eps=0.0)
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, 4, dtype=torch.float64))
    torch.testing.assert_close(z.pow(2).mean(-1), torch.ones(2, 4, dtype=torch.float64))
    torch.testing.assert_close(standardized_logits(7.0 * logits - 3.0, eps=0.0), z)


def test_standardized_soft_target_kl_by_hand():
    # Two classes: any logits standardise to (-1, 1) or (1, -1), whatever their size.
    student = torch.tensor([[[0.0, 1.0]]])
    teacher = torch.tensor([[[5.0, 0.0]]])
    # T = 1: p_t = (s(2), s(-2)), p_s its reverse, s the logistic: KL = (s(2) - s(-2)) * 2 = 2 tanh(1).
    torch.testing.assert_close(soft_target_kl(student, teacher, 1.0, True), torch.tensor([2 * math.tanh(1.0)]))
    # T = 2: (s(1) - s(-1)) * 1 = tanh(1/2), times T^2.
    torch.testing.assert_close(soft_target_kl(student, teacher, 2.0, True), torch.tensor([4 * math.tanh(0.5)]))
    # Logits of the teacher's order but another size agree with it once standardised, not before.
    assert soft_target_kl(torch.tensor([[[0.0, -0.1]]]), teacher, 1.0, True).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_kl(torch.tensor([[[0.0, -0.1]]]), teacher, 1.0).item() > 0.5


def test_distillation_losses_mix_the_true_loss_and_the_teacher_term():
    student, teacher = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    labels = torch.randint(0, 3, (2, 6))
    ce = F.cross_entropy(student.transpose(1, 2), labels, reduction="none").mean(1)
    kl = soft_target_kl(student, teacher, 4.0)
    torch.testing.assert_close(distillation_losses(student, teacher, labels, "cross_entropy", 0.0, 4.0), ce)
    torch.testing.assert_close(distillation_losses(student, teacher, labels, "cross_entropy", 1.0, 4.0), kl)
    torch.testing.assert_close(
        distillation_losses(student, teacher, labels, "cross_entropy", 0.25, 4.0), 0.75 * ce + 0.25 * kl
    )
    # Standardised logits in the teacher term only: the cross-entropy reads the student's own logits.
    standardized = soft_target_kl(standardized_logits(student), standardized_logits(teacher), 4.0)
    torch.testing.assert_close(
        distillation_losses(student, teacher, labels, "cross_entropy", 0.25, 4.0, True),
        0.75 * ce + 0.25 * standardized,
    )
    # Regression: the MSE to the targets and to the teacher's outputs.
    outputs, teacher_outputs, targets = torch.zeros(1, 2, 1), torch.ones(1, 2, 1), torch.full((1, 2, 1), 2.0)
    torch.testing.assert_close(
        distillation_losses(outputs, teacher_outputs, targets, "mse", 0.5, 1.0), torch.tensor([0.5 * 4 + 0.5 * 1])
    )


def test_feature_hint_is_the_squared_distance_averaged_over_images():
    projected = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    torch.testing.assert_close(feature_hint_losses(projected, teacher), torch.tensor([(5.0 + 25.0) / 2]))


def test_relational_loss_by_hand():
    # Student: a right triangle with legs 1 and 1; teacher: legs 3 and 1 (in three dimensions).
    student = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    teacher = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    s = [1.0, 1.0, math.sqrt(2)]  # distances 01, 02, 12 (each pair twice in the mean: the same mean)
    t = [3.0, 1.0, math.sqrt(10)]
    s = [d / (sum(s) / 3) for d in s]
    t = [d / (sum(t) / 3) for d in t]

    def huber(x):
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    expected = sum(huber(a - b) for a, b in zip(s, t)) / 3
    torch.testing.assert_close(relational_distance_losses(student, teacher), torch.tensor([expected]))


def test_relational_loss_ignores_scale_rotation_and_size():
    student = torch.randn(2, 6, 4, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    teacher = torch.cat([3.5 * student @ rotation, torch.zeros(2, 6, 3, dtype=torch.float64)], -1)  # (2, 6, 7)
    torch.testing.assert_close(relational_distance_losses(student, teacher), torch.zeros(2, dtype=torch.float64))
    assert (relational_distance_losses(student, torch.randn(2, 6, 7, dtype=torch.float64)) > 1e-3).all()


def test_relational_loss_has_a_finite_gradient_where_embeddings_coincide():
    # Images 0 and 1 share an embedding (a distance of 0, whose norm has no derivative there); image 2
    # does not, so the gradient is not zero everywhere and must be finite.
    student = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]]], requires_grad=True)
    relational_distance_losses(student, torch.randn(1, 3, 5, generator=torch.Generator().manual_seed(0))).backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[0, 2].abs().sum() > 0


def test_shapes_that_differ_are_refused():
    with pytest.raises(ValueError, match=r"Expected teacher logits shaped like the student's \(1, 2, 3\)"):
        soft_target_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), 1.0)
    with pytest.raises(ValueError, match=r"Expected teacher features shaped like the projected student's"):
        feature_hint_losses(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(
        ValueError, match=r"Expected teacher features for the student's \(1, 2\) \(tasks, images >= 2\)"
    ):
        relational_distance_losses(torch.zeros(1, 2, 3), torch.zeros(1, 3, 4))


# ---- the gradient through the inner loop ----------------------------------------------------------
def distiller(student, **options) -> MetaDistillation:
    learner = MetaDistillation(student, teacher_checkpoint(WAYS, "cross_entropy"), **options)
    return learner


def reference_meta_gradient(
    weight, bias, teacher_logits, task, inner_lr, alpha, temperature, second_order, standardize=False
):
    """The distillation meta-gradient of a linear student, one inner step, written out in float64."""

    def z(logits):  # Sun et al. (2024)'s standardisation, with the population standard deviation
        return (logits - logits.mean(-1, keepdim=True)) / logits.var(-1, unbiased=False, keepdim=True).sqrt()

    weight, bias = weight.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    total = 0.0
    for b in range(task.num_tasks):
        support_x, query_x = task.support_x[b].double(), task.query_x[b].double()
        support_loss = F.cross_entropy(support_x @ weight.T + bias, task.support_y[b])
        grad_w, grad_b = torch.autograd.grad(support_loss, (weight, bias), create_graph=second_order)
        adapted_w, adapted_b = weight - inner_lr * grad_w, bias - inner_lr * grad_b
        logits = query_x @ adapted_w.T + adapted_b
        teacher, student = teacher_logits[b].double(), logits
        if standardize:
            teacher, student = z(teacher), z(student)
        teacher_p = (teacher / temperature).softmax(-1)
        kl = (teacher_p * (teacher_p.log() - (student / temperature).log_softmax(-1))).sum(-1).mean()
        total = total + (1 - alpha) * F.cross_entropy(logits, task.query_y[b]) + alpha * temperature**2 * kl
    return torch.autograd.grad(total / task.num_tasks, (weight, bias))


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_distillation_gradient_flows_through_the_inner_loop(first_order, standardize):
    task = make_classification_task(3, WAYS, 2, 4, FEATURES)
    student = MAML(MLP(FEATURES, (), WAYS), inner_lr=0.5, inner_steps=1, first_order=first_order)
    learner = distiller(student, alpha=0.7, temperature=2.0, standardize_logits=standardize)
    loss = learner.training_losses(learner.episode(task, training=True), task).mean()
    head = student.maml.module.head
    got = torch.autograd.grad(loss, (head.weight, head.bias))

    teacher_logits = learner.teacher.evaluate_episode(task)
    args = (head.weight, head.bias, teacher_logits, task, 0.5, 0.7, 2.0)
    expected = reference_meta_gradient(*args, second_order=not first_order, standardize=standardize)
    other = reference_meta_gradient(*args, second_order=first_order, standardize=standardize)
    unstandardized = reference_meta_gradient(*args, second_order=not first_order, standardize=not standardize)
    assert not torch.allclose(got[0].double(), unstandardized[0], rtol=1e-3, atol=1e-5)
    for g, e, o in zip(got, expected, other):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(g.double(), o, rtol=1e-3, atol=1e-5), "first and second order agree: test is vacuous"
    # The teacher term is in it: without it (alpha 0) the gradient is another.
    plain = reference_meta_gradient(
        head.weight, head.bias, teacher_logits, task, 0.5, 0.0, 2.0, second_order=not first_order
    )
    assert not torch.allclose(got[0].double(), plain[0], rtol=1e-3, atol=1e-5)


def fit(learner, data, tmp_path, steps: int = 1) -> Trainer:
    """``steps`` meta-training steps (one validation batch), without logger, checkpoints or bars."""
    trainer = quiet_trainer(
        tmp_path,
        max_steps=steps,
        limit_val_batches=1,
    )
    trainer.fit(learner, data)
    return trainer


# ---- a frozen teacher ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["maml", "reptile", "protonet"])
def test_the_teacher_is_frozen_and_not_saved(family, tmp_path):
    students = {
        "maml": lambda: MAML(MLP(FEATURES, (8,), WAYS), inner_lr=0.1, eval_inner_steps=2),
        "reptile": lambda: Reptile(MLP(FEATURES, (8,), WAYS), inner_steps=2, eval_inner_steps=2),
        "protonet": lambda: PrototypicalNetworks(MLP(FEATURES, (8,), WAYS)),
    }
    learner = distiller(students[family](), alpha=0.5, temperature=2.0, beta=0.0 if family == "reptile" else 0.1)
    teacher = learner.teacher
    before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    student_before = [p.detach().clone() for p in learner.student.parameters()]
    trainer = fit(learner, BlobsDataModule(), tmp_path, steps=3)

    assert learner.teacher is teacher and not teacher.training
    for name, p in teacher.named_parameters():
        assert torch.equal(p, before[name]), f"teacher {name} changed"
        assert p.grad is None, f"teacher {name} received a gradient"
    assert any(not torch.equal(a, b) for a, b in zip(student_before, learner.student.parameters()))
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path)
    keys = torch.load(path, weights_only=False)["state_dict"].keys()
    assert all(key.startswith(("student.", "projection.")) for key in keys), sorted(keys)
    assert any(key.startswith("projection.") for key in keys) == (family != "reptile")


# ---- bad input -------------------------------------------------------------------------------------
def small_maml(out: int = WAYS, loss: str = "cross_entropy") -> MAML:
    return MAML(MLP(FEATURES if loss == "cross_entropy" else 1, (8,), out), loss=loss)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"alpha": -0.1}, ValueError, r"Expected `alpha` in \[0, 1\], but got -0.1\."),
        ({"alpha": 1.5}, ValueError, r"Expected `alpha` in \[0, 1\], but got 1.5\."),
        ({"temperature": 0}, ValueError, r"Expected `temperature` > 0, but got 0\."),
        ({"temperature": -2.0}, ValueError, r"Expected `temperature` > 0, but got -2.0\."),
        ({"beta": -1.0}, ValueError, r"Expected `beta` >= 0, but got -1.0\."),
        ({"gamma": -1.0}, ValueError, r"Expected `gamma` >= 0, but got -1.0\."),
        ({"teacher_ckpt": 3}, TypeError, r"Expected `teacher_ckpt` to be str, but got int 3\."),
        ({"standardize_logits": 1}, TypeError, r"Expected `standardize_logits` to be bool, but got int 1\."),
    ],
)
def test_bad_options_are_refused_at_construction(options, error, match):
    with pytest.raises(error, match=match):
        MetaDistillation(small_maml(), **{"teacher_ckpt": "teacher.ckpt", **options})


def test_standardized_logits_are_refused_for_a_regression_student():
    expected = (
        r"Expected a classification student \(loss 'cross_entropy'\) with `standardize_logits`, but got loss 'mse'"
    )
    with pytest.raises(ValueError, match=expected):
        MetaDistillation(small_maml(1, "mse"), "teacher.ckpt", standardize_logits=True)


@pytest.mark.parametrize("term", ["beta", "gamma"])
def test_a_reptile_student_refuses_the_embedding_terms(term):
    # Its embeddings read the meta-weights, not the weights its inner steps fine-tune: the term would do nothing.
    with pytest.raises(ValueError, match=rf"Expected `{term}` 0 with a Reptile student .*, but got 0.5\."):
        MetaDistillation(Reptile(MLP(FEATURES, (8,), WAYS)), "teacher.ckpt", **{term: 0.5})


def test_a_maml_backbone_without_features_does_not_pass_its_input_off_as_embeddings():
    learner = MAML(torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, WAYS)))
    with pytest.raises(NotImplementedError, match=r"MAML embeds with its backbone's `features` module, but Sequential"):
        learner.embed(torch.zeros(2, FEATURES))


def test_the_feature_hint_alone_counts_before_the_teacher_is_loaded():
    task = make_classification_task(2, WAYS, 2, 3, FEATURES)
    student = MAML(MLP(FEATURES, (8,), WAYS), inner_lr=0.1)
    learner = distiller(student, alpha=0.0, beta=5.0)  # no training step has loaded the teacher yet
    predictions = student.episode(task, training=True)
    plain = student.task_losses(predictions, task.query_y)
    assert (learner.training_losses(predictions, task) > plain).all()


def test_a_teacher_predicting_other_classes_than_the_student_is_refused(tmp_path):
    learner = MetaDistillation(small_maml(out=5), teacher_checkpoint(WAYS, "cross_entropy"))

    class ThreeWay(BlobsDataModule):
        ways = WAYS

    with pytest.raises(
        ValueError,
        match=r"Expected a teacher predicting 5 classes per 3-way task like the student, but got one predicting 3",
    ):
        fit(learner, ThreeWay(), tmp_path)


def test_the_teacher_adapts_once_per_task_under_the_multi_step_loss(tmp_path):
    student = MAML(MLP(FEATURES, (8,), WAYS), inner_lr=0.1, inner_steps=3, multi_step_loss_steps=10)
    learner = distiller(student, alpha=0.5, gamma=1.0)
    teacher, calls = learner.teacher, []
    adapt = teacher.evaluate_episode
    teacher.evaluate_episode = lambda task: calls.append(task) or adapt(task)
    fit(learner, BlobsDataModule(), tmp_path, steps=2)
    assert len(calls) == 2  # one per training step (the sanity check and validation need no teacher), not 3


def test_resuming_with_another_teacher_is_refused(tmp_path):
    trainer = fit(distiller(small_maml(), alpha=0.5), BlobsDataModule(), tmp_path)
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    other = torch.load(teacher_checkpoint(WAYS, "cross_entropy"), weights_only=True)
    other["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    torch.save(other, tmp_path / "other_teacher.ckpt")

    def resume(teacher: str) -> MetaDistillation:
        learner = MetaDistillation(small_maml(), teacher, alpha=0.5)
        trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1)
        # The checkpoint of a learner built in Python holds its student module: not weights only.
        trainer.fit(learner, BlobsDataModule(), ckpt_path=tmp_path / "student.ckpt", weights_only=False)
        return learner

    assert resume(teacher_checkpoint(WAYS, "cross_entropy")).global_step == 2  # the same teacher resumes
    with pytest.raises(
        ValueError, match=r"Expected the teacher this run was trained with \(weights [0-9a-f]{16}\) in `teacher_ckpt`"
    ):
        resume(str(tmp_path / "other_teacher.ckpt"))


def test_a_distilled_learner_is_not_a_student():
    inner = MetaDistillation(small_maml(), "teacher.ckpt")
    with pytest.raises(TypeError, match=r"Expected `student` to be a learner .*, but got MetaDistillation\."):
        MetaDistillation(inner, "teacher.ckpt")


def test_a_missing_teacher_is_refused_before_training(tmp_path):
    learner = MetaDistillation(small_maml(), str(tmp_path / "nowhere.ckpt"))
    with pytest.raises(FileNotFoundError, match=r"Expected `teacher_ckpt` file at '.*nowhere.ckpt', but got no such"):
        fit(learner, BlobsDataModule(), tmp_path)
    assert learner.global_step == 0


def test_a_file_that_is_no_learner_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "torch.nn.Linear"}}, path)
    with pytest.raises(
        ValueError, match=r"Expected `teacher_ckpt` of a lit-meta learner .*, but got torch.nn.Linear\."
    ):
        fit(MetaDistillation(small_maml(), str(path)), BlobsDataModule(), tmp_path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"Expected `teacher_ckpt` of plain tensors and data .*could not read it"):
        fit(MetaDistillation(small_maml(), str(path)), BlobsDataModule(), tmp_path)


def test_a_regression_teacher_for_a_classifier_is_refused(tmp_path):
    learner = MetaDistillation(small_maml(), teacher_checkpoint(1, "mse"))
    with pytest.raises(
        ValueError,
        match=r"Expected a teacher with loss 'cross_entropy' like the student, but got "
        r"one with loss 'mse'",
    ):
        fit(learner, BlobsDataModule(), tmp_path)


def test_more_ways_than_the_teacher_outputs_are_refused(tmp_path):
    learner = MetaDistillation(PrototypicalNetworks(MLP(FEATURES, (8,), 5)), teacher_checkpoint(WAYS, "cross_entropy"))

    class FiveWay(BlobsDataModule):
        ways = 5

    with pytest.raises(ValueError, match=r"Expected `data.ways` <= 3 \(the teacher's `out_features`\), but got 5\."):
        fit(learner, FiveWay(), tmp_path)


@pytest.mark.parametrize(("channels", "size"), [(3, 28), (1, 84)])
def test_a_teacher_of_other_images_is_refused(channels, size, tmp_path):
    checkpoint = torch.load(teacher_checkpoint(WAYS, "cross_entropy"), weights_only=True)
    checkpoint["lit_meta"]["preprocessing"] = ImagePreprocessing(channels, size).to_dict()
    path = tmp_path / "teacher.ckpt"
    torch.save(checkpoint, path)

    class Images(BlobsDataModule):
        def preprocessing(self):
            return ImagePreprocessing(channels=1, image_size=28)

    learner = MetaDistillation(small_maml(), str(path))
    with pytest.raises(
        ValueError,
        match=rf"Expected a teacher trained on images like the data's \(1 channel\(s\), "
        rf"28x28\), but got one trained on {channels} channel\(s\), {size}x{size}",
    ):
        fit(learner, Images(), tmp_path)


# ---- the command line --------------------------------------------------------------------------------
DISTILL_PROTONET = str(ROOT / "configs" / "omniglot" / "distill" / "protonet.yaml")
STEPS = ("--data.ways=5", "--data.train_batches_per_epoch=2", "--trainer.max_steps=2", "--test_after_fit=none")


def test_a_distilled_checkpoint_adapts_without_its_teacher(tmp_path, capsys):
    teacher = fit_checkpoint(tmp_path / "teacher", "protonet_5w1s", *STEPS)
    student = fit_checkpoint(
        tmp_path / "student", "protonet_5w1s", *STEPS, "--config", DISTILL_PROTONET,
        f"--model.init_args.teacher_ckpt={teacher}",
    )  # fmt: skip
    saved = torch.load(student, weights_only=True)
    assert saved["lit_meta"]["learner"] == "lit_meta.algorithms.distillation.MetaDistillation"
    assert all(key.startswith("student.") for key in saved["state_dict"])
    teacher.unlink()  # evaluation needs the student alone
    support, query = task_folders(tmp_path / "task")
    main(["adapt", f"--ckpt_path={student}", f"--support={support}", f"--query={query}"])
    assert "predicted 12 queries" in capsys.readouterr().out
    # Self-distillation, generation after generation: the distilled student teaches the next one.
    second = fit_checkpoint(
        tmp_path / "second", "protonet_5w1s", *STEPS, "--config", DISTILL_PROTONET,
        f"--model.init_args.teacher_ckpt={student}",
    )  # fmt: skip
    assert torch.load(second, weights_only=True)["global_step"] == 2


def test_a_missing_teacher_is_one_line_and_exit_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit_checkpoint(
            tmp_path, "protonet_5w1s", *STEPS, "--config", DISTILL_PROTONET,
            f"--model.init_args.teacher_ckpt={tmp_path / 'missing.ckpt'}",
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the warnings of running inside pytest
    assert re.fullmatch(
        r"lit-meta fit: error: Expected `teacher_ckpt` file at '.*missing.ckpt', but got no such file\.", err
    ), err


def test_the_feature_hint_needs_embeddings():
    class NoEmbeddings(MAML):
        embed = MetaLearner.embed

    learner = MetaDistillation(
        NoEmbeddings(MLP(FEATURES, (8,), WAYS)), teacher_checkpoint(WAYS, "cross_entropy"), beta=0.1
    )
    with pytest.raises(ValueError, match=r"Expected a student that exposes its embeddings \(`embed`\) with `beta` > 0"):
        _ = learner.teacher


def test_the_relational_term_needs_embeddings():
    class NoEmbeddings(MAML):
        embed = MetaLearner.embed

    learner = MetaDistillation(
        NoEmbeddings(MLP(FEATURES, (8,), WAYS)), teacher_checkpoint(WAYS, "cross_entropy"), gamma=1.0
    )
    with pytest.raises(
        ValueError, match=r"Expected a student that exposes its embeddings \(`embed`\) with `gamma` > 0"
    ):
        _ = learner.teacher


def test_the_relational_term_is_added_to_the_objective():
    task = make_classification_task(2, WAYS, 2, 3, FEATURES)
    student = PrototypicalNetworks(MLP(FEATURES, (8,), 6))
    plain = distiller(student, alpha=0.5)
    relational = distiller(student, alpha=0.5, gamma=2.0)
    predictions = student.episode(task, training=True)
    images = torch.cat([task.support_x, task.query_x], 1)
    with torch.no_grad():
        teacher = torch.stack([relational.teacher.embed(x) for x in images])
    expected = plain.training_losses(predictions, task) + 2.0 * relational_distance_losses(
        torch.stack([student.embed(x) for x in images]), teacher
    )
    got = relational.training_losses(predictions, task)
    torch.testing.assert_close(got, expected)
    assert (got > plain.training_losses(predictions, task)).all()
    # Its gradient reaches the student's embedding.
    term = got.sum() - plain.training_losses(predictions, task).sum()
    first_layer = next(student.parameters())
    assert torch.autograd.grad(term, first_layer)[0].abs().sum() > 0
