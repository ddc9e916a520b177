"""Every cached engine answers only its own question: the loss's identity is in each key
(a label-smoothed loss is never served the plain loss's result), and a stored entry whose
bytes pass the seal but do not decode (written by anyone who can write the cache) is a miss:
recomputed and replaced, never an exception on every rerun."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import (
    Problem,
    cache,
    density,
    directions,
    hessian,
    interpolation,
    sharpness,
    surface,
    trace,
    trajectory,
    trajectory_plane,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def problem(loss=F.cross_entropy) -> Problem:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(48, 3, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    return Problem(model, loss, (X, (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()))


def checkpoints(p: Problem) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [p.theta0 + 0.1 * k * torch.randn(p.space.size, generator=gen, dtype=p.theta0.dtype) for k in range(4)]


def _gap(p, **kw):
    thetas = checkpoints(p)
    return trajectory_plane.projection_gap(p, trajectory.pca(thetas, space=p), thetas, **kw)


ENGINES = {
    "plane": lambda p, **kw: surface.plane(p, *directions.random(p, count=2, seed=0), steps=5, **kw),
    "line": lambda p, **kw: surface.line(p, directions.random(p, count=1, seed=0)[0], steps=7, **kw),
    "interpolation": lambda p, **kw: interpolation.linear(p, p.theta0, checkpoints(p)[-1], steps=5, **kw),
    "top eigenvalues": lambda p, **kw: hessian.top_eigenvalues(p, k=2, **kw),
    "trace": lambda p, **kw: trace.trace(p, budget=12, **kw),
    "density": lambda p, **kw: density.density(p, iters=8, grid_size=50, **kw),
    "average sharpness": lambda p, **kw: sharpness.average(p, sigma=0.05, samples=4, **kw),
    "epsilon sharpness": lambda p, **kw: sharpness.epsilon(p, eps=1e-3, iters=3, **kw),
    "projection gap": _gap,
}


def numbers(result) -> dict[str, np.ndarray]:
    """The arrays a result holds (settings aside), for exact comparison."""
    arrays = {}
    for name, value in vars(result).items():
        if isinstance(value, dict) and name != "settings":
            arrays |= {f"{name}.{k}": np.asarray(v) for k, v in value.items() if not isinstance(v, str)}
        elif isinstance(value, (np.ndarray, float, int)) and not isinstance(value, bool):
            arrays[name] = np.asarray(value)
    return arrays


def assert_same(a, b) -> None:
    left, right = numbers(a), numbers(b)
    assert left.keys() == right.keys() and left
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def counting_fetch(monkeypatch) -> list:
    """Replaces ``cache.fetch``; returns the list of its answers (``None``: a miss)."""
    answers = []
    real = cache.fetch

    def fetch(key, decode):
        answers.append(hit := real(key, decode))
        return hit

    monkeypatch.setattr(cache, "fetch", fetch)
    return answers


@pytest.mark.parametrize("engine", list(ENGINES))
def test_each_engine_keys_the_loss(engine, fresh_cache, monkeypatch):
    run = ENGINES[engine]
    run(problem(F.cross_entropy))
    smoothed = problem(nn.CrossEntropyLoss(label_smoothing=0.2))
    answers = counting_fetch(monkeypatch)
    served = run(smoothed)
    assert answers and all(a is None for a in answers)  # before: the plain loss's entry was served
    assert_same(served, run(smoothed, use_cache=False))
    answers.clear()
    run(smoothed)
    assert answers[0] is not None  # the same loss made again is a hit


@pytest.mark.parametrize("engine", list(ENGINES))
def test_each_engine_treats_an_undecodable_entry_as_a_miss(engine, fresh_cache):
    run = ENGINES[engine]
    p = problem()
    first = run(p)
    keys = list(cache.get_cache().iterkeys())
    assert keys
    for key in keys:
        cache.put(key, b"sealed, but not an npz archive")  # passes the seal: only decoding can refuse it
    again = run(p)
    assert_same(first, again)
    assert_same(first, run(p))  # replaced: served again


def test_an_undecodable_umap_entry_is_a_miss(fresh_cache):
    thetas = checkpoints(problem())
    first = trajectory.umap(thetas, n_neighbors=2)
    for key in list(cache.get_cache().iterkeys()):
        cache.put(key, b"sealed, but not an npz archive")
    np.testing.assert_array_equal(trajectory.umap(thetas, n_neighbors=2).coords, first.coords)
