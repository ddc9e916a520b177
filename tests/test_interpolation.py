"""Linear interpolation, barriers, BatchNorm along a path, the plane through three checkpoints."""

import threading

import numpy as np
import pytest
import torch
from torch import nn

from landscape_core import Cancelled, Problem, batchnorm, checkpoint_plane, directions, interpolation
from landscape_core.evaluate import evaluate_points

SWAP = [[0.0, 1.0], [1.0, 0.0]]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def half_mse(output, target):
    return 0.5 * ((output - target) ** 2).mean()


def two_unit_net(W, v) -> nn.Sequential:
    """f(x) = v^T W x: a linear net with two hidden units and no biases, float64."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(W, dtype=torch.float64))
        net[1].weight.copy_(torch.tensor([v], dtype=torch.float64))
    return net


def permuted(W, v):
    """The same function with the two hidden units swapped: W -> P W, v -> v P."""
    P = np.array(SWAP)
    return (P @ np.array(W)).tolist(), (np.array(v) @ P).tolist()


@pytest.fixture(scope="module")
def linear_task():
    X = torch.eye(2, dtype=torch.float64)  # x in {e1, e2}
    y = (X[:, 0] - X[:, 1])[:, None]  # y = x1 - x2
    W, v = [[1.0, 0.0], [0.0, 1.0]], [1.0, -1.0]
    problem = Problem(two_unit_net(W, v), half_mse, (X, y))
    return problem, X, y, W, v


def theta_of(problem, W, v):
    return problem.space.flatten({"0.weight": torch.tensor(W), "1.weight": torch.tensor([v])}).double()


def exact_path_loss(W_a, v_a, W_b, v_b, alphas):
    """float64 loss 0.5 mean((v(alpha)^T W(alpha) x - y)^2) over x in {e1, e2}, by hand."""
    W_a, v_a, W_b, v_b = map(np.array, (W_a, v_a, W_b, v_b))
    X = np.eye(2)
    y = X[:, 0] - X[:, 1]
    out = []
    for a in alphas:
        W, v = (1 - a) * W_a + a * W_b, (1 - a) * v_a + a * v_b
        f = X @ W.T @ v
        out.append(0.5 * np.mean((f - y) ** 2))
    return np.array(out)


def test_permuted_two_unit_net_has_barrier_exactly_one_half(linear_task):
    problem, _, _, W, v = linear_task
    W_p, v_p = permuted(W, v)
    path = interpolation.linear(problem, theta_of(problem, W, v), theta_of(problem, W_p, v_p), steps=9, use_cache=False)
    # By hand: W(a) x1 = (1-a, a), v(a) = (1-2a)(1, -1) => f(e1) = (1-2a)^2 = -f(e2); L(a) = 0.5 ((1-2a)^2 - 1)^2.
    closed_form = 0.5 * ((1 - 2 * path.alphas) ** 2 - 1) ** 2
    np.testing.assert_allclose(path.values["train_loss"], closed_form, rtol=0, atol=1e-15)
    b = path.barrier["train_loss"]
    assert b["height"] == 0.5 and b["alpha"] == 0.5
    assert b["loss_a"] == 0.0 and b["loss_b"] == 0.0


def test_barrier_vanishes_after_undoing_the_permutation(linear_task):
    problem, _, _, W, v = linear_task
    # B: the same function as A but a different point (rows of W shifted by u with v^T u = 0), then permuted.
    W_b = (np.array(W) + 0.5).tolist()
    W_bp, v_bp = permuted(W_b, v)
    theta_a = theta_of(problem, W, v)
    permuted_path = interpolation.linear(problem, theta_a, theta_of(problem, W_bp, v_bp), steps=11, use_cache=False)
    expected = exact_path_loss(W, v, W_bp, v_bp, permuted_path.alphas)
    np.testing.assert_allclose(permuted_path.values["train_loss"], expected, rtol=1e-13, atol=1e-15)
    assert permuted_path.barrier["train_loss"]["height"] == pytest.approx(expected.max(), abs=1e-14)
    assert permuted_path.barrier["train_loss"]["height"] > 0.1
    # Undo the swap (apply it again: P is its own inverse): the path is flat at loss 0.
    W_u, v_u = permuted(W_bp, v_bp)
    aligned = interpolation.linear(problem, theta_a, theta_of(problem, W_u, v_u), steps=11, use_cache=False)
    np.testing.assert_allclose(aligned.values["train_loss"], 0.0, atol=1e-15)
    assert aligned.barrier["train_loss"]["height"] == pytest.approx(0.0, abs=1e-15)


def test_span_beyond_unit_interval_keeps_barrier_on_0_1(linear_task):
    problem, _, _, W, v = linear_task
    W_p, v_p = permuted(W, v)
    a, b = theta_of(problem, W, v), theta_of(problem, W_p, v_p)
    path = interpolation.linear(problem, a, b, steps=5, span=(-0.5, 1.5), use_cache=False)
    np.testing.assert_array_equal(path.alphas, [-0.5, 0.0, 0.5, 1.0, 1.5])
    assert path.values["train_loss"][0] == pytest.approx(4.5)  # outside [0, 1]: larger, but not the barrier
    assert path.barrier["train_loss"]["height"] == 0.5
    # a grid that misses 0 and 1 gets them added
    odd = interpolation.linear(problem, a, b, steps=6, span=(-0.5, 1.5), use_cache=False)
    assert 0.0 in odd.alphas and 1.0 in odd.alphas and len(odd.alphas) == 8
    np.testing.assert_allclose(odd.linear_reference(), 0.0)


def mlp_problem(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 5, generator=gen, dtype=dtype)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    return Problem(model, nn.functional.cross_entropy, (X, y), val=(X[:20], y[:20]))


def test_endpoints_reproduce_endpoint_values_exactly_float32():
    problem = mlp_problem()
    theta_b = problem.theta0 + 0.3 * torch.randn(problem.space.size, generator=torch.Generator().manual_seed(1))
    path = interpolation.linear(problem, problem.theta0, theta_b, steps=7, use_cache=False)
    for theta, index in ((problem.theta0, 0), (theta_b, -1)):
        direct = evaluate_points(problem, theta, None, None)
        for q in direct:
            assert path.values[q][index] == direct[q][0], q
            assert path.endpoint_values[q][0 if index == 0 else 1] == direct[q][0]
    assert set(path.barrier) == {"train_loss", "val_loss", "train_error", "val_error"}
    assert path.settings["bn"].startswith("none")


def test_error_barrier_is_frankle_2020s_and_the_loss_barrier_entezari_2022s():
    alphas = np.array([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
    accuracy = np.array([0.1, 0.9, 0.7, 0.4, 0.8, 0.8])  # outside [0, 1] ignored
    # errors on [0, 1]: 0.1, 0.3, 0.6, 0.2, 0.2; max 0.6 at 0.5, minus the mean end error (0.1 + 0.2) / 2
    got = interpolation.error_barrier(alphas, accuracy)
    assert got["height"] == pytest.approx(0.45, abs=1e-15) and got["alpha"] == 0.5
    assert got["error_a"] == pytest.approx(0.1) and got["error_b"] == pytest.approx(0.2)
    diverged = accuracy.copy()
    diverged[3] = np.nan
    assert interpolation.error_barrier(alphas, diverged)["height"] is None
    # the loss barrier subtracts the chord (1 - alpha) L(0) + alpha L(1), the error barrier the mean end error
    loss = 1.0 - accuracy
    assert interpolation.barrier(alphas, loss)["height"] == pytest.approx(0.6 - 0.15, abs=1e-15)
    skewed = np.array([0.0, 0.0, 0.5, 0.3, 0.9, 1.0])  # ends 0 and 1: the chord's excess peaks at 0.25
    assert interpolation.barrier(alphas, skewed) == {"height": 0.25, "alpha": 0.25, "loss_a": 0.0, "loss_b": 1.0}
    # as errors: the highest is B's own 1.0, minus the mean end error 0.5
    assert interpolation.error_barrier(alphas, 1.0 - skewed)["height"] == pytest.approx(0.5, abs=1e-15)

    problem = mlp_problem()
    theta_b = problem.theta0 + 2.0 * torch.randn(problem.space.size, generator=torch.Generator().manual_seed(3))
    path = interpolation.linear(problem, problem.theta0, theta_b, steps=9, use_cache=False)
    for split in ("train", "val"):
        want = interpolation.error_barrier(path.alphas, path.values[f"{split}_accuracy"])
        assert path.barrier[f"{split}_error"] == want
    assert path.settings["barrier_definitions"]["loss"].startswith("Entezari et al. 2022")
    assert path.settings["barrier_definitions"]["error"].startswith("Frankle et al. 2020")


def test_path_caches_saves_and_exports(tmp_path):
    problem = mlp_problem()
    theta_b = problem.theta0 * 0.5
    first = interpolation.linear(problem, problem.theta0, theta_b, steps=5)
    calls = []
    again = interpolation.linear(problem, problem.theta0, theta_b, steps=5, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(5, 5)]  # served from the cache
    np.testing.assert_array_equal(first.values["train_loss"], again.values["train_loss"])
    loaded = interpolation.Path.load(first.save(tmp_path / "path.npz"))
    assert loaded.barrier == first.barrier and loaded.settings == first.settings
    np.testing.assert_array_equal(loaded.endpoint_values["val_loss"], first.endpoint_values["val_loss"])
    csv = first.to_csv().splitlines()
    assert csv[0] == "alpha,quantity,value" and len(csv) == 1 + 5 * len(first.values)


def test_cancel_raises():
    problem = mlp_problem()
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        interpolation.linear(problem, problem.theta0, problem.theta0 * 2, steps=5, cancel=event, use_cache=False)


def test_bad_inputs(linear_task):
    problem, _, _, W, v = linear_task
    a = theta_of(problem, W, v)
    with pytest.raises(ValueError, match="zero length"):
        interpolation.linear(problem, a, a.clone())
    bad = a.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="theta_b has 1 NaN"):
        interpolation.linear(problem, a, bad)
    with pytest.raises(ValueError, match="'sideways'"):
        interpolation.linear(problem, a, a + 1, bn="sideways")
    with pytest.raises(ValueError, match="steps"):
        interpolation.linear(problem, a, a + 1, steps=1)
    with pytest.raises(ValueError, match="span"):
        interpolation.linear(problem, a, a + 1, span=(1.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        interpolation.linear(problem, a, torch.zeros(3, dtype=torch.float64))


# -- BatchNorm -----------------------------------------------------------------------------------
def bn_net(seed, scale=1.0, shift=0.0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1)).double()
    with torch.no_grad():
        net[0].weight.mul_(scale)
        net[0].bias.add_(shift)
    return net


@pytest.fixture(scope="module")
def bn_task():
    gen = torch.Generator().manual_seed(0)
    X = 2.0 + 3.0 * torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = X[:, :1] - 0.5 * X[:, 1:2] + 0.1 * torch.randn(40, 1, generator=gen, dtype=torch.float64)
    problem = Problem(bn_net(0), half_mse, (X, y), batch_size=16)  # 16 + 16 + 8: unequal last batch
    other = Problem(bn_net(1, scale=4.0, shift=5.0), half_mse, (X, y), batch_size=16)
    theta_a, theta_b = problem.theta0, other.theta0
    buffers_a = batchnorm.recompute(problem, theta_a)
    buffers_b = batchnorm.recompute(problem, theta_b)
    return problem, X, theta_a, theta_b, buffers_a, buffers_b


def test_recompute_gives_exact_statistics_of_the_train_split(bn_task):
    problem, X, theta_a, _, buffers_a, _ = bn_task
    params = problem.space.unflatten(theta_a)
    z = X @ params["0.weight"].T + params["0.bias"]  # input of the BatchNorm layer, (n, 6)
    # sample-weighted mean of batch means = exact mean over the split
    np.testing.assert_allclose(buffers_a["1.running_mean"].numpy(), z.mean(0).numpy(), rtol=1e-12)
    # variance: sample-weighted mean of unbiased batch variances (batches of 16, 16, 8)
    var = sum(len(b) * b.var(0, unbiased=True) for b in z.split(16)) / len(z)
    np.testing.assert_allclose(buffers_a["1.running_var"].numpy(), var.numpy(), rtol=1e-12)
    # one batch covering the split: exactly its unbiased variance
    whole = Problem(bn_net(0), half_mse, (X, X[:, :1]))
    stats = batchnorm.recompute(whole, theta_a)
    np.testing.assert_allclose(stats["1.running_var"].numpy(), z.var(0, unbiased=True).numpy(), rtol=1e-12)


def test_recompute_joins_a_last_batch_of_one_sample(bn_task):
    problem, X, theta_a, *_ = bn_task
    odd = Problem(bn_net(0), half_mse, (X[:33], X[:33, :1]), batch_size=16)  # 16 + 16 + 1 -> 16 + 17
    assert batchnorm.batch_bounds(33, 16) == [(0, 16), (16, 33)]
    stats = batchnorm.recompute(odd, theta_a)
    params = problem.space.unflatten(theta_a)
    z = X[:33] @ params["0.weight"].T + params["0.bias"]
    np.testing.assert_allclose(stats["1.running_mean"].numpy(), z.mean(0).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="at least 2 train samples"):
        batchnorm.batch_bounds(1, 16)


def test_recompute_path_reproduces_endpoint_losses(bn_task):
    problem, _, theta_a, theta_b, buffers_a, buffers_b = bn_task
    before = {k: v.clone() for k, v in problem.model.state_dict().items()}
    path = interpolation.linear(
        problem, theta_a, theta_b, steps=5, bn="recompute", buffers_a=buffers_a, buffers_b=buffers_b, use_cache=False
    )
    # endpoint loss := loss in eval mode with the statistics recomputed at that endpoint over the train split
    loss_a = evaluate_points(problem, theta_a, None, None, buffers=buffers_a)["train_loss"][0]
    loss_b = evaluate_points(problem, theta_b, None, None, buffers=buffers_b)["train_loss"][0]
    assert path.values["train_loss"][0] == loss_a and path.values["train_loss"][-1] == loss_b
    np.testing.assert_array_equal(path.endpoint_values["train_loss"], [loss_a, loss_b])
    for k, v in problem.model.state_dict().items():  # the problem's model is never changed
        assert torch.equal(v, before[k]), k
    # mid-path: keep (A's statistics everywhere) is a different, wrong picture
    keep = interpolation.linear(problem, theta_a, theta_b, steps=5, bn="keep", buffers_a=buffers_a, use_cache=False)
    assert keep.values["train_loss"][0] == loss_a
    mid = 2
    assert path.alphas[mid] == 0.5
    assert abs(keep.values["train_loss"][mid] - path.values["train_loss"][mid]) > 0.05 * path.values["train_loss"][mid]
    mid_stats = batchnorm.recompute(problem, 0.5 * (theta_a + theta_b))
    mid_loss = evaluate_points(problem, 0.5 * (theta_a + theta_b), None, None, buffers=mid_stats)["train_loss"][0]
    assert path.values["train_loss"][mid] == pytest.approx(mid_loss, rel=1e-12)


def test_stale_stored_statistics_are_reported_beside_recomputed_ones(bn_task):
    problem, _, theta_a, theta_b, buffers_a, _ = bn_task
    stale = {k: v.clone() for k, v in problem.buffers.items()}  # the untrained model's 0/1 statistics
    stale["1.running_mean"].zero_()
    stale["1.running_var"].fill_(1.0)
    path = interpolation.linear(problem, theta_a, theta_b, steps=3, buffers_a=stale, buffers_b=stale, use_cache=False)
    loss_a = evaluate_points(problem, theta_a, None, None, buffers=buffers_a)["train_loss"][0]
    assert path.values["train_loss"][0] == loss_a
    stale_a = evaluate_points(problem, theta_a, None, None, buffers=stale)["train_loss"][0]
    assert path.endpoint_values["train_loss"][0] == stale_a != loss_a


def test_interpolated_buffers_hit_both_ends(bn_task):
    problem, _, theta_a, theta_b, buffers_a, buffers_b = bn_task
    path = interpolation.linear(
        problem, theta_a, theta_b, steps=3, bn="interpolate", buffers_a=buffers_a, buffers_b=buffers_b, use_cache=False
    )
    np.testing.assert_array_equal(path.values["train_loss"][[0, -1]], path.endpoint_values["train_loss"])
    mid = batchnorm.interpolate_buffers(buffers_a, buffers_b, 0.5)
    torch.testing.assert_close(mid["1.running_mean"], 0.5 * (buffers_a["1.running_mean"] + buffers_b["1.running_mean"]))
    expected = evaluate_points(problem, 0.5 * (theta_a + theta_b), None, None, buffers=mid)["train_loss"][0]
    assert path.values["train_loss"][1] == pytest.approx(expected, rel=1e-12)


# -- plane through three checkpoints -----------------------------------------------------------
def test_plane_through_three_checkpoints():
    problem = mlp_problem(dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    a = problem.theta0
    b = a + 0.2 * torch.randn(problem.space.size, generator=gen, dtype=torch.float64)
    c = a + 0.2 * torch.randn(problem.space.size, generator=gen, dtype=torch.float64)
    axes = directions.through(a, b, c)
    torch.testing.assert_close(axes @ axes.T, torch.eye(2, dtype=torch.float64))
    assert directions.provenance(axes[0])["kind"] == "through"
    surf, points = checkpoint_plane.plane_through(problem, a, b, c, steps=5, use_cache=False)
    xa, xb, xc = (np.array(points[k]) for k in "ABC")
    np.testing.assert_allclose(xa, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(xb, [float((b - a).norm()), 0.0], atol=1e-12)
    assert np.linalg.norm(xc) == pytest.approx(float((c - a).norm()), rel=1e-12)  # C lies in the plane
    assert np.linalg.norm(xc - xb) == pytest.approx(float((c - b).norm()), rel=1e-12)
    assert surf.settings["points"]["C"] == list(points["C"])
    assert (surf.alphas[-1] - surf.alphas[0]) == pytest.approx(surf.betas[-1] - surf.betas[0])  # equal scale
    i, j = 1, 3
    theta = a + surf.alphas[i] * axes[0] + surf.betas[j] * axes[1]
    assert surf.values["train_loss"][i, j] == pytest.approx(problem.evaluate(theta)["train_loss"][0], rel=1e-10)
    with pytest.raises(ValueError, match="collinear"):
        directions.through(a, b, a + 2 * (b - a))
    with pytest.raises(ValueError, match="identical"):
        directions.through(a, a.clone(), c)
