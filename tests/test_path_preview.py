"""The first picture of a path: refinement order, the finished path equal to ``interpolation.linear``
(and a line equal to ``surface.line``), the preview's labels, a subset preview never taken for the
exact path (BatchNorm statistics included), and the sharpness preview against its closed form."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, batchnorm, interpolation, sharpness, surface
from landscape_core import cache as cache_mod
from landscape_core import path_preview as pp
from landscape_core import sharpness_preview as sp
from landscape_core.estimate import CostModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest and steadiest

FAST = CostModel(overhead=1e-4, per_sample=1e-6, samples=300)  # everything fits: the largest subset


def make_problem(kind="mlp", n=40):
    """A float64 classifier: an MLP, or a conv net with BatchNorm whose stored statistics are stale."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    if kind == "mlp":
        model, shape = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)), (5,)
    else:
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
        ).eval()
        model[1].running_mean.uniform_(-0.5, 0.5, generator=gen)
        model[1].running_var.uniform_(0.5, 2.0, generator=gen)
        shape = (2, 6, 6)
    X = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    Xv = torch.randn(n // 2, *shape, generator=gen, dtype=torch.float64)
    yv = torch.randint(0, 3, (n // 2,), generator=gen)
    return Problem(model.double(), F.cross_entropy, (X, y), val=(Xv, yv), batch_size=16)


def other_end(problem, seed=2):
    gen = torch.Generator().manual_seed(seed)
    theta_b = problem.theta0 + 0.5 * torch.randn(problem.space.size, generator=gen, dtype=torch.float64)
    buffers_b = {k: (v * 1.3 if v.is_floating_point() else v) for k, v in problem.buffers.items()}
    return theta_b, buffers_b


def test_path_levels_start_with_both_ends_and_the_centre():
    alphas = interpolation.path_alphas((0.0, 1.0), 25)
    levels = pp.path_levels(alphas)
    assert levels[0].tolist() == [0, 4, 12, 20, 24]  # alpha 0, 1/6, 1/2, 5/6, 1
    assert sorted(np.concatenate(levels).tolist()) == list(range(25))
    # 0 and 1 added to a grid that misses them: they join the first level wherever they sit
    odd = interpolation.path_alphas((-0.5, 1.5), 6)
    first = odd[pp.path_levels(odd)[0]]
    assert 0.0 in first and 1.0 in first and -0.5 in first and 1.5 in first
    assert sorted(np.concatenate(pp.path_levels(odd)).tolist()) == list(range(len(odd)))


@pytest.mark.parametrize(("kind", "bn"), [("mlp", "recompute"), ("conv_bn", "recompute"), ("conv_bn", "interpolate")])
def test_refined_path_fills_in_coarse_to_fine_and_equals_linear(kind, bn):
    problem = make_problem(kind)
    theta_b, buffers_b = other_end(problem)
    args = dict(steps=9, span=(-0.25, 1.25), bn=bn, buffers_b=buffers_b)
    pictures = []
    result = pp.refine_path(problem, problem.theta0, theta_b, on_level=pictures.append, use_cache=False, **args)
    levels = pp.path_levels(result.alphas)
    assert len(pictures) == len(levels)  # one picture per level, the last one the finished path
    done = np.zeros(len(result.alphas), dtype=bool)
    for picture, level in zip(pictures[:-1], levels):
        done[level] = True
        assert np.array_equal(np.isfinite(picture.values["train_loss"]), done)  # exactly these alphas so far
        assert picture.barrier == {} and picture.settings["pending_points"] == int((~done).sum())
    assert pictures[-1] is result
    direct = interpolation.linear(problem, problem.theta0, theta_b, use_cache=False, **args)
    np.testing.assert_array_equal(result.alphas, direct.alphas)
    for q, v in direct.values.items():
        np.testing.assert_allclose(result.values[q], v, rtol=1e-12, atol=1e-15, err_msg=q)
        np.testing.assert_allclose(result.endpoint_values[q], direct.endpoint_values[q], rtol=1e-12, err_msg=q)
    assert result.barrier["train_loss"]["height"] == pytest.approx(direct.barrier["train_loss"]["height"], rel=1e-9)
    assert result.settings == direct.settings


def test_refined_path_is_cached_as_linear_and_served_from_it(fresh_cache):
    problem = make_problem("conv_bn")
    theta_b, buffers_b = other_end(problem)
    refined = pp.refine_path(problem, problem.theta0, theta_b, steps=5, buffers_b=buffers_b)
    cancel = threading.Event()
    cancel.set()  # nothing may be evaluated: the refined path is linear's cache entry
    again = interpolation.linear(problem, problem.theta0, theta_b, steps=5, buffers_b=buffers_b, cancel=cancel)
    for q in refined.values:
        np.testing.assert_array_equal(again.values[q], refined.values[q])


def counting_points(monkeypatch):
    counted = []
    real = interpolation.path_values

    def counting(plan, problem, alphas, *args, **kwargs):
        counted.append(len(alphas))
        return real(plan, problem, alphas, *args, **kwargs)

    monkeypatch.setattr(interpolation, "path_values", counting)
    return counted


def test_a_preview_of_all_the_data_is_reused(monkeypatch, fresh_cache):
    problem = make_problem("conv_bn", n=40)  # smaller than the preview's subset: it sees all data
    theta_b, buffers_b = other_end(problem)
    args = dict(steps=9, bn="recompute", buffers_b=buffers_b)
    preview = pp.preview_path(problem, problem.theta0, theta_b, cost=FAST, **args)
    assert preview.settings["preview"] is True
    assert preview.settings["samples"] == {"train": 40, "val": 20}
    assert preview.settings["noise"] == {"train_loss": 0.0, "val_loss": 0.0}
    assert preview.alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert "all samples" in preview.settings["barrier_of"]
    assert np.isnan(preview.endpoint_values["train_loss"]).all()  # not computed, not pretended
    # its own timing predicts the exact path: 9 alphas of 60 samples + 40 recompute vs 5 of the same
    seconds = preview.settings["seconds"]
    assert pp.exact_seconds(preview, problem, 9, (0.0, 1.0), "recompute") == pytest.approx(seconds * 9 / 5)
    assert pp.exact_seconds(preview, problem, 9, (0.0, 1.0), "keep") == pytest.approx(seconds * 9 / 5 * 60 / 100)
    counted = counting_points(monkeypatch)
    refined = pp.refine_path(problem, problem.theta0, theta_b, known=preview, use_cache=False, **args)
    assert sum(counted) == 9 - 5  # the preview's five alphas are not recomputed
    direct = interpolation.linear(problem, problem.theta0, theta_b, use_cache=False, **args)
    for q, v in direct.values.items():
        np.testing.assert_allclose(refined.values[q], v, rtol=1e-12, err_msg=q)


def test_a_subset_preview_is_labelled_and_never_taken_for_the_exact_path(monkeypatch, fresh_cache):
    problem = make_problem("conv_bn", n=600)  # larger than the subset
    theta_b, buffers_b = other_end(problem)
    args = dict(steps=9, bn="recompute", buffers_b=buffers_b)
    slow = CostModel(overhead=0.0, per_sample=1 / 300.5, samples=900)  # 5 points x 3 passes x 40 samples fit
    preview = pp.preview_path(problem, problem.theta0, theta_b, cost=slow, **args)
    assert preview.settings["samples"] == {"train": 40, "val": 40}
    assert all(v > 0 for v in preview.settings["noise"].values())
    assert "not the exact path" in preview.settings["barrier_of"]
    assert "40 train samples" in preview.settings["bn_statistics"]  # statistics of the subset, said so
    with pytest.raises(ValueError, match="other data"):
        pp.refine_path(problem, problem.theta0, theta_b, known=preview, use_cache=False, **args)
    plan = interpolation.plan_path(problem, problem.theta0, theta_b, 9, (0.0, 1.0), "recompute", None, buffers_b)
    assert cache_mod.fetch(interpolation.path_key(plan), interpolation.Path.from_bytes) is None  # nothing cached
    exact = interpolation.linear(problem, problem.theta0, theta_b, use_cache=False, **args)
    at_preview = np.isin(exact.alphas, preview.alphas)
    assert not np.allclose(exact.values["train_loss"][at_preview], preview.values["train_loss"])
    # the preview's values are those of the subset it names, statistics recomputed there
    small = problem.subset(40, seed=0)
    sub = interpolation.linear(small, problem.theta0, theta_b, use_cache=False, **args)
    np.testing.assert_allclose(preview.values["train_loss"], sub.values["train_loss"][at_preview], rtol=1e-12)
    middle = interpolation.point(problem.theta0, theta_b, 0.5)
    on_subset, on_all = batchnorm.recompute(small, middle), batchnorm.recompute(problem, middle)
    assert not torch.allclose(on_subset["1.running_mean"], on_all["1.running_mean"])


def test_a_preview_of_another_path_is_refused():
    problem = make_problem("conv_bn")
    theta_b, buffers_b = other_end(problem)
    preview = pp.preview_path(problem, problem.theta0, theta_b, steps=9, bn="keep", buffers_b=buffers_b, cost=FAST)
    with pytest.raises(ValueError, match="another path: its bn differ"):
        pp.refine_path(problem, problem.theta0, theta_b, steps=9, bn="recompute", buffers_b=buffers_b, known=preview)


def test_preview_samples_fit_the_budget():
    medium = CostModel(overhead=0.01, per_sample=1e-3, samples=10_000)
    assert pp.preview_samples(medium, 2.0, 5, 3) == 130  # 0.4 s per point: 390 samples over 3 passes
    assert pp.preview_samples(medium, 2.0, 5, 2) == 195
    assert pp.preview_samples(FAST, 2.0, 5, 2) == pp.PREVIEW_SAMPLES
    hopeless = CostModel(overhead=5.0, per_sample=1.0, samples=10_000)
    assert pp.preview_samples(hopeless, 2.0, 5, 2) == pp.MIN_SAMPLES
    with pytest.raises(ValueError, match="seconds must be positive"):
        pp.preview_samples(FAST, 0.0, 5, 2)


def test_refined_line_fills_in_coarse_to_fine_and_equals_surface_line(monkeypatch):
    problem = make_problem("conv_bn", n=40)
    direction = torch.randn(problem.space.size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    preview = pp.preview_line(problem, direction, span=(-1, 1), steps=21, cost=FAST)
    assert preview.settings["preview"] is True and preview.settings["samples"] == {"train": 40, "val": 20}
    np.testing.assert_allclose(preview.alphas, [-1.0, -0.8, 0.0, 0.8, 1.0])  # both ends, the centre, stride 8
    pictures, counted, real = [], [], pp.evaluate_points

    def counting(problem, center, basis, coeffs, *args, **kwargs):
        counted.append(len(coeffs))
        return real(problem, center, basis, coeffs, *args, **kwargs)

    monkeypatch.setattr(pp, "evaluate_points", counting)
    line = pp.refine_line(problem, direction, span=(-1, 1), steps=21, known=preview, on_level=pictures.append)
    assert sum(counted) == 21 - 5 and line.settings["reused_points"] == 5  # the preview's points are kept
    finite = [int(np.isfinite(p.values["train_loss"]).sum()) for p in pictures]
    assert finite == [5, 7, 11, 21]  # coarse to fine: stride 8, 4, 2, 1 through the centre
    direct = surface.line(problem, direction, span=(-1, 1), steps=21, use_cache=False)
    for q, v in direct.values.items():
        np.testing.assert_allclose(line.values[q], v, rtol=1e-12, err_msg=q)
    assert line.values["train_loss"][10] == problem.base["train_loss"]
    big = make_problem("conv_bn", n=600)  # the preview sees a subset: nothing of it is reused
    subset_preview = pp.preview_line(big, direction, steps=21, cost=FAST)
    assert subset_preview.settings["samples"]["train"] == pp.PREVIEW_SAMPLES
    with pytest.raises(ValueError, match="other data"):
        pp.refine_line(big, direction, steps=21, known=subset_preview)


def regression(n, seed=0):
    """Least squares ``mean (w.x + b - y)^2``: the average sharpness is exactly ``sigma^2 mean(|x|^2 + 1)``."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    return Problem(nn.Linear(4, 1).double(), F.mse_loss, (X, y), batch_size=64), X


def test_sharpness_preview_is_the_defined_mean_on_its_data():
    problem, _ = regression(64)  # the preview sees all 64 samples
    result = sp.preview_average_sharpness(problem, sigma=0.1, seed=3, cost=FAST)
    draws = result.settings["draws"]
    assert result.settings["preview"] is True and result.settings["samples"] == 64 and draws == 32
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(draws, problem.space.size, generator=gen, dtype=torch.float64)
    losses = problem.evaluate(problem.theta0 + 0.1 * z, splits=["train"])["train_loss"]
    assert result.value == pytest.approx(losses.mean() - problem.base["train_loss"], rel=1e-10)
    np.testing.assert_allclose(result.samples, losses - problem.base["train_loss"], rtol=1e-9)


def test_sharpness_preview_on_a_subset_agrees_with_the_closed_form_within_its_error():
    problem, X = regression(4000)
    result = sp.preview_average_sharpness(problem, sigma=0.1, seed=0, cost=FAST)
    assert result.settings["samples"] == pp.PREVIEW_SAMPLES and result.settings["of_samples"] == 4000
    truth = 0.1**2 * float((X.pow(2).sum(1) + 1).mean())  # 0.5 sigma^2 tr(H) of the full data
    assert result.stderr > 0
    assert abs(result.value - truth) < 3 * result.stderr, (result.value, truth, result.stderr)
    exact = sharpness.average(problem, sigma=0.1, samples=200, use_cache=False)
    assert abs(exact.value - truth) < 3 * exact.stderr  # the exact one it previews, for scale
