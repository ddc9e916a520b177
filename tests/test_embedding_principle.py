"""The embedding principle: ``widen`` keeps every output, lifts gradients exactly, and adds the
Hessian directions the theory predicts (exact float64 Hessians of tiny nets).

Critical points are made exact by construction: pick weights ``theta*`` and inputs, then choose
targets whose residuals lie in the null space of the Jacobian's transpose (``J^T r = 0``), so the
gradient at ``theta*`` is zero to rounding (~1e-17) while the residuals, and with them the
splitting matrices ``S_k`` and ``M_k`` of ``landscape_core.embedding_principle``, are not zero.
The predicted counts come from those matrices in closed form (activation derivatives and
``dL/d output``), never from the widened Hessian itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem
from landscape_core.embedding_principle import (
    Widening,
    most_active_copy,
    split_curvature,
    split_direction,
    unit_activity,
    widen,
    widenable_layers,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
DT = torch.float64


# -- models ----------------------------------------------------------------------------------
class Nested(nn.Module):
    """A Sequential inside a module with a root-level parameter (an output temperature)."""

    def __init__(self, q: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.Tanh()), nn.Sequential(nn.Linear(5, 6)))
        self.temperature = nn.Parameter(torch.tensor(1.3))
        self.head = nn.Linear(6, q)

    def forward(self, x):
        return self.head(F.relu(self.body(x))) / self.temperature


class Functional(nn.Module):
    """Activations written as functions and scalar arithmetic in ``forward``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(h) * 0.5 + 1.0)


