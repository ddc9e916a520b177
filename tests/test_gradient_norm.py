"""Gradient-norm maps, lines, paths and per-input embedding gradients against closed forms and
``torch.autograd.grad`` on the full split computed in one piece (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, gradient_norm, surface
from landscape_core.text_demo import MeanPoolClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


class RootParam(nn.Module):
    """A model whose only parameters sit at the root: ``x @ w + b``."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.w = nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w + self.b


def _classification(n=23, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    return X, y


def _models():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    with torch.no_grad():
        bn[1].running_mean.uniform_(-0.5, 0.5)
        bn[1].running_var.uniform_(0.5, 2.0)
    return {"root": RootParam(), "sequential": seq, "batchnorm": bn.eval()}


LOSSES = {
    "ce": F.cross_entropy,
    "weighted": nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)),
    "ignore": nn.CrossEntropyLoss(ignore_index=1),
}


def _reference_norm(model, loss, X, y, theta, problem) -> float:
    """``||grad||`` of the loss on the whole split in one forward pass (no batching), float64."""
    theta = theta.detach().clone().requires_grad_(True)
    out = torch.func.functional_call(model, {**dict(model.named_buffers()), **problem.space.unflatten(theta)}, (X,))
    (grad,) = torch.autograd.grad(loss(out, y), theta)
    return float(grad.norm())


