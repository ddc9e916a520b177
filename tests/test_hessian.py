"""Hessian-vector products, Lanczos eigenvalues, trace and density against exact float64 Hessians."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvature_models import (
    DUMMY,
    exact_hessian,
    logistic_problem,
    mean_output,
    mlp_problem,
    quadratic_problem,
    scalar_problem,
)
from torch import nn

from landscape_core import Problem, directions, hessian
from landscape_core.hessian import Spectrum
from landscape_core.hvp import HessianOperator, NonFiniteHVP

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def mlp():
    problem = mlp_problem()
    H = exact_hessian(problem)
    return problem, H, torch.linalg.eigvalsh(H)


# -- Hessian-vector products ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["forward", "double-backward", "auto"])
def test_hvp_matches_dense_hessian(mlp, method):
    problem, H, _ = mlp
    op = HessianOperator(problem, method=method)
    v = torch.randn(problem.space.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for _ in range(3):  # "auto" switches method after two products
        torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert op.hvp_count == 3


def test_forward_over_reverse_equals_double_backward():
    problem = mlp_problem(seed=3).at(mlp_problem(seed=3).theta0 * 1.5)
    v = torch.randn(problem.space.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    forward = HessianOperator(problem, method="forward").matvec(v)
    backward = HessianOperator(problem, method="double-backward").matvec(v)
    torch.testing.assert_close(forward, backward, rtol=1e-12, atol=1e-14)


def test_float64_copy_matches_and_leaves_problem_alone():
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 4, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    torch.manual_seed(0)
    problem32 = Problem(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)), F.cross_entropy, (X, y))
    reference = Problem(copy.deepcopy(problem32.model).double(), F.cross_entropy, (X.double(), y))
    op = HessianOperator(problem32, dtype="float64")
    v = torch.randn(problem32.space.size, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op.matvec(v), exact_hessian(reference) @ v, rtol=1e-10, atol=1e-12)
    assert problem32.dtype == torch.float32 and next(problem32.model.parameters()).dtype == torch.float32
    assert problem32.splits["train"].X.dtype == torch.float32 and problem32.theta0.dtype == torch.float32


def test_mask_gives_the_hessian_block(mlp):
    problem, H, _ = mlp
    mask = problem.space.mask(include="0.weight")
    idx = torch.nonzero(mask).flatten()
    block = H[idx][:, idx]
    spec = hessian.top_eigenvalues(problem, k=2, which="both", mask=mask, tol=1e-10, use_cache=False)
    exact = torch.linalg.eigvalsh(block)
    np.testing.assert_allclose(spec.values, [exact[-1], exact[-2], exact[1], exact[0]], rtol=1e-8, atol=1e-10)
    assert bool((spec.vectors[:, ~mask] == 0).all())
    tr = hessian.trace(problem, budget=3 * int(mask.sum()), mask=mask, use_cache=False)
    assert tr.estimate == pytest.approx(float(block.trace()), rel=1e-9) and tr.stderr == 0.0


# -- eigenvalues --------------------------------------------------------------------------------------
def test_top_and_bottom_eigenvalues_of_a_small_mlp(mlp):
    problem, H, exact = mlp
    spec = hessian.top_eigenvalues(problem, k=3, which="both", tol=1e-10, use_cache=False)
    np.testing.assert_allclose(spec.values[:3], exact[-3:].flip(0).numpy(), rtol=1e-9)
    np.testing.assert_allclose(spec.values[3:], exact[:3].flip(0).numpy(), rtol=1e-8)
    assert spec.all_converged and list(spec.ends) == ["largest"] * 3 + ["smallest"] * 3
    assert spec.lambda_max == pytest.approx(float(exact[-1])) and spec.lambda_min == pytest.approx(float(exact[0]))
    torch.testing.assert_close(spec.vectors.norm(dim=1), torch.ones(6, dtype=torch.float64))
    true_residuals = (spec.vectors @ H - torch.as_tensor(spec.values)[:, None] * spec.vectors).norm(dim=1)
    np.testing.assert_allclose(spec.residuals, true_residuals.numpy(), atol=1e-12)
    assert (spec.residuals <= 1e-10 * spec.settings["scale"]).all()


def test_smallest_alone_and_unconverged_is_reported(mlp):
    problem, _, exact = mlp
    spec = hessian.top_eigenvalues(problem, k=2, which="smallest", tol=1e-10, use_cache=False)
    np.testing.assert_allclose(spec.values, exact[:2].flip(0).numpy(), rtol=1e-8)
    short = hessian.top_eigenvalues(problem, k=3, tol=1e-12, max_iter=6, basis_size=5, use_cache=False)
    assert short.hvp_count == 6 and not short.all_converged
    assert (short.residuals[~short.converged] > 1e-12 * short.settings["scale"]).all()


def test_scalar_net_saddle_and_valley():
    saddle = hessian.top_eigenvalues(scalar_problem(0.0, 0.0), k=1, which="both", use_cache=False)
    np.testing.assert_allclose(saddle.values, [1.0, -1.0], atol=1e-12)
    valley = hessian.top_eigenvalues(scalar_problem(2.0, 0.5), k=2, use_cache=False)
    np.testing.assert_allclose(valley.values, [4.25, 0.0], atol=1e-12)


def test_logistic_regression_closed_form():
    problem, H = logistic_problem()
    exact = torch.linalg.eigvalsh(H)
    spec = hessian.top_eigenvalues(problem, k=4, tol=1e-10, use_cache=False)
    np.testing.assert_allclose(spec.values, exact.flip(0).numpy(), rtol=1e-9)
    tr = hessian.trace(problem, budget=12, use_cache=False)
    assert tr.estimate == pytest.approx(float(H.trace()), rel=1e-10)


# -- trace and density --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_estimate_and_honest_stderr(mlp, method):
    problem, H, _ = mlp
    exact = float(H.trace())
    est = hessian.trace(problem, budget=60, method=method, seed=4, use_cache=False)
    assert est.hvp_count == 60
    assert 0 < est.stderr < 0.25 * abs(exact)
    assert abs(est.estimate - exact) < 4 * est.stderr
    assert est.per_parameter == pytest.approx(est.estimate / problem.space.size)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum(mlp):
    problem, H, _ = mlp
    errors = {}
    for method in ("hutch++", "hutchinson"):
        estimates = [hessian.trace(problem, 45, seed=s, method=method, use_cache=False).estimate for s in range(4)]
        errors[method] = np.sqrt(np.mean((np.array(estimates) - float(H.trace())) ** 2))
    assert errors["hutch++"] < errors["hutchinson"]


def test_slq_with_full_steps_reproduces_the_spectrum():
    problem, H = logistic_problem(d=5)
    exact = torch.linalg.eigvalsh(H).numpy()
    dens = hessian.density(problem, iters=problem.space.size, runs=2, use_cache=False)
    assert dens.nodes.size == 2 * problem.space.size
    for r in range(2):
        np.testing.assert_allclose(np.sort(dens.nodes[dens.run == r]), exact, rtol=1e-9, atol=1e-12)
    assert dens.weights.sum() == pytest.approx(1.0)
    area = float(np.sum(np.diff(dens.grid) * (dens.density[1:] + dens.density[:-1]) / 2))  # trapezoid rule
    assert area == pytest.approx(1.0, abs=1e-6)  # (np.trapezoid is numpy >= 2 only; numpy 1.26 is supported)
    # quadrature is exact for polynomials of degree < 2m: sum w_i node_i = mean of v^T H v / n
    assert (dens.weights * dens.nodes).sum() == pytest.approx(float(H.trace()) / 6, rel=0.5)


def test_slq_nodes_of_an_mlp(mlp):
    problem, H, exact = mlp
    dens = hessian.density(problem, iters=20, runs=1, sigma=0.01, use_cache=False)
    assert dens.lambda_max == pytest.approx(float(exact[-1]), rel=1e-6)
    assert dens.lambda_min == pytest.approx(float(exact[0]), rel=1e-3)
    full = hessian.density(problem, iters=problem.space.size, use_cache=False)
    # each node is an eigenvalue (the start sees only distinct eigenvalues, so there may be fewer nodes)
    gaps = np.abs(full.nodes[:, None] - exact.numpy()[None, :]).min(axis=1)
    assert gaps.max() < 1e-9


# -- slices, directions, results ----------------------------------------------------------------------
def test_hessian_directions_and_slice_curvature(mlp):
    problem, H, exact = mlp
    d = directions.hessian(problem, tol=1e-10)
    assert d.shape == (2, problem.space.size)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2, dtype=torch.float64))
    info = directions.provenance(d[1])
    assert info["kind"] == "hessian" and info["which"] == "smallest"
    assert info["eigenvalue"] == pytest.approx(float(exact[0]))
    rand = directions.random(problem, count=1, norm="none")[0]
    sc = hessian.slice_curvature(problem, torch.stack([d[0], d[1], rand]), trace_budget=60)
    np.testing.assert_allclose(sc.curvatures[:2], [exact[-1], exact[0]], rtol=1e-8)
    u = rand / rand.norm()
    assert sc.curvatures[2] == pytest.approx(float(u @ H @ u), rel=1e-10)
    assert sc.lambda_max == pytest.approx(float(exact[-1])) and sc.lambda_min == pytest.approx(float(exact[0]))
    assert abs(sc.trace_per_param - float(H.trace()) / problem.space.size) < 4 * sc.trace_stderr
    assert "axis_0_curvature" in sc.to_csv()
    top_only = hessian.slice_curvature(problem, d[0], spectrum=hessian.top_eigenvalues(problem, k=1), trace_budget=9)
    back = hessian.SliceCurvature.from_bytes(top_only.to_bytes())
    assert np.isnan(back.lambda_min) and back.lambda_max == top_only.lambda_max


def test_trace_and_density_round_trip(mlp):
    problem, _, _ = mlp
    est = hessian.trace(problem, budget=12, use_cache=False)
    back = hessian.TraceEstimate.from_bytes(est.to_bytes())
    assert back.estimate == est.estimate and back.stderr == est.stderr
    np.testing.assert_array_equal(back.samples, est.samples)
    dens = hessian.density(problem, iters=10, runs=2, use_cache=False)
    again = hessian.Density.from_bytes(dens.to_bytes())
    np.testing.assert_array_equal(again.density, dens.density)
    np.testing.assert_array_equal(again.run, dens.run)
    assert dens.to_csv().count("\nnode,") == dens.nodes.size


def test_spectrum_round_trip_and_cache(mlp, fresh_cache):
    problem, _, _ = mlp
    first = hessian.top_eigenvalues(problem, k=2)
    again = hessian.top_eigenvalues(problem, k=2)
    back = Spectrum.from_bytes(first.to_bytes())
    for result in (again, back):
        np.testing.assert_array_equal(result.values, first.values)
        torch.testing.assert_close(result.vectors, first.vectors)
        assert list(result.ends) == list(first.ends) and result.hvp_count == first.hvp_count
    assert first.to_csv().splitlines()[0] == "index,end,eigenvalue,residual,converged"
    assert len(first.to_csv().splitlines()) == 3


# -- bad input ----------------------------------------------------------------------------------------
def test_k_larger_than_dimension():
    problem = quadratic_problem()
    with pytest.raises(ValueError, match="k = 3"):
        hessian.top_eigenvalues(problem, k=3)
    with pytest.raises(ValueError, match="2k = 4"):
        hessian.top_eigenvalues(problem, k=2, which="both")
    with pytest.raises(ValueError, match="which must be one of 'largest', 'smallest', 'both'; got 'middle'"):
        hessian.top_eigenvalues(problem, k=1, which="middle")
    with pytest.raises(ValueError, match="hvp_method"):
        hessian.top_eigenvalues(problem, k=1, hvp_method="finite-differences")
    with pytest.raises(ValueError, match="method must be one of"):
        hessian.trace(problem, budget=9, method="exact")
    with pytest.raises(ValueError, match="dtype"):
        hessian.top_eigenvalues(problem, k=1, dtype="float16")
    with pytest.raises(ValueError, match="budget"):
        hessian.trace(problem, budget=2)
    with pytest.raises(ValueError, match="iters"):
        hessian.density(problem, iters=0)


def test_argmax_loss_is_refused():
    torch.manual_seed(0)
    X, y = torch.randn(20, 3), torch.randint(0, 2, (20,))

    def error_rate(out, target):
        return (out.argmax(dim=1) != target).float().mean()

    problem = Problem(nn.Linear(3, 2), error_rate, (X, y))
    with pytest.raises(ValueError, match="not twice differentiable"):
        hessian.top_eigenvalues(problem, k=1, use_cache=False)


def test_train_mode_dropout_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    problem = Problem(model, F.cross_entropy, (torch.randn(10, 3), torch.randint(0, 2, (10,))), mode="train")
    with pytest.raises(ValueError, match="dropout"):
        hessian.top_eigenvalues(problem, k=1, use_cache=False)


class _Cusp(nn.Module):
    """``|x|^1.5``: finite loss and gradient at 0, infinite second derivative."""

    def __init__(self):
        super().__init__()
        self.x = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, inputs):
        return self.x.abs() ** 1.5


def test_non_finite_hvp_is_an_error():
    problem = Problem(_Cusp(), mean_output, DUMMY)
    with pytest.raises(NonFiniteHVP):
        hessian.top_eigenvalues(problem, k=1, use_cache=False)


def test_progress_and_cancel(mlp):
    import threading

    from landscape_core import Cancelled

    problem, _, _ = mlp
    seen = []
    est = hessian.trace(problem, budget=9, progress=lambda done, total: seen.append((done, total)), use_cache=False)
    assert seen[-1] == (9, 9) and len(seen) == est.hvp_count
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        hessian.top_eigenvalues(problem, k=1, cancel=cancel, use_cache=False)


def test_train_mode_batchnorm_warns_and_keeps_the_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(24, 3, dtype=torch.float64), torch.randint(0, 2, (24,))
    problem = Problem(model, F.cross_entropy, (X, y), mode="train", batch_size=8)
    before = {k: v.clone() for k, v in problem.buffers.items()}
    with pytest.warns(UserWarning, match="batch size"):
        spec = hessian.top_eigenvalues(problem, k=1, tol=1e-10, use_cache=False)
    for name, value in before.items():
        torch.testing.assert_close(problem.buffers[name], value)
    # train-mode BN: each batch is normalized by its own statistics. Dense reference by autograd rows
    # (torch.func.hessian's vmap mis-handles the in-place running-statistics update here).
    dense = torch.autograd.functional.hessian(problem.full_loss, problem.theta0.clone())
    exact = torch.linalg.eigvalsh(dense)
    assert spec.values[0] == pytest.approx(float(exact[-1]), rel=1e-8)
