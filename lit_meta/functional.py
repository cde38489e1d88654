"""Pure functions behind the meta-learners: losses per task, the inner-loop update, statistics.

Everything here is a plain function of tensors, so tests call it without a Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_meta.validation import check_positive_float, check_positive_int

LOSSES = ("mse", "cross_entropy")


def task_losses(predictions: Tensor, targets: Tensor, loss: str) -> Tensor:
    """Mean loss of each task.

    Args:
        predictions: ``(B, N, C)`` logits (``cross_entropy``) or ``(B, N, *target_shape)`` outputs (``mse``).
        targets: ``(B, N)`` class indices or ``(B, N, *target_shape)`` targets.
        loss: ``"mse"`` or ``"cross_entropy"``.

    Returns:
        ``(B,)`` loss of each task, averaged over its ``N`` samples.
    """
    if loss == "cross_entropy":
        per_sample = F.cross_entropy(predictions.transpose(1, -1), targets, reduction="none")
        return per_sample.reshape(per_sample.shape[0], -1).mean(1)
    if loss == "mse":
        return (predictions - targets).pow(2).reshape(predictions.shape[0], -1).mean(1)
    raise ValueError(f"Expected `loss` to be one of {', '.join(map(repr, LOSSES))}, but got {loss!r}.")


def task_accuracies(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of correctly classified queries of each task.

    Args:
        logits: ``(B, N, C)``.
        labels: ``(B, N)`` class indices.

    Returns:
        ``(B,)`` accuracy of each task in ``[0, 1]``.
    """
    return (logits.argmax(-1) == labels).float().mean(1)


