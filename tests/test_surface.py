"""Lines and planes against closed forms; centre cell; save/load; resume after cancel; bad input."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Cancelled, Problem, Surface, cache, directions, surface


class Point(nn.Module):
    """A model that is only its parameter vector: output row = x for every sample."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(x0.clone())

    def forward(self, X):
        return self.x.expand(X.shape[0], -1)


def half_squared_distance(out, target):
    """0.5 ||x - x*||^2 (the same for every sample, so the mean is exact)."""
    return 0.5 * ((out - target) ** 2).sum(dim=1).mean()


def quadratic_problem():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, generator=gen, dtype=torch.float64)
    x_star = torch.randn(6, generator=gen, dtype=torch.float64)
    X = torch.zeros(4, 1, dtype=torch.float64)
    return Problem(Point(x0), half_squared_distance, (X, x_star.expand(4, -1).clone())), x0, x_star


def test_line_of_a_quadratic_is_an_exact_parabola():
    problem, x0, x_star = quadratic_problem()
    d = torch.randn(6, dtype=torch.float64)
    result = surface.line(problem, d, span=(-2.0, 3.0), steps=26, use_cache=False)
    alphas = result.alphas
    np.testing.assert_array_equal(alphas, np.linspace(-2.0, 3.0, 26))
    r = (x0 - x_star).numpy()
    dn = d.numpy()
    want = 0.5 * r @ r + alphas * (dn @ r) + 0.5 * alphas**2 * (dn @ dn)
    np.testing.assert_allclose(result.values["train_loss"], want, rtol=1e-13, atol=1e-13)
    assert set(result.values) == {"train_loss"}


def linear_regression_problem(seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 1, generator=gen, dtype=torch.float64)
    y = 2.0 * x - 0.5 + 0.3 * torch.randn(50, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(1, 1).double()
    with torch.no_grad():
        model.weight.fill_(1.5)
        model.bias.fill_(0.25)
    return Problem(model, F.mse_loss, (x, y)), x[:, 0].numpy(), y[:, 0].numpy()


def test_linear_regression_plane_over_slope_and_intercept():
    problem, x, y = linear_regression_problem()
    d_slope = directions.axis(problem, "weight", (0, 0))
    d_intercept = directions.axis(problem, "bias", 0)
    result = surface.plane(
        problem, d_slope, d_intercept, span=(-1.0, 2.0), steps=13, span_y=(-0.5, 0.5), steps_y=9, use_cache=False
    )
    assert result.values["train_loss"].shape == (13, 9)
    w = 1.5 + result.alphas[:, None]
    b = 0.25 + result.betas[None, :]
    # mean((w x + b - y)^2) expanded in the sample moments
    want = (
        w**2 * np.mean(x * x)
        + 2 * w * b * np.mean(x)
        + b**2
        - 2 * w * np.mean(x * y)
        - 2 * b * np.mean(y)
        + np.mean(y * y)
    )
    np.testing.assert_allclose(result.values["train_loss"], want, rtol=1e-12, atol=1e-12)
    # [i, j] is at alphas[i], betas[j] (no shifted rows)
    assert result.values["train_loss"][3, 7] == pytest.approx(np.mean((w[3, 0] * x + b[0, 7] - y) ** 2), rel=1e-12)
    settings = result.settings
    assert settings["directions"][0]["kind"] == "axis" and settings["directions"][1]["name"] == "bias"
    assert settings["steps"] == 13 and settings["steps_y"] == 9 and settings["span_y"] == [-0.5, 0.5]


def mlp_problem(val=True, seed=0, batch_size=None):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 9), nn.ReLU(), nn.Linear(9, 9), nn.Tanh(), nn.Linear(9, 3))
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(70, 4, generator=gen)
    y = torch.randint(0, 3, (70,), generator=gen)
    Xv = torch.randn(30, 4, generator=gen)
    yv = torch.randint(0, 3, (30,), generator=gen)
    return Problem(model, F.cross_entropy, (X, y), val=(Xv, yv) if val else None, batch_size=batch_size)


