"""The update maths of the personalised FL baselines (lit_meta.functional), against hand computations and
closed forms: proximal steps, the Hessian-vector product, Per-FedAvg's correction, pFedMe's envelope."""

import pytest
import torch
from torch.func import functional_call

from lit_meta.functional import (
    hessian_vector_product,
    moreau_envelope_gradients,
    per_fedavg_hf_gradients,
    proximal_gradients,
    proximal_sgd_step,
)
from lit_meta.models import MLP


def test_proximal_gradients_add_lambda_times_the_distance_to_the_anchor():
    params = {"w": torch.tensor([1.0, -2.0]), "b": torch.tensor(3.0)}
    grads = {"w": torch.tensor([0.5, 0.5]), "b": torch.tensor(-1.0)}
    anchor = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor(1.0)}
    got = proximal_gradients(params, grads, anchor, lam=0.1)
    torch.testing.assert_close(got["w"], torch.tensor([0.5 + 0.1, 0.5 - 0.2]))
    torch.testing.assert_close(got["b"], torch.tensor(-1.0 + 0.2))
    assert all(torch.equal(proximal_gradients(params, grads, anchor, lam=0.0)[k], grads[k]) for k in grads)
    step = proximal_sgd_step(params, grads, anchor, lr=0.5, lam=0.1)
    torch.testing.assert_close(step["w"], params["w"] - 0.5 * got["w"])
    with pytest.raises(ValueError, match=r"Expected `lam` >= 0, but got -0\.1\."):
        proximal_gradients(params, grads, anchor, lam=-0.1)


def test_proximal_steps_converge_to_the_closed_form_proximal_point_of_a_quadratic():
    # f(theta) = a / 2 ||theta - c||^2: argmin f + lam / 2 ||theta - w||^2 = (a c + lam w) / (a + lam).
    a, lam = 2.0, 15.0
    c, w = torch.tensor([1.0, -1.0, 4.0], dtype=torch.float64), torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
    theta = {"p": w.clone()}
    for _ in range(200):
        theta = proximal_sgd_step(theta, {"p": a * (theta["p"] - c)}, {"p": w}, lr=0.05, lam=lam)
    expected = (a * c + lam * w) / (a + lam)
    torch.testing.assert_close(theta["p"], expected)
    # pFedMe's w-gradient at the proximal point: lam (w - theta*) = lam a / (a + lam) (w - c), the
    # gradient of the Moreau envelope of f.
    envelope = moreau_envelope_gradients({"p": w}, theta, lam)["p"]
    torch.testing.assert_close(envelope, lam * a / (a + lam) * (w - c))


def test_moreau_envelope_gradients_by_hand_and_refuses_a_non_positive_lambda():
    got = moreau_envelope_gradients({"p": torch.tensor([2.0, 0.0])}, {"p": torch.tensor([1.0, 1.0])}, lam=15.0)
    torch.testing.assert_close(got["p"], torch.tensor([15.0, -15.0]))
    with pytest.raises(ValueError, match=r"Expected `lam` > 0, but got 0\.0\."):
        moreau_envelope_gradients({"p": torch.zeros(1)}, {"p": torch.zeros(1)}, lam=0.0)


def _flat_loss(model: MLP, x: torch.Tensor, y: torch.Tensor):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = flat[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return out

    def loss(flat: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, unflatten(flat), (x,)), y)

    return loss, unflatten


def test_hessian_vector_product_equals_the_explicit_hessian_times_the_vector_in_float64():
    torch.manual_seed(0)
    model = MLP(3, (4,), 3, activation="tanh").double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    loss_of, unflatten = _flat_loss(model, x, y)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    hessian = torch.autograd.functional.hessian(loss_of, flat)  # (P, P), formed explicitly
    v = torch.randn_like(flat)
    params = {n: p.detach().requires_grad_() for n, p in unflatten(flat).items()}
    loss = torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)
    got = hessian_vector_product(loss, params, unflatten(v))
    torch.testing.assert_close(torch.cat([got[n].flatten() for n in params]), hessian @ v, rtol=1e-10, atol=1e-12)
    # Per-FedAvg's correction from the parts: (I - alpha H) g.
    direction = per_fedavg_hf_gradients(unflatten(v), got, alpha=0.3)
    expected = (torch.eye(len(flat), dtype=torch.float64) - 0.3 * hessian) @ v
    torch.testing.assert_close(torch.cat([direction[n].flatten() for n in params]), expected, rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_of_a_loss_linear_in_the_parameters_is_zero():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    got = hessian_vector_product((w * torch.tensor([3.0, -1.0])).sum(), {"w": w}, {"w": torch.ones(2)})
    assert torch.equal(got["w"], torch.zeros(2))


def test_per_fedavg_hf_gradients_by_hand_and_refuses_a_non_positive_alpha():
    got = per_fedavg_hf_gradients({"p": torch.tensor([1.0, 2.0])}, {"p": torch.tensor([10.0, -10.0])}, alpha=0.1)
    torch.testing.assert_close(got["p"], torch.tensor([0.0, 3.0]))
    with pytest.raises(ValueError, match=r"Expected `alpha` > 0, but got 0\."):
        per_fedavg_hf_gradients({"p": torch.ones(1)}, {"p": torch.ones(1)}, alpha=0)