def sgd_step(
    params: Mapping[str, Tensor], grads: Mapping[str, Tensor], lr: float | Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """One inner-loop gradient step, ``theta' = theta - lr * grad`` (Finn et al., 2017, eq. 1).

    Args:
        params: parameters by name, any shapes.
        grads: gradients by name, shaped like ``params``.
        lr: one learning rate, or one per parameter name shaped like it (Meta-SGD).

    Returns:
        The updated parameters; differentiable with respect to ``params``, ``grads`` and ``lr``.
    """
    if isinstance(lr, Mapping):
        return {name: p - lr[name] * grads[name] for name, p in params.items()}
    return {name: p - lr * grads[name] for name, p in params.items()}


def multi_step_loss_weights(steps: int, meta_step: int, anneal_steps: int) -> Tensor:
    """Weights of the query losses after inner steps ``1..steps`` (MAML++'s multi-step loss).

    Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019, section 4 (MSL), with the
    schedule of their code: all ``1 / S`` at first; over ``anneal_steps`` meta-steps each earlier
    weight falls linearly to ``0.03 / S`` and the last one rises to ``1 - (S - 1) * 0.03 / S``; from
    ``meta_step >= anneal_steps`` on, only the last step's loss counts (weight 1).

    Args:
        steps: inner steps ``S`` (>= 1).
        meta_step: meta-training steps done so far.
        anneal_steps: length of the schedule (> 0).

    Returns:
        ``(S,)`` non-negative weights summing to 1 (float64; cast where used).
    """
    check_positive_int("steps", steps)
    check_positive_int("meta_step", meta_step, minimum=0)
    check_positive_int("anneal_steps", anneal_steps)
    if meta_step >= anneal_steps:
        return torch.nn.functional.one_hot(torch.tensor(steps - 1), steps).double()
    progress, floor = meta_step / anneal_steps, 0.03 / steps
    weights = torch.full((steps,), max(1.0 / steps - progress / steps, floor), dtype=torch.float64)
    weights[-1] = min(1.0 / steps + progress * (steps - 1) / steps, 1.0 - (steps - 1) * floor)
    return weights


def mean_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of the normal 95% confidence interval, ``1.96 * std / sqrt(n)``.

    This is the interval few-shot papers report over test tasks (Finn et al., 2017; Snell et al., 2017).

    Args:
        values: ``(n,)`` one value per task.

    Returns:
        ``(mean, ci95)``; ``ci95`` is 0 for a single value.
    """
    values = values.detach().double().flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("Expected at least 1 value to average, but got 0.")
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)


def pooled_mean_ci95(means: Tensor, square_means: Tensor, counts: Tensor) -> tuple[float, float]:
    """:func:`mean_ci95` of the values of several groups, from each group's summary alone.

    A federated server never sees a client's per-task accuracies, only their mean, mean square and
    count; pooled, these give the mean and the unbiased variance of all ``N = sum(counts)`` values
    exactly: ``var = (sum(n_i * sq_i) - N * mean^2) / (N - 1)``.

    Args:
        means: ``(G,)`` mean value of each group.
        square_means: ``(G,)`` mean of the squared values of each group.
        counts: ``(G,)`` number of values of each group.

    Returns:
        ``(mean, ci95)`` of the pooled values; ``ci95`` is 0 for a single value.
    """
    means, square_means, counts = (torch.as_tensor(t).double().flatten() for t in (means, square_means, counts))
    if not means.shape == square_means.shape == counts.shape:
        raise ValueError(
            f"Expected one mean, mean square and count per group, but got {means.numel()}, "
            f"{square_means.numel()} and {counts.numel()}."
        )
    total = counts.sum().item()
    if total < 1:
        raise ValueError(f"Expected at least 1 value to average, but got {total:g}.")
    mean = (counts * means).sum().item() / total
    if total == 1:
        return mean, 0.0
    variance = max(((counts * square_means).sum().item() - total * mean**2) / (total - 1), 0.0)
    return mean, 1.96 * math.sqrt(variance / total)


def prototypes(support_embeddings: Tensor, support_labels: Tensor, ways: int) -> Tensor:
    """Class prototypes: the mean embedding of each class's support samples (Snell et al., 2017, eq. 1).

    Args:
        support_embeddings: ``(B, Ns, D)``.
        support_labels: ``(B, Ns)`` class indices in ``[0, ways)``.
        ways: classes per task.

    Returns:
        ``(B, ways, D)`` prototypes.
    """
    one_hot = F.one_hot(support_labels, ways).to(support_embeddings.dtype)  # (B, Ns, ways)
    sums = one_hot.transpose(1, 2) @ support_embeddings  # (B, ways, D)
    return sums / one_hot.sum(1).unsqueeze(-1)


#: The distances :func:`prototype_logits` scores by.
PROTOTYPE_DISTANCES = ("euclidean", "euclidean_unsquared", "cosine")


def prototype_logits(
    query_embeddings: Tensor, prototypes: Tensor, distance: str = "euclidean", scale: float = 1.0
) -> Tensor:
    """Logits of each query for each class: ``-||q - c_k||^2`` (Snell et al., 2017, eq. 2),
    ``-||q - c_k||`` or ``scale * cos(q, c_k)``.

    Args:
        query_embeddings: ``(B, Nq, D)``.
        prototypes: ``(B, ways, D)``.
        distance: ``"euclidean"``: the squared Euclidean distance, as Snell et al. (2017) score (a Bregman
            divergence, their section 2.3) and learn2learn; ``"euclidean_unsquared"``: the Euclidean distance
            itself, as easyfsl's ``PrototypicalNetworks`` scores (``torch.cdist``); ``"cosine"``.
        scale: multiplies cosine similarities (in ``[-1, 1]``, too flat for a softmax on their own).

    Returns:
        ``(B, Nq, ways)`` logits.
    """
    if distance in ("euclidean", "euclidean_unsquared"):
        # The explicit difference, not the expanded ||q||^2 - 2 q.c + ||c||^2 (which torch.cdist uses for
        # larger inputs): exact, and its gradient is defined at zero distance.
        squared = (query_embeddings.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)
        if distance == "euclidean":
            return -squared
        # The square root's gradient is infinite at 0: there it is taken as 0 (as torch.cdist takes it).
        positive = squared > 0
        return -torch.where(positive, squared, 1.0).sqrt().where(positive, 0.0)
    if distance == "cosine":
        return scale * F.normalize(query_embeddings, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)
    choices = ", ".join(repr(d) for d in PROTOTYPE_DISTANCES)
    raise ValueError(f"Expected `distance` to be one of {choices}, but got {distance!r}.")


def linear_probe_logits(support: Tensor, support_y: Tensor, query: Tensor, ways: int, steps: int, lr: float) -> Tensor:
    """Fit a linear classifier on frozen support embeddings, then classify the queries: the
    "fine-tune a new head on the support set" of supervised-transfer baselines (FedMeta's
    FedAvg(Meta), Chen et al., 2018; Tian et al., ECCV 2020 fit logistic regression).

    Full-batch gradient descent on the mean cross-entropy, from zero weights and biases (every class
    equally likely before the first step), ``steps`` steps of size ``lr``.

    Args:
        support: ``(B, Ns, D)`` support embeddings.
        support_y: ``(B, Ns)`` labels in ``[0, ways)``.
        query: ``(B, Nq, D)`` query embeddings.
        ways: classes per task.
        steps: gradient steps.
        lr: step size.

    Returns:
        ``(steps + 1, B, Nq, ways)`` query logits after ``0..steps`` steps.
    """
    support, query = support.detach(), query.detach()
    weight = support.new_zeros(support.shape[0], support.shape[2], ways, requires_grad=True)
    bias = support.new_zeros(support.shape[0], 1, ways, requires_grad=True)
    curve = [query @ weight.detach() + bias.detach()]
    for _ in range(steps):
        logits = support @ weight + bias
        loss = F.cross_entropy(logits.flatten(0, 1), support_y.flatten(), reduction="sum") / support_y.shape[1]
        grad_w, grad_b = torch.autograd.grad(loss, (weight, bias))
        weight = (weight - lr * grad_w).detach().requires_grad_()
        bias = (bias - lr * grad_b).detach().requires_grad_()
        curve.append(query @ weight.detach() + bias.detach())
    return torch.stack(curve)


def reptile_displacement(weight: Tensor, adapted: Sequence[Tensor]) -> Tensor:
    """Reptile's outer-step direction for one parameter, ``mean_i(phi_i - theta)``.

    Reptile updates ``theta <- theta + epsilon * mean_i(phi_i - theta)`` (Nichol, Achiam and Schulman,
    "On First-Order Meta-Learning Algorithms", 2018, algorithm 2).

    Args:
        weight: ``theta``, any shape.
        adapted: the task-adapted ``phi_i``, one per task, shaped like ``weight``.

    Returns:
        The mean displacement, shaped like ``weight``.
    """
    return (torch.stack(list(adapted)) - weight).mean(0)


def gradient_surrogate(params: Sequence[Tensor], grads: Sequence[Tensor | None], value: Tensor) -> Tensor:
    """A scalar equal to ``value`` whose gradient with respect to ``params[i]`` is ``grads[i]``.

    For gradients computed outside the backward pass Lightning runs (one task at a time, or Reptile's
    displacement): backpropagating the surrogate puts them into ``.grad`` through the strategy's
    all-reduce and the precision plugin's loss scaling, as any loss would.

    Args:
        params: the parameters, any shapes.
        grads: one gradient per parameter, shaped like it; ``None`` leaves that parameter's ``.grad``
            untouched.
        value: the scalar to report (the loss); only its value is used.

    Returns:
        ``value + sum_i <params[i], grads[i]> - (the same, detached)``: a 0-d tensor.
    """
    if len(params) != len(grads):
        raise ValueError(f"Expected one gradient per parameter ({len(params)}), but got {len(grads)}.")
    inner = sum((p * g.detach()).sum() for p, g in zip(params, grads) if g is not None)
    if not isinstance(inner, Tensor):  # no gradient at all
        return value.detach()
    return value.detach() + inner - inner.detach()


def inverse_variance_weights(updates: Tensor, eps: float = 1e-6) -> Tensor:
    """Aggregation weights of client updates, each inversely proportional to its update's variance
    about the clients' mean update.

    Each update is read as a noisy estimate of one common update, and estimates are combined with
    inverse-variance weights (the minimum-variance unbiased combination of independent estimates).
    A client's variance is estimated from its spread about the consensus (the mean update):
    ``v_i = mean_p (u_ip - mean_j u_jp)^2``, and ``w_i = (1 / (v_i + eps * mean_j v_j)) / sum_k (...)``.
    A client whose update strays (few examples, a diverging inner loop, an update scaled up or
    shifted, a stale update of zero) counts less; identical updates count equally, and with two
    clients the weights are always equal (each is as far from the mean as the other). This is the
    "adaptive aggregation from the statistics of the clients' updates" of lit-meta's federated
    server (not in Flower). Measuring spread about the consensus rather than each update's own
    variance matters: a stale zero update or a constant shift has no spread of its own and would
    otherwise take almost all the weight.

    Args:
        updates: ``(C, P)``: client ``i``'s weights minus the global weights, flattened.
        eps: relative floor, ``eps * mean_j v_j`` added to each variance, so an update equal to the
            consensus gets a large but finite weight.

    Returns:
        ``(C,)`` non-negative weights summing to 1.
    """
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise ValueError(f"Expected updates of shape (clients, parameters), but got {tuple(updates.shape)}.")
    check_positive_float("eps", eps)
    values = updates.double()
    variances = (values - values.mean(0)).pow(2).mean(1)
    scale = variances.mean()
    if scale == 0:  # every client sent the same update
        return torch.full((updates.shape[0],), 1.0 / updates.shape[0], dtype=updates.dtype)
    inverse = 1.0 / (variances + eps * scale)
    return (inverse / inverse.sum()).to(updates.dtype)


def standardized_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Each sample's logits z-scored over the classes.

    Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024 (their
    ``Z(z)``, with the population standard deviation as their equation writes it; ``eps`` under the
    root keeps the gradient finite where all logits are equal). The result is unchanged by adding a
    constant to every logit or by scaling them all by a positive factor.

    Args:
        logits: ``(..., C)`` logits, ``C >= 2``.

    Returns:
        ``(..., C)`` ``(z - mean(z)) / sqrt(var(z) + eps)`` over the last dimension.
    """
    centred = logits - logits.mean(-1, keepdim=True)
    return centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def soft_target_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, standardize: bool = False
) -> Tensor:
    """Temperature-scaled distillation term of each task, ``T^2 * KL(softmax(t / T) || softmax(s / T))``.

    Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015. The ``T^2`` keeps
    the term's gradient on the scale of the cross-entropy's when ``T`` changes (their section 2).
    With ``standardize``, each sample's logits first go through :func:`standardized_logits`, the
    student's and the teacher's each by their own statistics (Sun et al., CVPR 2024): the student then
    matches the teacher's ranking of the classes and their relative gaps, not the size of its logits.

    Args:
        student_logits: ``(B, N, C)`` logits (or log-probabilities) of the student.
        teacher_logits: ``(B, N, C)`` the teacher's, for the same samples; treated as constants.
        temperature: ``T > 0``; larger values soften both distributions.
        standardize: z-score each sample's logits (student and teacher) before the temperature.

    Returns:
        ``(B,)`` the term averaged over each task's ``N`` samples; 0 where the distributions agree.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Expected teacher logits shaped like the student's {tuple(student_logits.shape)}, but got "
            f"{tuple(teacher_logits.shape)}."
        )
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # softmax of bf16/fp16 logits in float32
    student_logits, teacher_logits = student_logits.to(dtype), teacher_logits.detach().to(dtype)
    if standardize:
        student_logits, teacher_logits = standardized_logits(student_logits), standardized_logits(teacher_logits)
    student_log_p = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(-1)  # (B, N)
    return temperature**2 * kl.reshape(kl.shape[0], -1).mean(1)


def distillation_losses(
    student: Tensor,
    teacher: Tensor,
    targets: Tensor,
    loss: str,
    alpha: float,
    temperature: float,
    standardize: bool = False,
) -> Tensor:
    """Per-task distillation objective: the true loss mixed with agreement with the teacher.

    Classification: ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) ||
    softmax(student / T))`` (Hinton et al., 2015). Regression: ``(1 - alpha) * MSE(student, y) +
    alpha * MSE(student, teacher)`` (no temperature).

    Args:
        student: ``(B, N, C)`` student logits, or ``(B, N, *out)`` outputs.
        teacher: the teacher's, shaped like ``student``; constants.
        targets: ``(B, N)`` labels or ``(B, N, *out)`` targets.
        loss: ``"cross_entropy"`` or ``"mse"``.
        alpha: weight of the teacher term in ``[0, 1]``.
        temperature: ``T > 0`` (classification).
        standardize: z-score the logits in the teacher term (:func:`standardized_logits`; classification).

    Returns:
        ``(B,)`` one value per task.
    """
    true_loss = task_losses(student, targets, loss)
    if loss == "cross_entropy":
        teacher_term = soft_target_kl(student, teacher, temperature, standardize)
    else:
        teacher_term = task_losses(student, teacher.detach(), "mse")
    return (1 - alpha) * true_loss + alpha * teacher_term.to(true_loss.dtype)


def feature_hint_losses(projected: Tensor, teacher_features: Tensor) -> Tensor:
    """Per-task feature hint ``mean_i ||proj(s_i) - t_i||^2`` (Romero et al., "FitNets", ICLR 2015).

    Args:
        projected: ``(B, N, D)`` the student's embeddings of ``N`` images per task, projected to the
            teacher's size ``D``.
        teacher_features: ``(B, N, D)`` the teacher's embeddings of the same images; constants.

    Returns:
        ``(B,)`` squared Euclidean distance summed over the ``D`` features, averaged over the images.
    """
    if projected.shape != teacher_features.shape:
        raise ValueError(
            f"Expected teacher features shaped like the projected student's {tuple(projected.shape)}, but got "
            f"{tuple(teacher_features.shape)}."
        )
    return (projected - teacher_features.detach()).pow(2).sum(-1).mean(1)


def relational_distance_losses(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Per-task distance-wise relational loss (Park, Kim, Lu and Cho, "Relational Knowledge
    Distillation", CVPR 2019): the student's pairwise distances between a task's images should be
    the teacher's, each set divided by its own mean, so the two embeddings may differ in size and scale.

    Args:
        student_features: ``(B, N, Ds)`` the student's embeddings of ``N >= 2`` images per task.
        teacher_features: ``(B, N, Dt)`` the teacher's embeddings of the same images; constants.

    Returns:
        ``(B,)`` Huber loss (smooth L1, threshold 1) between the normalised distances, averaged over
        the ``N (N - 1)`` ordered pairs.
    """
    if student_features.shape[:2] != teacher_features.shape[:2] or student_features.shape[1] < 2:
        raise ValueError(
            f"Expected teacher features for the student's {tuple(student_features.shape[:2])} (tasks, images >= 2), "
            f"but got {tuple(teacher_features.shape[:2])}."
        )
    pairs = ~torch.eye(student_features.shape[1], dtype=torch.bool, device=student_features.device)

    def normalised_distances(features: Tensor) -> Tensor:
        features = features.to(torch.promote_types(features.dtype, torch.float32))  # bf16/fp16 in float32
        # Off the diagonal only: the square root's gradient at a zero distance is infinite.
        squared = (features[:, :, None] - features[:, None]).pow(2).sum(-1)[:, pairs]  # (B, N (N - 1))
        distances = squared.clamp_min(1e-12).sqrt()
        return distances / distances.mean(1, keepdim=True).clamp_min(1e-12)

    student, teacher = normalised_distances(student_features), normalised_distances(teacher_features.detach())
    return F.smooth_l1_loss(student, teacher, reduction="none").mean(1)