class Diamond(nn.Module):
    """Two elementwise branches of different depth that meet again before the next layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.fc1(x)
        deep = torch.sigmoid(torch.tanh(h))
        return self.fc2(torch.relu(h) * deep)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


def _conv_conv() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(72, 3))


def _conv_flatten() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.GELU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 3))


CASES = {  # name: (model builder, layer, image input)
    "sequential": (_mlp, "0", False),
    "nested-root-parameter": (Nested, "body.0.0", False),
    "nested-second-block": (Nested, "body.1.0", False),
    "functional": (Functional, "fc1", False),
    "diamond": (Diamond, "fc1", False),
    "conv-conv": (_conv_conv, "0", True),
    "conv-pool-flatten-linear": (_conv_flatten, "0", True),
}


def _data(image: bool, n: int = 37, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 1, 8, 8, generator=gen, dtype=DT) if image else torch.randn(n, 4, generator=gen, dtype=DT)
    y = torch.randint(0, 3, (n,), generator=gen)
    return X, y


def _problem(name: str, loss=F.cross_entropy, batch_size=None, seed=0) -> tuple[Problem, str]:
    build, layer, image = CASES[name]
    torch.manual_seed(seed)
    model = build().to(DT)
    X, y = _data(image, seed=seed)
    Xv, yv = _data(image, n=11, seed=seed + 1)
    return Problem(model, loss, (X, y), (Xv, yv), batch_size=batch_size), layer


def _grad(problem: Problem) -> torch.Tensor:
    return torch.func.grad(lambda t: problem.full_loss(t))(problem.theta0)


def _hessian(problem: Problem) -> torch.Tensor:
    return torch.func.hessian(lambda t: problem.full_loss(t))(problem.theta0)


# -- function, loss, outputs -----------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("split", ["random", "half", 0.3])
def test_outputs_loss_and_metrics_unchanged(name, split):
    problem, layer = _problem(name, batch_size=8)
    units = problem.space[f"{layer}.weight"].shape[0]
    wide = widen(problem, layer, units + 4, seed=1, split=split)
    for s in problem.splits.values():
        before, after = problem.forward(problem.theta0, s.X), wide.forward(wide.theta0, s.X)
        assert float((before - after).abs().max()) <= 1e-12
    assert set(wide.base) == set(problem.base)
    for q, v in problem.base.items():
        assert wide.base[q] == pytest.approx(v, abs=1e-12)
    assert wide.space.size > problem.space.size
    assert wide.batch_size == problem.batch_size and wide.mode is problem.mode
    assert sorted(wide.metrics) == sorted(problem.metrics) and wide.loss is problem.loss
    assert wide.data_fingerprint() == problem.data_fingerprint()
    info = wide.widening
    assert isinstance(info, Widening) and info.units == units and info.width == units + 4
    for k in np.unique(info.sources):  # the shares of a source and its copies add up to one
        group = [k, *(units + np.flatnonzero(info.sources == k))]
        assert info.shares[group].sum() == pytest.approx(1.0, abs=1e-12)


def _weighted(out, y):
    return F.cross_entropy(out, y, weight=torch.tensor([0.2, 1.0, 3.0], dtype=out.dtype))


def _ignore(out, y):
    return F.cross_entropy(out, y, ignore_index=1)


@pytest.mark.parametrize("loss", [_weighted, _ignore], ids=["class-weighted", "ignore-index"])
@pytest.mark.parametrize("batch_size", [None, 5, 16])
def test_other_losses_and_batch_sizes_keep_the_loss(loss, batch_size):
    problem, layer = _problem("nested-root-parameter", loss=loss, batch_size=batch_size)
    wide = widen(problem, layer, 9, seed=2)
    for q, v in problem.base.items():
        assert wide.base[q] == pytest.approx(v, abs=1e-12)
    assert wide.splits["train"].batch_size == problem.splits["train"].batch_size


def test_built_from_theta0_not_from_the_stored_weights():
    problem, layer = _problem("sequential")
    moved = problem.at(problem.theta0 + 0.1 * torch.randn(problem.space.size, dtype=DT))
    wide = widen(moved, layer, 8)
    X = problem.splits["train"].X
    assert float((moved.forward(moved.theta0, X) - wide.forward(wide.theta0, X)).abs().max()) <= 1e-12


def test_float32_demo_keeps_its_loss():
    from landscape_core import demos

    problem = demos.load("digits-mlp").problem.subset(256)
    wide = widen(problem, "0", 160, seed=0)
    assert wide.space.size == 64 * 160 + 160 + 160 * 10 + 10
    for q, v in problem.base.items():
        assert wide.base[q] == pytest.approx(v, rel=1e-5, abs=1e-6)


def test_seed_and_split_are_reproducible_and_explicit_shares_are_kept():
    problem, layer = _problem("sequential")
    a, b = widen(problem, layer, 9, seed=4), widen(problem, layer, 9, seed=4)
    assert torch.equal(a.theta0, b.theta0)
    c = widen(problem, layer, 9, seed=5)
    assert not np.array_equal(a.widening.sources, c.widening.sources) or not torch.equal(a.theta0, c.theta0)
    given = [0.25, -0.5, 1.5, 2.0]
    d = widen(problem, layer, 9, seed=4, split=given)
    assert d.widening.shares[5:].tolist() == given and d.widening.split == given
    for k, share in zip(d.widening.sources, given):
        assert d.widening.shares[k] == pytest.approx(1 - share)


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sequential", "nested-root-parameter", "conv-conv", "conv-pool-flatten-linear"])
def test_gradient_lifts_exactly(name):
    """At any point: a copy's incoming gradient is its share times the source's; outgoing ones are equal."""
    problem, layer = _problem(name)
    wide = widen(problem, layer, problem.space[f"{layer}.weight"].shape[0] + 3, seed=0)
    info = wide.widening
    narrow_g, wide_g = problem.space.unflatten(_grad(problem)), wide.space.unflatten(_grad(wide))
    index = np.concatenate([np.arange(info.units), info.sources])
    for leaf in ("weight", "bias"):
        name_ = f"{layer}.{leaf}"
        expected = narrow_g[name_][index] * torch.as_tensor(info.shares, dtype=DT).reshape(
            -1, *[1] * (narrow_g[name_].dim() - 1)
        )
        assert torch.allclose(wide_g[name_], expected, atol=1e-12, rtol=0)
    consumer = f"{info.consumer}.weight"
    grouped = narrow_g[consumer].reshape(narrow_g[consumer].shape[0], info.units, info.block, -1)
    expected = grouped[:, index].reshape(wide_g[consumer].shape)
    assert torch.allclose(wide_g[consumer], expected, atol=1e-12, rtol=0)
    for name_ in narrow_g:
        if name_ not in (f"{layer}.weight", f"{layer}.bias", consumer):
            assert torch.allclose(wide_g[name_], narrow_g[name_], atol=1e-12, rtol=0)


# -- exact critical points and the Hessian's inertia -------------------------------------------
def critical_problem(activation, outputs: int, loss: str, n: int = 40, seed: int = 0, rho: float = 0.05) -> Problem:
    """A 2-3-``outputs`` net at an exact critical point (see the module docstring).

    ``loss="mse"``: targets ``y = f(theta*) - r``; ``"ce"``: soft labels ``t = softmax(f) - r`` with
    rows of ``r`` summing to 0. ``r`` is random in the null space of ``J^T`` (and of the row
    sums), scaled so its largest entry is ``rho``.
    """
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 2, generator=gen, dtype=DT)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 3), activation(), nn.Linear(3, outputs)).to(DT)
    probe = Problem(model, F.mse_loss, (X, torch.zeros(n, outputs, dtype=DT)))
    jac = torch.func.jacrev(lambda t: probe.forward(t, X))(probe.theta0).reshape(n * outputs, -1)
    rows = jac.T
    if loss == "ce":
        rows = torch.cat([rows, torch.kron(torch.eye(n, dtype=DT), torch.ones(1, outputs, dtype=DT))])
    basis, _ = torch.linalg.qr(rows.T)
    xi = torch.randn(n * outputs, generator=gen, dtype=DT)
    r = xi - basis @ (basis.T @ xi)
    r = (rho * r / r.abs().max()).reshape(n, outputs)
    with torch.no_grad():
        out = probe.forward(probe.theta0, X)
    if loss == "mse":
        return Problem(model, F.mse_loss, (X, out - r), batch_size=16)
    soft = torch.softmax(out, dim=1) - r
    assert (soft > 0).all()
    return Problem(model, F.cross_entropy, (X, soft), batch_size=16)


def splitting_matrices(problem: Problem, activation, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``S_k`` ``(p, p)`` and ``M_k`` ``(q, p)`` of hidden unit ``k`` (layer "0", next "2")."""
    params = problem.space.unflatten(problem.theta0)
    X, y = problem.splits["train"].X, problem.splits["train"].y
    out = problem.forward(problem.theta0, X).detach().requires_grad_(True)
    (G,) = torch.autograd.grad(problem.loss(out, y), out)  # dL/d output, (n, q): the 1/n is inside
    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=DT)], dim=1)
    z = (Xt @ torch.cat([params["0.weight"], params["0.bias"][:, None]], dim=1).T)[:, k].requires_grad_(True)
    (d1,) = torch.autograd.grad(activation()(z).sum(), z, create_graph=True)
    d2 = torch.autograd.grad(d1.sum(), z)[0] if d1.requires_grad else torch.zeros_like(z)  # ReLU: s'' = 0
    S = torch.einsum("n,ni,nj->ij", (G @ params["2.weight"][:, k]) * d2, Xt, Xt)
    M = torch.einsum("no,n,ni->oi", G, d1.detach(), Xt)
    return S, M


