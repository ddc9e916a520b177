"""Keskar epsilon-sharpness, worst-case/adaptive and average sharpness against closed forms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from curvature_models import quadratic_problem, scalar_problem
from torch import nn

from landscape_core import Problem, perturbation, sharpness
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


# -- local maxima: several starts, a stated lower bound -------------------------------------------
class DenseQuadratic(nn.Module):
    """``0.5 (x - x*)^T H (x - x*)`` with a dense positive semi-definite ``H``; ignores its input."""

    def __init__(self, H, x_star):
        super().__init__()
        self.register_buffer("H", H)
        self.register_buffer("x_star", x_star.clone())
        self.x = nn.Parameter(x_star.clone())

    def forward(self, inputs):
        d = self.x - self.x_star
        return (0.5 * d @ self.H @ d).reshape(1)


def dense_quadratic(seed: int, n: int = 8):
    """The problem at its minimum, and the true maxima of the quadratic over the box of half-widths ``b``."""
    import itertools

    from curvature_models import DUMMY, mean_output

    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    H = A @ A.T / n
    x_star = torch.randn(n, generator=gen, dtype=torch.float64)
    problem = Problem(DenseQuadratic(H, x_star), mean_output, DUMMY)
    vertices = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))

    def box_maximum(b: np.ndarray) -> float:  # a convex function's maximum over a box is at a vertex
        corners = vertices * b
        return float(0.5 * np.einsum("ij,jk,ik->i", corners, H.numpy(), corners).max())

    return problem, x_star.numpy(), box_maximum


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_more_starts_never_lose_and_reach_the_true_box_maximum_for_p_inf(seed):
    problem, _, box_maximum = dense_quadratic(seed)
    rho = 0.1
    true_max = box_maximum(np.full(8, rho))
    values = [sharpness.worst_case(problem, rho, p=np.inf, starts=k, seed=0).value for k in (1, 3, 10, 20)]
    assert values[0] < 0.99 * true_max  # one start stops at a vertex that is only locally best
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(true_max, rel=1e-9)
    assert all(v <= true_max * (1 + 1e-12) for v in values)  # never above the truth: a lower bound


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_more_starts_never_lose_and_reach_keskar_epsilon_sharpness(seed):
    problem, x_star, box_maximum = dense_quadratic(seed)
    eps = 1e-2
    true_phi = 100 * box_maximum(eps * (np.abs(x_star) + 1))  # L(x*) = 0
    results = [sharpness.epsilon(problem, eps=eps, starts=k, seed=0) for k in (1, 3, 10, 20)]
    values = [r.value for r in results]
    assert values[0] < 0.99 * true_phi
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(true_phi, rel=1e-7)
    assert results[-1].settings["starts"] == 20 and len(results[-1].settings["start_losses"]) == 20
    assert results[-1].settings["estimate"].startswith("lower bound")


def test_worst_case_settings_say_lower_bound():
    result = sharpness.adaptive(quadratic_problem(), rho=0.1, starts=2)
    assert result.settings["estimate"].startswith("lower bound: the best of 2 local")
    assert sharpness.average(quadratic_problem(), sigma=0.1, samples=4).settings["estimate"].startswith("Monte Carlo")


def test_asam_convention_scales_weights_by_abs_plus_eta_and_leaves_biases_at_one():
    """Kwon et al. 2021: T_w = |w| + 0.01 on weight tensors, 1 on biases (their released optimizer)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (30,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    problem = Problem(model, F.cross_entropy, (X, y))
    theta = problem.theta0.double()
    t = perturbation.scale(problem, torch.arange(problem.space.size), True, 0.01, perturbation.Convention.ASAM)
    for p in problem.space.params:
        want = theta[p.slice].abs() + 0.01 if p.name.endswith("weight") else torch.ones(p.numel, dtype=torch.float64)
        assert torch.equal(t[p.slice], want), p.name
    # second order: the top eigenvalue of T H T from the exact Hessian
    buffers = dict(problem.model.named_buffers())

    def loss(flat):
        params = problem.space.unflatten(flat)
        return F.cross_entropy(torch.func.functional_call(problem.model.eval(), {**buffers, **params}, (X,)), y)

    H = torch.func.hessian(loss)(theta)
    want_top = float(torch.linalg.eigvalsh(t[:, None] * H * t[None, :])[-1])
    spectrum = sharpness.adaptive_curvature(problem, k=1, convention="asam", tol=1e-10)
    assert float(spectrum.values[0]) == pytest.approx(want_top, rel=1e-8)
    assert spectrum.settings["convention"] == "asam" and spectrum.settings["eta"] == 0.01
    worst = sharpness.adaptive(problem, rho=0.05, convention="asam")
    assert worst.settings["convention"] == "asam" and "Kwon et al. 2021" in worst.settings["definition"]
    elementwise = sharpness.adaptive(problem, rho=0.05)
    assert elementwise.settings["convention"] == "elementwise" and elementwise.value != worst.value
    with pytest.raises(ValueError, match=r"convention must be one of \['elementwise', 'asam'\]; got 'kwon'"):
        sharpness.adaptive(problem, rho=0.05, convention="kwon")


@pytest.mark.parametrize("kind, radius", [("epsilon", "eps"), ("adaptive", "rho"), ("average", "sigma")])
def test_a_radius_that_reaches_divergence_is_a_value_error_not_a_nan(kind, radius):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (20,), generator=gen)
    torch.manual_seed(0)
    problem = Problem(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).float(), F.cross_entropy, (X, y))
    kwargs = {radius: 1e30}
    if kind == "average":
        kwargs["samples"] = 4
    with pytest.raises(
        sharpness.DivergedPerturbation, match=rf"{radius}=1e\+30 reaches points where the model diverges"
    ):
        getattr(sharpness, kind)(problem, **kwargs)
    with pytest.raises(ValueError, match=r"starts must be a positive integer"):
        sharpness.epsilon(problem, starts=0)
