"""The first picture: refinement order, reuse of known cells, the final grid equal to a direct
computation, the preview's labels, and the cost model behind the pre-Run estimate."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions
from landscape_core import preview as pv
from landscape_core.estimate import CostModel, describe_seconds, measure_cost
from landscape_core.evaluate import evaluate_points
from landscape_core.surface import grid

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest and steadiest


def make_problem(kind="mlp", n=40, dtype=torch.float64, loss=F.cross_entropy):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if kind == "mlp":
        model, shape = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), (5,)
    else:  # a BatchNorm conv net: the folded strategy
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
        ).eval()
        model[1].running_mean.uniform_(-0.5, 0.5, generator=gen)
        model[1].running_var.uniform_(0.5, 2.0, generator=gen)
        shape = (2, 6, 6)
    X = torch.randn(n, *shape, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    Xv = torch.randn(n // 2, *shape, generator=gen, dtype=dtype)
    yv = torch.randint(0, 3, (n // 2,), generator=gen)
    return Problem(model.to(dtype), loss, (X, y), val=(Xv, yv), batch_size=16)


def test_axis_levels_are_the_halving_strides_through_the_centre():
    # 21 steps, centre index 10: strides 8, 4, 2, 1 (and both ends in the first picture)
    levels = pv.axis_levels(21)
    assert np.flatnonzero(levels == 0).tolist() == [0, 2, 10, 18, 20]
    assert np.flatnonzero(levels == 1).tolist() == [6, 14]
    assert np.flatnonzero(levels == 2).tolist() == [4, 8, 12, 16]
    assert np.flatnonzero(levels == 3).tolist() == list(range(1, 21, 2))
    assert pv.axis_levels(7).tolist() == [0, 0, 1, 0, 1, 0, 0]
    assert pv.axis_levels(2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        pv.axis_levels(0)


@pytest.mark.parametrize("steps", [2, 5, 7, 21, 51])
def test_refinement_covers_every_cell_once_coarse_to_fine(steps):
    levels = pv.refinement_levels(steps, steps)
    cells = np.concatenate(levels)
    assert sorted(cells.tolist()) == list(range(steps * steps))
    centre = (steps - 1) // 2
    assert centre * steps + centre in levels[0]  # the centre is in the first picture
    for corner in (0, steps - 1, steps * (steps - 1), steps * steps - 1):
        assert corner in levels[0]
    # each level is one halving finer: its cells' coarsest axis level is exactly its index
    ax = pv.axis_levels(steps)
    for index, level in enumerate(levels):
        i, j = np.divmod(level, steps)
        assert np.all(np.maximum(ax[i], ax[j]) == index)
    line = pv.refinement_levels(steps)
    assert sorted(np.concatenate(line).tolist()) == list(range(steps))


@pytest.mark.parametrize("kind", ["mlp", "conv_bn"])
def test_refined_plane_fills_in_coarse_to_fine_and_equals_a_direct_computation(kind):
    problem = make_problem(kind)
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=3)
    steps = 9
    pictures = []
    result = pv.refine_plane(problem, d1, d2, span=(-1, 1), steps=steps, on_level=pictures.append)
    levels = pv.refinement_levels(steps, steps)
    assert len(pictures) == len(levels)
    done = np.zeros(steps * steps, dtype=bool)
    for picture, level in zip(pictures, levels):
        done[level] = True
        assert np.array_equal(np.isfinite(picture.values["train_loss"]).ravel(), done)  # exactly these cells so far
    alphas = grid((-1, 1), steps)
    a, b = np.meshgrid(alphas, alphas, indexing="ij")
    direct = evaluate_points(problem, problem.theta0, torch.stack([d1, d2]), np.stack([a.ravel(), b.ravel()], 1))
    for q, v in direct.items():
        np.testing.assert_allclose(result.values[q].ravel(), v, rtol=1e-12, err_msg=q)
    assert result.values["train_loss"][steps // 2, steps // 2] == problem.base["train_loss"]


def test_known_cells_of_the_same_data_are_reused_not_recomputed(monkeypatch):
    problem = make_problem("mlp")
    d1, d2 = directions.random(problem, count=2, seed=4)
    steps = 7
    first = pv.refine_plane(problem, d1, d2, steps=steps)
    partial = pv.refine_plane(problem, d1, d2, steps=steps)
    level0 = pv.refinement_levels(steps, steps)[0]
    for q in partial.values:
        flat = partial.values[q].ravel()
        keep = np.zeros(flat.size, dtype=bool)
        keep[level0] = True
        flat[~keep] = np.nan
    counted = []
    real = pv.evaluate_points

    def counting(problem, center, basis, coeffs, *args, **kwargs):
        counted.append(len(coeffs))
        return real(problem, center, basis, coeffs, *args, **kwargs)

    monkeypatch.setattr(pv, "evaluate_points", counting)
    again = pv.refine_plane(problem, d1, d2, steps=steps, known=partial)
    assert sum(counted) == steps * steps - len(level0)
    assert again.settings["reused_cells"] == len(level0)
    for q in first.values:
        np.testing.assert_array_equal(again.values[q], first.values[q])
    other = make_problem("mlp", n=38)  # other data: nothing of it may be reused
    with pytest.raises(ValueError, match="computed on other data"):
        pv.refine_plane(other, d1, d2, steps=steps, known=partial)
    with pytest.raises(ValueError, match="other directions"):
        pv.refine_plane(problem, d2, d1, steps=steps, known=partial)


def test_cells_of_a_coarser_grid_are_reused_where_they_lie_on_the_finer_one(monkeypatch):
    problem = make_problem("mlp")
    d1, d2 = directions.random(problem, count=2, seed=6)
    coarse = pv.refine_plane(problem, d1, d2, steps=5)  # -1, -0.5, 0, 0.5, 1: every one on the 9-step grid
    counted = []
    real = pv.evaluate_points

    def counting(problem, center, basis, coeffs, *args, **kwargs):
        counted.append(np.asarray(coeffs).copy())
        return real(problem, center, basis, coeffs, *args, **kwargs)

    monkeypatch.setattr(pv, "evaluate_points", counting)
    fine = pv.refine_plane(problem, d1, d2, steps=9, known=coarse)
    assert fine.settings["reused_cells"] == 25
    computed = np.concatenate(counted)
    assert len(computed) == 81 - 25
    on_coarse = np.isin(np.round(computed * 2, 9) % 1, 0).all(axis=1)  # both coordinates multiples of 0.5
    assert not on_coarse.any()  # no cell of the coarse grid was computed again
    np.testing.assert_array_equal(fine.values["train_loss"][::2, ::2], coarse.values["train_loss"])
    sevens = pv.refine_plane(problem, d1, d2, steps=7, known=coarse)  # shares only -1, 0, 1 on each axis
    assert sevens.settings["reused_cells"] == 9


def test_refined_plane_is_cached_under_the_planes_own_key_and_equals_surface_plane(fresh_cache, monkeypatch):
    from landscape_core import surface

    problem = make_problem("conv_bn")
    d1, d2 = directions.random(problem, count=2, seed=7)
    direct = surface.plane(problem, d1, d2, span=(-0.5, 0.5), steps=9, use_cache=False)
    assert surface.cached_plane(problem, d1, d2, span=(-0.5, 0.5), steps=9) is None
    pictures = []
    refined = pv.refine_plane(problem, d1, d2, span=(-0.5, 0.5), steps=9, on_level=pictures.append, use_cache=True)
    assert [p.settings["level"] for p in pictures] == list(range(len(pv.refinement_levels(9, 9))))
    for q, v in direct.values.items():
        np.testing.assert_allclose(refined.values[q], v, rtol=1e-12, atol=0, err_msg=q)
    for field in ("direction_sha256", "center_sha256", "span", "steps", "span_y", "steps_y", "splits"):
        assert refined.settings[field] == direct.settings[field], field
    hit = surface.cached_plane(problem, d1, d2, span=(-0.5, 0.5), steps=9)
    assert hit is not None and hit.settings["refined"] is True
    calls = []
    monkeypatch.setattr(pv, "evaluate_points", lambda *a, **k: calls.append(1))
    again = pv.refine_plane(problem, d1, d2, span=(-0.5, 0.5), steps=9, on_level=pictures.append, use_cache=True)
    reopened = surface.plane(problem, d1, d2, span=(-0.5, 0.5), steps=9)  # the plane's own call: the same entry
    assert not calls and len(pictures) == len(pv.refinement_levels(9, 9))  # served whole, nothing evaluated
    for q in direct.values:
        np.testing.assert_array_equal(again.values[q], refined.values[q])
        np.testing.assert_array_equal(reopened.values[q], refined.values[q])


def test_a_cancelled_refinement_keeps_its_passes_and_resumes(fresh_cache, monkeypatch):
    import threading

    from landscape_core.evaluate import Cancelled

    problem = make_problem("mlp")
    d1, d2 = directions.random(problem, count=2, seed=8)
    stop = threading.Event()
    level0 = pv.refinement_levels(9, 9)[0]
    with pytest.raises(Cancelled, match=f"kept {len(level0)} of 81 points") as info:
        pv.refine_plane(problem, d1, d2, steps=9, on_level=lambda _: stop.set(), cancel=stop, use_cache=True)
    assert info.value.kept == len(level0)
    counted = []
    real = pv.evaluate_points

    def counting(problem, center, basis, coeffs, *args, **kwargs):
        counted.append(len(coeffs))
        return real(problem, center, basis, coeffs, *args, **kwargs)

    monkeypatch.setattr(pv, "evaluate_points", counting)
    resumed = pv.refine_plane(problem, d1, d2, steps=9, use_cache=True)
    assert sum(counted) == 81 - len(level0)
    direct = pv.refine_plane(problem, d1, d2, steps=9)
    for q in direct.values:
        np.testing.assert_allclose(resumed.values[q], direct.values[q], rtol=1e-12, err_msg=q)


def test_fill_pending_draws_only_cells_not_yet_computed():
    problem = make_problem("mlp")
    d1, d2 = directions.random(problem, count=2, seed=9)
    steps = 11
    pictures = []
    pv.refine_plane(problem, d1, d2, steps=steps, on_level=pictures.append)
    first = pictures[0]
    first.values["train_loss"][0, 0] = np.nan  # a computed cell that diverged stays diverged
    filled = pv.fill_pending(first)
    rows = np.flatnonzero(pv.axis_levels(steps) == 0)
    loss, shown = first.values["train_loss"], filled.values["train_loss"]
    assert np.isnan(shown[0, 0])
    assert np.isnan(loss).sum() == steps * steps - len(rows) ** 2 + 1 and np.isnan(shown).sum() == 1
    np.testing.assert_array_equal(shown[np.ix_(rows, rows)], loss[np.ix_(rows, rows)])
    for i in range(steps):
        for j in range(steps):
            if i in rows and j in rows:
                continue
            near_i = rows[np.abs(rows - i) == np.abs(rows - i).min()]
            near_j = rows[np.abs(rows - j) == np.abs(rows - j).min()]
            assert shown[i, j] in {loss[a, b] for a in near_i for b in near_j}, (i, j)  # its nearest computed cell
    last = pictures[-1]
    np.testing.assert_array_equal(pv.fill_pending(last).values["train_loss"], last.values["train_loss"])


def test_preview_is_labelled_with_its_subset_and_noise():
    problem = make_problem("conv_bn", n=200, dtype=torch.float32)
    d1, d2 = directions.random(problem, count=2, seed=5)
    fast = CostModel(overhead=1e-4, per_sample=1e-6, samples=300)
    result = pv.preview_plane(problem, d1, d2, seconds=2.0, cost=fast)
    assert result.settings["preview"] is True
    assert result.settings["samples"] == {"train": 200, "val": 100}  # the whole (small) splits
    assert result.settings["noise"] == {"train_loss": 0.0, "val_loss": 0.0}
    assert result.values["train_loss"].shape == (7, 7)
    slow = CostModel(overhead=0.0, per_sample=2.0 / (9 * 40), samples=300)  # 3x3 on 40 samples fits
    small = pv.preview_plane(problem, d1, d2, seconds=2.0, cost=slow)
    assert small.values["train_loss"].shape == (3, 3)
    assert small.settings["samples"] == {"train": pv.MIN_SAMPLES, "val": pv.MIN_SAMPLES}
    assert all(v > 0 for v in small.settings["noise"].values())
    full = Problem(problem.model, F.cross_entropy, problem.splits["train"].head(200))
    # the preview's values are those of the subset it names
    sub = full.subset(small.settings["samples"]["train"], seed=0)
    assert small.values["train_loss"][1, 1] == pytest.approx(sub.base["train_loss"], rel=1e-6)


def test_plan_preview_fits_the_budget():
    fast = CostModel(overhead=0.0, per_sample=1e-7, samples=10_000)
    assert pv.plan_preview(fast, 2.0) == (7, 256)
    medium = CostModel(overhead=0.01, per_sample=1e-3, samples=10_000)  # 7x7 fits 30 samples, 5x5 70
    assert pv.plan_preview(medium, 2.0) == (5, 70)
    hopeless = CostModel(overhead=5.0, per_sample=1.0, samples=10_000)
    assert pv.plan_preview(hopeless, 2.0) == (3, pv.MIN_SAMPLES)
    assert medium.seconds(25, 70) <= 2.0 < medium.seconds(49, 32)
    with pytest.raises(ValueError, match="seconds must be positive"):
        pv.plan_preview(fast, 0)


def test_cost_model_and_measurement():
    cost = CostModel(overhead=0.1, per_sample=0.01, samples=100)
    assert cost.seconds(10) == pytest.approx(10 * (0.1 + 1.0))
    assert cost.seconds(10, samples=50) == pytest.approx(10 * (0.1 + 0.5))
    assert cost.samples_within(11.0, 10) == 100
    assert cost.samples_within(0.5, 10) == 0
    measured = measure_cost(make_problem("conv_bn"))
    assert measured.samples == 60 and measured.overhead >= 0 and measured.per_sample >= 0
    assert measured.seconds(441) > 0
    with pytest.raises(ValueError, match="sizes must be two increasing"):
        measure_cost(make_problem("mlp"), sizes=(8, 8))
    assert describe_seconds(3.0) == "about 3 s"
    assert describe_seconds(400) == "about 7 min"
    assert describe_seconds(7200) == "about 2.0 h"