@pytest.mark.parametrize("model_name", ["root", "sequential", "batchnorm"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("batch_size", [1, 5, None])
def test_gradient_norms_equal_autograd_on_the_whole_split(model_name, loss_name, batch_size):
    model, loss = _models()[model_name], LOSSES[loss_name]
    X, y = _classification()
    problem = Problem(model, loss, (X, y), batch_size=batch_size)
    gen = torch.Generator().manual_seed(1)
    thetas = problem.theta0 + 0.3 * torch.randn(4, problem.space.size, generator=gen, dtype=torch.float64)
    got = gradient_norm.gradient_norms(problem, thetas)
    want = [_reference_norm(problem.model, loss, X, y, t, problem) for t in thetas]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert got.dtype == np.float64 and got.shape == (4,)


def test_linear_regression_closed_form():
    """``L = mean((X w + b - y)^2)``: ``grad = 2/n [X 1]^T r``."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(17, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(17, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    problem = Problem(model, F.mse_loss, (X, y), batch_size=4)
    for theta in (problem.theta0, problem.theta0 * -2.0 + 0.5):
        w, b = problem.space.unflatten(theta)["weight"], problem.space.unflatten(theta)["bias"]
        r = (X @ w.T + b - y).numpy()[:, 0]
        A = np.hstack([X.numpy(), np.ones((17, 1))])
        want = np.linalg.norm(2.0 / 17 * A.T @ r)
        assert gradient_norm.gradient_norms(problem, theta)[0] == pytest.approx(want, rel=1e-12)


def test_val_split_and_nonfinite_points():
    X, y = _classification()
    problem = Problem(_models()["sequential"], F.cross_entropy, (X[:15], y[:15]), (X[15:], y[15:]))
    theta = problem.theta0.clone()
    got = gradient_norm.gradient_norms(problem, torch.stack([theta, theta * float("inf")]), split="val")
    assert got[0] == pytest.approx(_reference_norm(problem.model, F.cross_entropy, X[15:], y[15:], theta, problem))
    assert np.isnan(got[1])
    with pytest.raises(ValueError, match="split must be one of"):
        gradient_norm.gradient_norms(problem, theta, split="test")


def test_plane_is_the_surface_grid_and_cached(fresh_cache):
    X, y = _classification()
    problem = Problem(_models()["batchnorm"], LOSSES["weighted"], (X, y), batch_size=6)
    gen = torch.Generator().manual_seed(2)
    d1, d2 = (torch.randn(problem.space.size, generator=gen, dtype=torch.float64) for _ in range(2))
    calls = []
    result = gradient_norm.plane(
        problem, d1, d2, span=(-1, 1), steps=5, span_y=(-0.5, 0.5), steps_y=3, progress=lambda d, t: calls.append(d)
    )
    loss_map = surface.plane(problem, d1, d2, span=(-1, 1), steps=5, span_y=(-0.5, 0.5), steps_y=3)
    np.testing.assert_array_equal(result.alphas, loss_map.alphas)
    np.testing.assert_array_equal(result.betas, loss_map.betas)
    grid = result.values["train_grad_norm"]
    assert grid.shape == (5, 3)
    for i, a in enumerate(result.alphas):
        for j, b in enumerate(result.betas):
            theta = problem.theta0 + a * d1 + b * d2
            assert grid[i, j] == pytest.approx(
                _reference_norm(problem.model, LOSSES["weighted"], X, y, theta, problem), rel=1e-12
            )
    assert result.settings["quantity"] == "grad_norm" and result.settings["kind"] == "plane"
    assert calls[-1] == 15
    again = gradient_norm.plane(problem, d1, d2, span=(-1, 1), steps=5, span_y=(-0.5, 0.5), steps_y=3)
    np.testing.assert_array_equal(again.values["train_grad_norm"], grid)
    cancel = __import__("threading").Event()
    cancel.set()  # a cached map needs no computation, so a set cancel event does not matter
    gradient_norm.plane(problem, d1, d2, span=(-1, 1), steps=5, span_y=(-0.5, 0.5), steps_y=3, cancel=cancel)
    with pytest.raises(gradient_norm.Cancelled):
        gradient_norm.plane(problem, d1, d2, span=(-1, 1), steps=7, cancel=cancel)


def test_quadratic_bowl_gradient_norm_grows_linearly():
    """``L = 0.5 sum h_i x_i^2`` along an eigen-axis ``e_k`` from 0: ``||grad|| = h_k |alpha|``."""
    from tests.curvature_models import DUMMY, Quadratic, mean_output

    h = [4.0, 1.0, 0.25]
    problem = Problem(Quadratic(h, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]), mean_output, DUMMY)
    for k in range(3):
        axis = torch.zeros(3, dtype=torch.float64)
        axis[k] = 1.0
        result = gradient_norm.line(problem, axis, span=(-2, 2), steps=9, use_cache=False)
        np.testing.assert_allclose(result.values["train_grad_norm"], h[k] * np.abs(result.alphas), rtol=1e-13)


def test_path_ends_and_refusals():
    X, y = _classification()
    problem = Problem(_models()["root"], LOSSES["ignore"], (X, y), batch_size=7)
    theta_b = problem.theta0 + 0.5
    result = gradient_norm.path(problem, problem.theta0, theta_b, steps=5, use_cache=False)
    np.testing.assert_array_equal(result.alphas, [0, 0.25, 0.5, 0.75, 1.0])
    ends = gradient_norm.gradient_norms(problem, torch.stack([problem.theta0, theta_b]))
    np.testing.assert_allclose(result.values["train_grad_norm"][[0, -1]], ends, rtol=1e-12)
    assert result.settings["kind"] == "path"
    with pytest.raises(ValueError, match="same point"):
        gradient_norm.path(problem, problem.theta0, problem.theta0.clone())
    with pytest.raises(ValueError, match="steps"):
        gradient_norm.path(problem, problem.theta0, theta_b, steps=1)


# -- per-input gradients in embedding space ---------------------------------------------------------
def _text_problem(n=9, T=6, vocab=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randint(1, vocab, (n, T), generator=gen)
    lengths = torch.randint(1, T + 1, (n,), generator=gen)
    X[torch.arange(T)[None] >= lengths[:, None]] = 0
    y = torch.randint(0, 2, (n,), generator=gen)
    torch.manual_seed(seed)
    model = MeanPoolClassifier(vocab, dim=5).double()
    return Problem(model, F.cross_entropy, (X, y)), X, y, lengths


@pytest.mark.parametrize("batch_size", [1, 4, 128])
def test_embedding_gradient_norms_closed_form(batch_size):
    """Mean pooling + linear head: ``d l / d e_t = W^T (p - e_y) / L`` at each real token, so
    ``||d l / d E||_F = ||W^T (p - e_y)|| / sqrt(L)``."""
    problem, X, y, lengths = _text_problem()
    got = gradient_norm.embedding_gradient_norms(problem, X, y, batch_size=batch_size)
    model = problem.model
    with torch.no_grad():
        p = torch.softmax(model(X), dim=1) - F.one_hot(y, 2).double()
        want = (p @ model.head.weight).norm(dim=1) / lengths.double().sqrt()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)


def test_embedding_gradient_norms_equal_autograd_per_input():
    problem, X, y, _ = _text_problem(seed=3)
    got = gradient_norm.embedding_gradient_norms(problem, X, y, batch_size=3)
    model = problem.model
    for i in range(X.shape[0]):
        E = model.embedding(X[i : i + 1]).detach().requires_grad_(True)
        mask = (X[i : i + 1] != 0)[..., None].double()
        logits = model.head((E * mask).sum(1) / mask.sum(1))
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y[i : i + 1]), E)
        assert got[i] == pytest.approx(float((grad * mask).norm()), rel=1e-12)
    with pytest.raises(ValueError, match="one label per input"):
        gradient_norm.embedding_gradient_norms(problem, X, y[:3])


def test_embedding_gradient_norms_are_disk_cached_under_model_data_and_loss(fresh_cache, monkeypatch):
    """Same model, point, inputs, labels, loss and batch size: served without a backward pass; any of
    them changed: computed afresh; a cache entry of another shape or a pickle under the key: recomputed."""
    import io

    from landscape_core import cache
    from landscape_core.embeddings import EmbeddingAccess

    calls = []
    losses = EmbeddingAccess.losses
    monkeypatch.setattr(EmbeddingAccess, "losses", lambda self, *a: calls.append(1) or losses(self, *a))
    problem, X, y, _ = _text_problem()
    first = gradient_norm.embedding_gradient_norms(problem, X, y)
    assert calls
    calls.clear()
    np.testing.assert_array_equal(gradient_norm.embedding_gradient_norms(problem, X, y), first)
    assert not calls
    weighted = Problem(problem.model, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]).double()), (X, y))
    other, *_ = _text_problem(seed=1)
    changed = [
        (problem, X, 1 - y, {}),
        (problem, X[:-1], y[:-1], {}),
        (problem, X, y, {"theta": problem.theta0 * 1.01}),
        (problem, X, y, {"batch_size": 4}),
        (weighted, X, y, {}),
        (other, X, y, {}),
    ]
    for p, X_, y_, kwargs in changed:
        calls.clear()
        gradient_norm.embedding_gradient_norms(p, X_, y_, **kwargs)
        assert calls, kwargs
    # an attacker's entries under the very key: other shapes, a pickle, negative norms
    from landscape_core.embeddings import EmbeddingAccess as Access

    settings = {**Access(problem).identity(X, y), "batch_size": 128}
    key = cache.make_key("embedding-grad-norm", gradient_norm.ALGORITHM_VERSION, settings)
    assert cache.fetch(key, bytes) is not None  # the key is the one the first call stored under
    for bad in (np.ones(3), np.array([{"x": 1}] * 9, dtype=object), -np.ones(9), np.ones(9, dtype=np.float32)):
        buffer = io.BytesIO()
        np.save(buffer, bad, allow_pickle=True)
        assert cache.put(key, buffer.getvalue())
        calls.clear()
        np.testing.assert_array_equal(gradient_norm.embedding_gradient_norms(problem, X, y), first)
        assert calls, bad