def proximal_gradients(
    params: Mapping[str, Tensor], grads: Mapping[str, Tensor], anchor: Mapping[str, Tensor], lam: float
) -> dict[str, Tensor]:
    """Gradients of ``f(theta) + lam / 2 * ||theta - anchor||^2`` given those of ``f``:
    ``grad + lam * (theta - anchor)``.

    The proximal (regularised) objective of Ditto's personal model (Li, Hu, Beirami and Smith, ICML
    2021, eq. 2: ``anchor`` is the round's global model) and of pFedMe's personalised model (Dinh, Tran
    and Nguyen, NeurIPS 2020, eq. 2: ``anchor`` is the local model ``w``).

    Args:
        params: ``theta`` by name, any shapes.
        grads: ``grad f(theta)`` by name, shaped like ``params``.
        anchor: the point ``theta`` is pulled towards, shaped like ``params``; a constant.
        lam: the proximal weight ``lambda >= 0`` (0: the plain gradients).

    Returns:
        The gradients of the proximal objective by name; differentiable in ``params`` and ``grads``.
    """
    check_positive_float("lam", lam, allow_zero=True)
    return {name: grads[name] + lam * (p - anchor[name].detach()) for name, p in params.items()}


def proximal_sgd_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    anchor: Mapping[str, Tensor],
    lr: float,
    lam: float,
) -> dict[str, Tensor]:
    """One gradient step on ``f(theta) + lam / 2 * ||theta - anchor||^2``:
    ``theta - lr * (grad f(theta) + lam * (theta - anchor))`` (see :func:`proximal_gradients`).

    Args:
        params: ``theta`` by name.
        grads: ``grad f(theta)`` by name.
        anchor: the proximal centre by name; a constant.
        lr: step size > 0.
        lam: proximal weight >= 0.

    Returns:
        The updated ``theta`` by name.
    """
    return sgd_step(params, proximal_gradients(params, grads, anchor, lam), lr)


