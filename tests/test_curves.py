"""Quadratic Bezier curves between checkpoints (Garipov et al. 2018)."""

import numpy as np
import pytest
import torch
from test_interpolation import half_mse, permuted, theta_of, two_unit_net
from torch import nn

from landscape_core import Problem, batchnorm, curves
from landscape_core.evaluate import evaluate_points

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def swap_task():
    X = torch.eye(2, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1])[:, None]
    W, v = [[1.0, 0.0], [0.0, 1.0]], [1.0, -1.0]
    problem = Problem(two_unit_net(W, v), half_mse, (X, y))
    return problem, theta_of(problem, W, v), theta_of(problem, *permuted(W, v))


def test_bezier_point_closed_form():
    a, bend, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0]), torch.tensor([3.0, 2.0])
    assert torch.equal(curves.bezier_point(a, bend, b, 0.0), a)
    assert torch.equal(curves.bezier_point(a, bend, b, 1.0), b)
    torch.testing.assert_close(curves.bezier_point(a, bend, b, 0.5), (a + 2 * bend + b) / 4)


def test_untrained_curve_is_the_line(swap_task):
    problem, a, b = swap_task
    curve = curves.bezier(problem, a, b, steps=9, iterations=0, use_cache=False)
    torch.testing.assert_close(curve.bend, (a + b) / 2)
    closed_form = 0.5 * ((1 - 2 * curve.ts) ** 2 - 1) ** 2  # the straight-line loss of the swapped net
    np.testing.assert_allclose(curve.values["train_loss"], closed_form, atol=1e-15)
    np.testing.assert_allclose(curve.line_values["train_loss"], closed_form, atol=1e-15)
    assert curve.barrier["train_loss"]["height"] == 0.5 == curve.line_barrier["train_loss"]["height"]


def tanh_net(seed, X, y, steps=300):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(net(X), y).backward()
        optimizer.step()
    return net


def test_trained_curve_lowers_the_barrier_between_two_seeds(tmp_path):
    X = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    y = torch.sin(2 * X)
    problem = Problem(tanh_net(0, X, y), nn.functional.mse_loss, (X, y))
    theta_b = Problem(tanh_net(1, X, y), nn.functional.mse_loss, (X, y)).theta0
    curve = curves.bezier(problem, problem.theta0, theta_b, steps=11, iterations=300, lr=0.05, batch_size=None)
    line_height = curve.line_barrier["train_loss"]["height"]
    assert line_height > 0.1
    assert curve.barrier["train_loss"]["height"] < 0.25 * line_height
    for theta, index in ((problem.theta0, 0), (theta_b, -1)):  # endpoints exactly the two models
        assert curve.values["train_loss"][index] == evaluate_points(problem, theta, None, None)["train_loss"][0]
    t = 0.3
    inside = curves.bezier_point(problem.theta0, curve.bend, theta_b, t)
    i = int(np.flatnonzero(np.isclose(curve.ts, t))[0])
    assert curve.values["train_loss"][i] == pytest.approx(problem.evaluate(inside)["train_loss"][0], rel=1e-10)
    assert curve.training_loss.shape == (300,) and np.isfinite(curve.training_loss).all()
    loaded = curves.Curve.load(curve.save(tmp_path / "curve.npz"))
    torch.testing.assert_close(loaded.bend, curve.bend)
    assert loaded.barrier == curve.barrier
    assert curve.to_csv().count("\n") == 1 + 2 * 11


def test_batchnorm_curve_uses_recomputed_statistics():
    gen = torch.Generator().manual_seed(0)
    X = 1.0 + 2.0 * torch.randn(32, 3, generator=gen, dtype=torch.float64)
    y = X[:, :1]
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 1)).double())
    problem = Problem(nets[0], half_mse, (X, y))
    theta_b = Problem(nets[1], half_mse, (X, y)).theta0
    curve = curves.bezier(problem, problem.theta0, theta_b, steps=5, iterations=20, use_cache=False)
    stats_b = batchnorm.recompute(problem, theta_b)
    expected = evaluate_points(problem, theta_b, None, None, buffers=stats_b)["train_loss"][0]
    assert curve.values["train_loss"][-1] == expected


def test_bad_inputs(swap_task):
    problem, a, b = swap_task
    with pytest.raises(ValueError, match="zero length"):
        curves.bezier(problem, a, a.clone())
    with pytest.raises(ValueError, match="iterations"):
        curves.bezier(problem, a, b, iterations=-1)
    with pytest.raises(ValueError, match="lr"):
        curves.bezier(problem, a, b, lr=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        curves.bezier(problem, a, b, batch_size=0)