@pytest.mark.parametrize(
    ("steps", "batch_size"), [(5, None), (11, None), (21, None), (41, None), (11, 16), (31, 35), (15, 9), (9, 3)]
)
def test_centre_cell_is_the_base_value_exactly(steps, batch_size):
    problem = mlp_problem(batch_size=batch_size)
    d1, d2 = directions.random(problem, seed=3)
    plane = surface.plane(problem, d1, d2, steps=steps, use_cache=False)
    line = surface.line(problem, d1, steps=steps, use_cache=False)
    c = steps // 2
    assert plane.alphas[c] == 0.0 and plane.betas[c] == 0.0
    for q, base in problem.base.items():
        assert plane.values[q][c, c] == base, q
        assert line.values[q][c] == base, q
    assert plane.center_value() == problem.base["train_loss"]


class Residual(nn.Module):
    """Not a Sequential: evaluated by the per-point loop."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        return self.b(x + torch.tanh(self.a(x)))


@pytest.mark.parametrize("strategy", [None, "loop", "vmap"])
def test_centre_cell_is_exact_for_every_strategy(strategy):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(50, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    problem = Problem(Residual(), F.cross_entropy, (X, y), val=(X[:21], y[:21]), batch_size=16)
    problem.strategy = strategy
    problem = problem.at(problem.theta0)  # base value recomputed with this strategy
    d1, d2 = directions.random(problem, seed=2)
    plane = surface.plane(problem, d1, d2, steps=15, use_cache=False)
    line = surface.line(problem, d2, steps=9, use_cache=False)
    for q, base in problem.base.items():
        assert plane.values[q][7, 7] == base, q
        assert line.values[q][4] == base, q


def test_plane_matches_pointwise_evaluation():
    problem = mlp_problem()
    d1, d2 = directions.random(problem, seed=4)
    plane = surface.plane(problem, d1, d2, span=(-0.5, 1.0), steps=6, span_y=(-1.0, 0.3), steps_y=5, use_cache=False)
    for i, a in enumerate(plane.alphas):
        for j, b in enumerate(plane.betas):
            theta = problem.theta0 + float(a) * d1 + float(b) * d2
            for q, v in problem.evaluate(theta).items():
                assert plane.values[q][i, j] == pytest.approx(v[0], rel=2e-5, abs=1e-6), (q, i, j)


def test_same_seed_same_surface_other_seed_different():
    problem = mlp_problem()
    a = surface.plane(problem, *directions.random(problem, seed=5), steps=5, use_cache=False)
    b = surface.plane(problem, *directions.random(problem, seed=5), steps=5, use_cache=False)
    c = surface.plane(problem, *directions.random(problem, seed=6), steps=5, use_cache=False)
    assert np.array_equal(a.values["train_loss"], b.values["train_loss"])
    assert not np.allclose(a.values["train_loss"], c.values["train_loss"])
    assert a.settings["directions"][0]["seed"] == 5


def test_non_finite_values_stay_nan_and_are_counted():
    problem, _, _ = quadratic_problem()
    d = torch.zeros(6, dtype=torch.float64)
    d[0] = 1e200
    result = surface.line(problem, d, span=(-1.0, 1.0), steps=5, use_cache=False)
    v = result.values["train_loss"]
    assert np.isinf(v[[0, 1, 3, 4]]).all() and np.isfinite(v[2])
    assert result.nonfinite == {"train_loss": 4}


def test_save_load_round_trip_and_csv(tmp_path):
    problem = mlp_problem()
    d1, d2 = directions.random(problem, seed=7)
    plane = surface.plane(problem, d1, d2, steps=5, span_y=(-2, 2), steps_y=3, use_cache=False)
    path = plane.save(tmp_path / "plane.npz")
    back = Surface.load(path)
    np.testing.assert_array_equal(back.alphas, plane.alphas)
    np.testing.assert_array_equal(back.betas, plane.betas)
    assert back.values.keys() == plane.values.keys()
    for q in plane.values:
        np.testing.assert_array_equal(back.values[q], plane.values[q])
    assert back.settings == plane.settings
    with np.load(path, allow_pickle=False) as npz:  # plain npz, no pickles
        assert "__json__" in npz.files
    csv = plane.to_csv().strip().splitlines()
    assert csv[0] == "alpha,beta,quantity,value"
    assert len(csv) == 1 + 5 * 3 * len(plane.values)
    line = surface.line(problem, d1, steps=7, use_cache=False)
    assert len(line.to_csv().strip().splitlines()) == 1 + 7 * 4
    assert Surface.load(line.save(tmp_path / "line.npz")).betas is None


def test_resume_after_cancel_gives_the_uninterrupted_plane(fresh_cache):
    problem = mlp_problem()
    d1, d2 = directions.random(problem, seed=8)
    kwargs = {"span": (-1.0, 1.0), "steps": 9, "rows_per_chunk": 2}
    cancel = threading.Event()
    first_chunk = 2 * 9

    def progress(done, total):
        if done >= first_chunk:
            cancel.set()

    with pytest.raises(Cancelled, match="kept 18 of 81 points; Run resumes from there"):
        surface.plane(problem, d1, d2, progress=progress, cancel=cancel, **kwargs)
    store = cache.get_cache()
    keys = list(store.iterkeys())
    tile_keys = [k for k in keys if ":tile:" in k]
    assert tile_keys and all(k.endswith(":tile:18r9x1:0") for k in tile_keys)  # 2 rows of 9 per tile
    assert not [k for k in keys if ":tile:" not in k and ":claim:" not in k]  # no final entry
    calls = []
    resumed = surface.plane(problem, d1, d2, progress=lambda d, t: calls.append(d), **kwargs)
    assert calls[:2] == [0, first_chunk]  # the first tile came from the cache
    fresh = surface.plane(problem, d1, d2, use_cache=False, **kwargs)
    for q in fresh.values:
        np.testing.assert_array_equal(resumed.values[q], fresh.values[q])
    keys = list(store.iterkeys())
    assert len(keys) == 1  # tiles and claims removed once the whole plane is stored


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"steps": 1}, "steps must be an integer from 2 to 401; got 1"),
        ({"steps": 402}, "steps must be an integer from 2 to 401; got 402"),
        ({"steps": 5.0}, "steps must be an integer from 2 to 401; got 5.0"),
        ({"span": (0.5, 0.5)}, r"span must satisfy low < high with finite ends; got \(0.5, 0.5\)"),
        ({"span": (1.0, -1.0)}, r"span must satisfy low < high with finite ends; got \(1.0, -1.0\)"),
        ({"span": (0.0, float("inf"))}, "span must satisfy low < high with finite ends"),
        ({"span": 3}, r"span must be a pair \(low, high\) of numbers; got 3"),
    ],
)
def test_bad_line_arguments(kwargs, pattern):
    problem, _, _ = quadratic_problem()
    with pytest.raises(ValueError, match=pattern):
        surface.line(problem, torch.ones(6, dtype=torch.float64), **kwargs)


def test_bad_plane_arguments():
    problem, _, _ = quadratic_problem()
    d = torch.ones(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="steps_y must be an integer from 2 to 401; got 0"):
        surface.plane(problem, d, d, steps_y=0)
    with pytest.raises(ValueError, match=r"span_y must satisfy low < high.*got \(0.0, 0.0\)"):
        surface.plane(problem, d, d, span_y=(0, 0))


def test_bad_directions():
    problem, _, _ = quadratic_problem()
    good = torch.ones(6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"direction has shape \(5,\); this model's parameter space needs \(6,\)"):
        surface.line(problem, torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"d2 has shape \(2, 6\); this model's parameter space needs \(6,\)"):
        surface.plane(problem, good, torch.ones(2, 6, dtype=torch.float64))
    nan = good.clone()
    nan[2] = float("nan")
    with pytest.raises(ValueError, match="d1 has 1 NaN or inf entries; every entry must be finite"):
        surface.plane(problem, nan, good)
    with pytest.raises(ValueError, match="direction is all zeros; it needs at least one non-zero entry"):
        surface.line(problem, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"center has shape \(3,\)"):
        surface.line(problem, good, center=torch.zeros(3, dtype=torch.float64))


def test_rows_of_one_tensor_are_used_without_a_copy():
    from landscape_core.surface import _rows

    both = torch.randn(2, 7)
    d1, d2 = both
    view = _rows([d1, d2])
    assert torch.equal(view, both) and view.data_ptr() == both.data_ptr()
    swapped = _rows([d2, d1])  # not in storage order: stacked
    assert torch.equal(swapped, both.flip(0)) and swapped.data_ptr() != both.data_ptr()
    apart = _rows([d1, torch.randn(7)])
    assert torch.equal(apart[0], d1) and apart.data_ptr() != both.data_ptr()
    strided = torch.randn(7, 2)
    cols = _rows([strided[:, 0], strided[:, 1]])
    assert torch.equal(cols, strided.t())
