"""Keskar epsilon-sharpness, worst-case/adaptive and average sharpness against closed forms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvature_models import quadratic_problem, scalar_problem
from torch import nn

from landscape_core import Problem, sharpness
from landscape_core.sharpness import Sharpness

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# quadratic 0.5 (x - x*)^T H (x - x*), H = diag(1, 4), x* = (1, -2), evaluated at x = x*
H_DIAG = np.array([1.0, 4.0])
X_STAR = np.array([1.0, -2.0])


def test_keskar_epsilon_sharpness_closed_form():
    problem = quadratic_problem()
    result = sharpness.epsilon(problem, eps=1e-3)
    # box |delta_i| <= eps (|x*_i| + 1) = (2e-3, 3e-3); max at a corner: 0.5 (1 * 4e-6 + 4 * 9e-6) = 2e-5
    assert result.value == pytest.approx(0.002, rel=1e-9)
    assert result.base_loss == 0.0 and result.perturbed_loss == pytest.approx(2e-5, rel=1e-9)
    np.testing.assert_allclose(result.perturbation.abs().numpy(), [2e-3, 3e-3], rtol=1e-9)
    assert result.settings["eps"] == 1e-3 and result.kind == "epsilon"


def test_keskar_epsilon_in_a_random_subspace():
    problem = quadratic_problem()
    result = sharpness.epsilon(problem, eps=1e-3, subspace_dim=1, seed=3)
    delta = result.perturbation.numpy()
    # the maximizer of a convex quadratic over the interval lies at its end: phi = 100 * 0.5 delta^T H delta
    assert result.value == pytest.approx(100 * 0.5 * (H_DIAG * delta**2).sum(), rel=1e-9)
    assert 0 < result.value < 0.002 + 1e-12


def test_worst_case_l2_sharpness_is_half_rho_squared_lambda_max():
    problem = quadratic_problem()
    rho = 0.1
    result = sharpness.worst_case(problem, rho, p=2, iters=40)
    assert result.value == pytest.approx(0.5 * rho**2 * 4.0, rel=1e-9)
    assert float(result.perturbation.norm()) == pytest.approx(rho)
    linf = sharpness.worst_case(problem, rho, p=np.inf, iters=5)
    assert linf.value == pytest.approx(0.5 * rho**2 * H_DIAG.sum(), rel=1e-9)  # the corner of the box


def test_adaptive_sharpness_on_the_quadratic():
    problem = quadratic_problem()
    rho = 0.01
    result = sharpness.adaptive(problem, rho, iters=40)
    # delta = |x*| u: curvature diag(|x*|) H diag(|x*|) = diag(1, 16)
    assert result.value == pytest.approx(0.5 * rho**2 * 16.0, rel=1e-9)
    assert result.kind == "adaptive"


def test_average_sharpness_is_half_sigma_squared_trace():
    problem = quadratic_problem()
    sigma = 0.05
    result = sharpness.average(problem, sigma, samples=400, seed=1)
    exact = 0.5 * sigma**2 * H_DIAG.sum()
    assert abs(result.value - exact) < 4 * result.stderr
    # per-sample variance of 0.5 sigma^2 (z1^2 + 4 z2^2) is sigma^4 (2 + 32) / 4
    expected_stderr = sigma**2 * np.sqrt(34 / 4) / np.sqrt(400)
    assert result.stderr == pytest.approx(expected_stderr, rel=0.25)
    assert result.samples.shape == (400,)
    adaptive = sharpness.average(problem, sigma, samples=400, adaptive=True, seed=1)
    assert abs(adaptive.value - 0.5 * sigma**2 * 17.0) < 4 * adaptive.stderr


@pytest.mark.parametrize("point", [(1.0, 1.0), (2.0, 0.5), (10.0, 0.1)])
def test_adaptive_curvature_is_scale_invariant(point):
    spec = sharpness.adaptive_curvature(scalar_problem(*point), k=1, tol=1e-10)
    assert spec.values[0] == pytest.approx(2.0, rel=1e-9)
    small = sharpness.adaptive(scalar_problem(*point), rho=1e-4, iters=30)
    assert small.value == pytest.approx(0.5 * 1e-8 * 2.0, rel=1e-3)


def test_plain_sharpness_is_not_scale_invariant():
    values = [sharpness.worst_case(scalar_problem(a, b), 1e-4, iters=30).value for a, b in ((1, 1), (10, 0.1))]
    assert values[1] > 10 * values[0]


def test_result_round_trip_and_csv():
    result = sharpness.average(quadratic_problem(), 0.05, samples=10)
    back = Sharpness.from_bytes(result.to_bytes())
    assert back.value == result.value and back.stderr == result.stderr
    np.testing.assert_array_equal(back.samples, result.samples)
    worst = sharpness.worst_case(quadratic_problem(), 0.1)
    assert Sharpness.from_bytes(worst.to_bytes()).stderr is None
    assert "stderr" in result.to_csv() and "stderr" not in worst.to_csv()


def test_bad_input():
    problem = quadratic_problem()
    with pytest.raises(ValueError, match="eps"):
        sharpness.epsilon(problem, eps=-1.0)
    with pytest.raises(ValueError, match="rho"):
        sharpness.worst_case(problem, 0.0)
    with pytest.raises(ValueError, match="p must"):
        sharpness.worst_case(problem, 0.1, p=0.5)
    with pytest.raises(ValueError, match="samples"):
        sharpness.average(problem, 0.1, samples=1)
    with pytest.raises(ValueError, match="subspace_dim"):
        sharpness.epsilon(problem, subspace_dim=5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    train_mode = Problem(model, F.cross_entropy, (torch.randn(10, 3), torch.randint(0, 2, (10,))), mode="train")
    with pytest.raises(ValueError, match="dropout"):
        sharpness.epsilon(train_mode)