def inertia(eigenvalues: torch.Tensor, tol: float) -> np.ndarray:
    """``[positive, zero, negative]`` counts with ``|lambda| <= tol`` as zero."""
    e = eigenvalues
    return np.array([int((e > tol).sum()), int((e.abs() <= tol).sum()), int((e < -tol).sum())])


def predicted_extra(narrow: Problem, activation, wide: Problem, tol: float) -> np.ndarray:
    """Sum over new units of the inertia of ``[[a c S_k, M_k^T], [M_k, 0]]`` (``a``, ``c``: copy's and source's shares)."""
    info = wide.widening
    extra = np.zeros(3, dtype=int)
    for e, k in enumerate(info.sources):
        S, M = splitting_matrices(narrow, activation, int(k))
        p, q = S.shape[0], M.shape[0]
        K = torch.zeros(p + q, p + q, dtype=DT)
        K[:p, :p] = info.shares[info.units + e] * info.shares[k] * S
        K[p:, :p], K[:p, p:] = M, M.T
        extra += inertia(torch.linalg.eigvalsh(K), tol)
    return extra


THEORY_CASES = {  # name: (activation, outputs, loss)
    "tanh-mse-1-output": (nn.Tanh, 1, "mse"),
    "tanh-mse-3-outputs": (nn.Tanh, 3, "mse"),
    "softplus-mse-2-outputs": (nn.Softplus, 2, "mse"),
    "tanh-soft-cross-entropy": (nn.Tanh, 3, "ce"),
    "relu-soft-cross-entropy": (nn.ReLU, 3, "ce"),
}