def hessian_vector_product(
    loss: Tensor, params: Mapping[str, Tensor], vector: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``H v``, the Hessian of ``loss`` in ``params`` times ``vector``, exactly, by double backward.

    ``H v = grad_theta <grad_theta loss, v>`` with ``v`` a constant (Pearlmutter, 1994): two backward
    passes, no Hessian formed. Per-FedAvg's Hessian-free variant needs it (Fallah, Mokhtari and
    Ozdaglar, NeurIPS 2020, section 5, with the product computed exactly instead of by their finite
    difference).

    Args:
        loss: a scalar computed from ``params`` (with its graph).
        params: the tensors ``theta`` by name (requiring gradients).
        vector: ``v`` by name, shaped like ``params``.

    Returns:
        ``H v`` by name, detached.
    """
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
    inner = sum((g * vector[n].detach()).sum() for n, g in zip(names, grads))
    if not isinstance(inner, Tensor) or not inner.requires_grad:  # a loss linear in `params`: H = 0
        return {n: torch.zeros_like(params[n]) for n in names}
    products = torch.autograd.grad(inner, [params[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(params[n]) if h is None else h.detach() for n, h in zip(names, products)}


def per_fedavg_hf_gradients(
    query_grads: Mapping[str, Tensor], hessian_products: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """Per-FedAvg's Hessian-free meta-gradient, ``(I - alpha H(w; D'')) grad f(w_tmp; D')``, from its parts.

    Fallah, Mokhtari and Ozdaglar, "Personalized Federated Learning with Theoretical Guarantees: A
    Model-Agnostic Meta-Learning Approach", NeurIPS 2020, eq. (10): with ``w_tmp = w - alpha grad
    f(w; D)``, the local update is ``w <- w - beta * (query_grads - alpha * hessian_products)``.

    Args:
        query_grads: ``g = grad f(w_tmp; D')`` by name.
        hessian_products: ``H(w; D'') g`` by name (:func:`hessian_vector_product`).
        alpha: the inner step size > 0.

    Returns:
        ``g - alpha * H g`` by name.
    """
    check_positive_float("alpha", alpha)
    return {name: g - alpha * hessian_products[name] for name, g in query_grads.items()}


def moreau_envelope_gradients(
    params: Mapping[str, Tensor], personalised: Mapping[str, Tensor], lam: float
) -> dict[str, Tensor]:
    """pFedMe's gradient of the Moreau envelope at the local model, ``lam * (w - theta)``.

    Dinh, Tran and Nguyen, "Personalized Federated Learning with Moreau Envelopes", NeurIPS 2020:
    ``F(w) = min_theta f(theta) + lam / 2 ||theta - w||^2`` has gradient ``lam * (w - theta*(w))``
    (their eq. 4), and the local update is ``w <- w - eta * lam * (w - theta)`` (algorithm 1) with
    ``theta`` the approximate minimiser: an SGD step of size ``eta`` along these gradients.

    Args:
        params: the local model ``w`` by name.
        personalised: ``theta`` by name, shaped like ``params``; a constant.
        lam: the regularisation weight > 0.

    Returns:
        ``lam * (w - theta)`` by name.
    """
    check_positive_float("lam", lam)
    return {name: lam * (w - personalised[name].detach()) for name, w in params.items()}
