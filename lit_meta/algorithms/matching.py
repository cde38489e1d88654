"""Matching Networks: classify a query by attention over the embedded support set.

Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, "Matching Networks for One Shot Learning",
NeurIPS 2016. ``P(y | x, S) = sum_i a(x, x_i) y_i`` with ``a`` a softmax over the support of cosine
similarities of embeddings (eq. 1-2), optionally with full context embeddings (appendix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lit_meta.algorithms.metric import MetricLearner
from lit_meta.validation import check_positive_float, check_positive_int, check_type


def cosine_attention(query_emb: Tensor, support_emb: Tensor, scale: float | Tensor = 1.0) -> Tensor:
    """Attention ``a(x, x_i)``: softmax over the support of cosine similarities (eq. 2), times ``scale``.

    Args:
        query_emb: ``(B, Nq, D)`` query embeddings ``f(x)``.
        support_emb: ``(B, Ns, D)`` support embeddings ``g(x_i)``.
        scale: multiplies the similarities before the softmax (1 in the paper; a number or a 0-d
            tensor, learned or not). Cosines lie in ``[-1, 1]``, so with 1 the attention can never be
            sharp: 20-way, a perfect match gets at most half of it.

    Returns:
        ``(B, Nq, Ns)`` attention weights; each row sums to 1.
    """
    similarity = F.normalize(query_emb, dim=-1) @ F.normalize(support_emb, dim=-1).transpose(1, 2)
    return (scale * similarity).softmax(-1)


def matching_log_probs(attention: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Class log-probabilities ``log sum_i a(x, x_i) onehot(y_i)`` (eq. 1).

    Args:
        attention: ``(B, Nq, Ns)`` attention weights, rows summing to 1.
        support_y: ``(B, Ns)`` support labels in ``[0, ways)``.
        ways: number of classes.

    Returns:
        ``(B, Nq, ways)`` log-probabilities. A class with no support sample gets probability 0,
        clamped to the dtype's smallest normal number so that its log stays finite.
    """
    probs = attention @ F.one_hot(support_y, ways).to(attention.dtype)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class FullContextEmbedding(nn.Module):
    """Full context embeddings ``g(x_i, S)`` and ``f(x, S)`` (Vinyals et al., 2016, appendix).

    ``g``: a bidirectional LSTM over the support embeddings, ``g = h_fwd + h_bwd + g'``.
    ``f``: an LSTM cell run for ``steps`` steps with content attention over ``g``:
    ``r_{k-1} = sum_i softmax(h_{k-1}^T g_i) g_i``, ``h_k = LSTM([f', r_{k-1}], (h_{k-1}, c_{k-1})) + f'``,
    ``h_0 = f'``, ``c_0 = 0``, ``f = h_K``. The paper writes the state as ``[h_{k-1}, r_{k-1}]``, whose
    size 2D cannot take the skip ``+ f'``; like common implementations (e.g. easyfsl) the readout
    enters the cell's input instead. All tasks and queries are processed at once.

    Args:
        dim: embedding size ``D``.
        steps: processing steps ``K`` of the attention LSTM.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def forward(self, query_emb: Tensor, support_emb: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, Nq, D), (B, Ns, D) -> f (B, Nq, D), g (B, Ns, D)``."""
        batch, n_query, dim = query_emb.shape
        hidden, _ = self.support_lstm(support_emb)
        g = hidden[..., :dim] + hidden[..., dim:] + support_emb
        f_prime = query_emb.reshape(batch * n_query, dim)
        h, c = f_prime, torch.zeros_like(f_prime)
        for _ in range(self.steps):
            attention = (h.view(batch, n_query, dim) @ g.transpose(1, 2)).softmax(-1)
            readout = (attention @ g).reshape(batch * n_query, dim)
            h, c = self.query_cell(torch.cat([f_prime, readout], -1), (h, c))
            h = h + f_prime
        return h.view(batch, n_query, dim), g


class MatchingNetworks(MetricLearner):
    """Matching Networks: attention over the embedded support set, no inner loop.

    Vinyals et al., NeurIPS 2016 (see the module docstring). The learner's "logits" are
    log-probabilities (they already sum to 1 after ``exp``), so the base class's cross-entropy equals
    the paper's negative log-likelihood.

    Args:
        backbone: embedding network with ``features`` and ``head`` (see :class:`MetricLearner`).
        fce: use full context embeddings (:class:`FullContextEmbedding`).
        fce_steps: processing steps ``K`` of the attention LSTM (used with ``fce``).
        cosine_scale: multiplies the cosine similarities before the attention softmax; 1 is the
            paper's attention, larger values let it become sharp (see :func:`cosine_attention`).
        learn_scale: meta-learn the scale, starting from ``cosine_scale`` (the metric scaling of
            Oreshkin, Rodriguez and Lacoste, "TADAM", NeurIPS 2018).
        optimizer: meta optimizer (Adam by default).
        lr_scheduler: optional schedule of the meta learning rate, stepped every meta-batch.

    Shape:
        A task with support ``(B, Ns, *input_shape)`` gives query log-probabilities ``(B, Nq, ways)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        fce: bool = False,
        fce_steps: int = 5,
        cosine_scale: float = 1.0,
        learn_scale: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        check_type("fce", fce, bool)
        check_positive_int("fce_steps", fce_steps)
        check_positive_float("cosine_scale", cosine_scale)
        check_type("learn_scale", learn_scale, bool)
        self.cosine_scale: float | nn.Parameter = (
            nn.Parameter(torch.tensor(float(cosine_scale))) if learn_scale else cosine_scale
        )
        self.fce = FullContextEmbedding(self.embedding_dim, fce_steps) if fce else None

    def classify(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        if self.fce is not None:
            query, support = self.fce(query, support)
        return matching_log_probs(cosine_attention(query, support, self.cosine_scale), support_y, ways)