@pytest.mark.parametrize("case", list(THEORY_CASES))
@pytest.mark.parametrize(("width", "split"), [(4, "random"), (6, "half"), (8, "random"), (4, 1.5)])
def test_hessian_inertia_matches_the_embedding_principle(case, width, split):
    """inertia(H_wide) = inertia(H_narrow) + sum over new units of inertia([[a c S_k, M_k^T], [M_k, 0]]).

    Width 8 splits one unit twice (a source with two copies adds the same block twice); share
    1.5 (the source keeps -0.5) flips the sign of ``S_k``'s block. The zero and nonzero
    eigenvalues are separated by many orders of magnitude (checked), so the counts are exact.
    """
    activation, outputs, loss = THEORY_CASES[case]
    narrow = critical_problem(activation, outputs, loss)
    wide = widen(narrow, "0", width, seed=3, split=split)
    g_narrow, g_wide = _grad(narrow).norm(), _grad(wide).norm()
    assert g_narrow < 1e-15 and g_wide < 1e-15  # critical stays critical, to the same precision
    before, after = torch.linalg.eigvalsh(_hessian(narrow)), torch.linalg.eigvalsh(_hessian(wide))
    scale = float(after.abs().max())
    tol = 1e-11 * scale
    zeros, nonzeros = after.abs()[after.abs() <= tol], after.abs()[after.abs() > tol]
    assert float(zeros.max()) < 1e-4 * tol and float(nonzeros.min()) > 1e2 * tol  # a clear gap
    expected = inertia(before, tol) + predicted_extra(narrow, activation, wide, tol)
    assert inertia(after, tol).tolist() == expected.tolist()
    assert wide.space.size - narrow.space.size == expected.sum() - inertia(before, tol).sum()


def test_a_strict_minimum_becomes_a_saddle():
    """tanh, 3 outputs, MSE: the narrow point is a strict minimum (all 21 eigenvalues > 0). One split
    adds ``r = rank M_k = 2`` positive and 2 negative directions (``v_k^T M_k = 0`` at a critical
    point, so ``r <= q - 1``), ``q - r = 1`` zero, and the sign of ``S_k`` on the null space of
    ``M_k`` (one direction here, negative): 23 positive, 1 zero, 3 negative, a strict saddle."""
    narrow = critical_problem(nn.Tanh, 3, "mse")
    before = torch.linalg.eigvalsh(_hessian(narrow))
    tol = 1e-11 * float(before.abs().max())
    assert inertia(before, tol).tolist() == [21, 0, 0]
    wide = widen(narrow, "0", 4, seed=3)
    S, M = splitting_matrices(narrow, nn.Tanh, int(wide.widening.sources[0]))
    assert torch.linalg.matrix_rank(M, atol=tol).item() == 2
    null = torch.linalg.svd(M).Vh[2:].T  # (p, p - r)
    assert float((null.T @ S @ null).squeeze()) < -tol
    after = torch.linalg.eigvalsh(_hessian(wide))
    assert inertia(after, 1e-11 * float(after.abs().max())).tolist() == [23, 1, 3]
    assert float(after.min()) < -1e-6


def test_relu_adds_flat_directions_for_every_incoming_weight():
    """ReLU has ``s'' = 0``, so ``S_k = 0``: each new unit adds ``(q - r) + (p - r)`` zeros, ``r`` of each sign."""
    narrow = critical_problem(nn.ReLU, 3, "ce")
    wide = widen(narrow, "0", 5, seed=3, split="half")
    after = torch.linalg.eigvalsh(_hessian(wide))
    before = torch.linalg.eigvalsh(_hessian(narrow))
    tol = 1e-11 * float(after.abs().max())
    p, q = 3, 3
    expected = inertia(before, tol)
    for k in wide.widening.sources:
        S, M = splitting_matrices(narrow, nn.ReLU, int(k))
        assert float(S.abs().max()) == 0.0
        r = torch.linalg.matrix_rank(M, atol=tol).item()
        expected = expected + np.array([r, (q - r) + (p - r), r])
    assert inertia(after, tol).tolist() == expected.tolist()


def test_split_directions_flat_and_curved():
    """Outgoing: the loss is exactly constant and ``H v = 0``; incoming: the curvature of the closed form."""
    narrow = critical_problem(nn.Tanh, 1, "mse")
    wide = widen(narrow, "0", 4, seed=3)
    H = _hessian(wide)
    out = split_direction(wide, "outgoing", copy=0)
    losses = wide.evaluate(torch.stack([wide.theta0 + t * out for t in (-2.0, 0.0, 0.7, 3.0)]))["train_loss"]
    assert np.ptp(losses) <= 1e-15
    assert float((H @ out).norm()) <= 1e-12
    inc = split_direction(wide, "incoming", copy=0, seed=5)
    info = wide.widening
    k, new = int(info.sources[0]), info.units
    a, c = info.shares[new], info.shares[k]
    moved = wide.space.unflatten(inc)
    u = torch.cat([moved["0.weight"][k], moved["0.bias"][k : k + 1]]) / a  # +a u on the source
    copy_part = torch.cat([moved["0.weight"][new], moved["0.bias"][new : new + 1]])
    assert torch.allclose(copy_part, -c * u, atol=1e-15)  # -c u on the copy: the shares' mean stays put
    S, _ = splitting_matrices(narrow, nn.Tanh, k)
    # along t d the pair adds c v s(z + t a u.x) + a v s(z - t c u.x): the first derivative cancels and
    # the second is a c (a + c) v s'' (u.x)^2; d has norm 1, so |u|^2 (a^2 + c^2) = 1
    expected = a * c * (a + c) * float(u @ S @ u) / ((a**2 + c**2) * float(u @ u))
    assert float(inc @ H @ inc) == pytest.approx(expected, rel=1e-9)
    assert float(out.norm()) == pytest.approx(1.0) and float(inc.norm()) == pytest.approx(1.0)
    result = split_curvature(wide, copy=0, seed=5)
    assert result.kinds == ["outgoing", "incoming"]
    assert abs(result.curvatures[0]) <= 1e-14 and result.residuals[0] <= 1e-12
    assert result.curvatures[1] == pytest.approx(expected, rel=1e-9)
    assert result.residuals[1] == pytest.approx(float((H @ inc - (inc @ H @ inc) * inc).norm()), rel=1e-9)
    assert result.gradient_norm < 1e-15
    assert type(result).from_bytes(result.to_bytes()).curvatures.tolist() == result.curvatures.tolist()


@pytest.mark.parametrize("name", ["sequential", "conv-pool-flatten-linear"])
def test_unit_activity_finds_dead_units(name):
    problem, layer = _problem(name)
    params = problem.space.unflatten(problem.theta0.clone())
    params[f"{layer}.bias"][0] = -1e3  # unit 0 never fires (ReLU/GELU near 0, tanh saturated at -1)
    problem = problem.at(problem.space.flatten(params))
    units = problem.space[f"{layer}.weight"].shape[0]
    wide = widen(problem, layer, 2 * units, seed=0)  # every unit is split once, unit 0 too
    activity = unit_activity(wide)
    assert activity.shape == (2 * units,) and activity[0] < 1e-9 and (activity[1:units] > 1e-3).all()
    assert np.allclose(activity[units:], activity[wide.widening.sources], rtol=0, atol=1e-12)  # copies = sources
    best = most_active_copy(wide)
    assert wide.widening.sources[best] != 0 and activity[wide.widening.sources[best]] == activity[:units].max()


# -- refusals ------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h + x)


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.fc2(torch.relu(self.fc1(x)))
        return self.fc2(torch.tanh(self.fc1(x)))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.fc2(torch.relu(self.fc2(torch.relu(self.fc1(x))))))


REFUSALS = {
    "batchnorm-between": (
        lambda: nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)),
        "0",
        "BatchNorm1d '1'",
    ),
    "softmax-between": (lambda: nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=1), nn.Linear(5, 3)), "0", "Softmax '1'"),
    "last-layer": (_mlp, "2", "last layer"),
    "not-a-layer": (lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)), "1", "is a LayerNorm"),
    "unknown-name": (_mlp, "fc9", "one of ['0', '2']"),
    "residual": (Residual, "fc1", "also reads 'x'"),
    "untraceable": (Branching, "fc1", "could not be traced"),
    "called-twice": (Shared, "fc2", "called 2 times"),
    "consumer-called-twice": (Shared, "fc1", "called more than once"),
    "grouped-conv": (
        lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)),
        "0",
        "groups=2",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_by_name_with_a_sentence(case):
    build, layer, words = REFUSALS[case]
    torch.manual_seed(0)
    model = build().to(DT)
    image = isinstance(model[0], nn.Conv2d) if isinstance(model, nn.Sequential) else False
    X = torch.randn(12, 2, 8, 8, dtype=DT) if image else torch.randn(12, 4, dtype=DT).abs()
    problem = Problem(model, F.cross_entropy, (X, torch.randint(0, 3, (12,))))
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        widen(problem, layer, 9)
    if layer in widenable_layers(problem):
        assert widenable_layers(problem)[layer]  # the page lists the same reason


def test_dropout_only_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.3), nn.Linear(5, 3)).to(DT)
    X, y = torch.randn(10, 4, dtype=DT), torch.randint(0, 3, (10,))
    assert widen(Problem(model, F.cross_entropy, (X, y)), "0", 7).widening.width == 7
    with pytest.raises(ValueError, match="dropout in train mode"):
        widen(Problem(model, F.cross_entropy, (X, y), mode="train"), "0", 7)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"width": 5}, "width must be an integer from 6"),
        ({"width": True}, "width must be"),
        ({"width": 8.0}, "width must be"),
        ({"width": 9, "split": "thirds"}, "split must be 'random', 'half'"),
        ({"width": 9, "split": [0.5, 0.5]}, "4 numbers"),
        ({"width": 9, "split": [0.5, float("nan"), 0.1, 0.2]}, "finite"),
        ({"width": 9, "seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments(kwargs, words):
    problem, _ = _problem("sequential")
    with pytest.raises(ValueError, match=words):
        widen(problem, "0", **kwargs)


def test_split_direction_needs_a_widened_problem():
    problem, _ = _problem("sequential")
    for needs_widen in (split_direction, unit_activity, most_active_copy):
        with pytest.raises(ValueError, match="made by widen"):
            needs_widen(problem)
    wide = widen(problem, "0", 7)
    with pytest.raises(ValueError, match="copy must be an integer from 0 to 1"):
        split_direction(wide, copy=2)
    with pytest.raises(ValueError, match="kind must be"):
        split_direction(wide, kind="sideways")


# -- the wide net trained from scratch ------------------------------------------------------------
@pytest.mark.slow
def test_wide_demo_is_deterministic_and_cached_as_npz_bytes(fresh_cache):
    import io

    from landscape_core import cache, wide_demo

    first = wide_demo.load("digits-mlp", width=132)
    stored = cache.get(wide_demo.cache_key("digits-mlp", 132))
    assert isinstance(stored, bytes)
    with np.load(io.BytesIO(stored), allow_pickle=False) as archive:  # arrays only, no pickles
        assert "A/state/0.weight" in archive.files and archive["A/state/0.weight"].shape == (132, 64)
    again = wide_demo.load("digits-mlp", width=132, use_cache=False)  # retrained from scratch
    assert torch.equal(first.theta0, again.theta0)
    wide_demo._memo.clear()
    cached = wide_demo.load("digits-mlp", width=132)  # read back from the bytes
    assert torch.equal(cached.theta0, first.theta0) and cached.base == first.base
    assert first.base["train_accuracy"] > 0.99 and first.space.size == 64 * 132 + 132 + 132 * 10 + 10
    with pytest.raises(ValueError, match="MLP demos"):
        wide_demo.load("digits-bn-cnn", width=132)
    with pytest.raises(ValueError, match="width must be"):
        wide_demo.load("digits-mlp", width=0)
