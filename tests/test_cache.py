"""The disk cache: content keys, bytes only, hits identical and fast, location from the environment."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, Surface, cache, directions, surface


def problem(seed=0, scale=1.0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(0)
    X = scale * torch.randn(300, 5, generator=gen)
    y = torch.randint(0, 3, (300,), generator=gen)
    return Problem(model, F.cross_entropy, (X, y))


def test_location_from_environment(fresh_cache):
    assert cache.cache_dir() == fresh_cache
    cache.put("k", b"v")
    assert fresh_cache.exists()


def test_keys_are_content_hashes():
    a = cache.make_key("surface", 1, {"steps": 5, "span": [-1, 1]})
    assert a == cache.make_key("surface", 1, {"span": [-1, 1], "steps": 5})  # order-free
    assert a != cache.make_key("surface", 2, {"steps": 5, "span": [-1, 1]})
    assert a != cache.make_key("surface", 1, {"steps": 7, "span": [-1, 1]})
    assert a.startswith("surface:") and len(a.split(":")[1]) == 64


def test_bytes_only(fresh_cache):
    with pytest.raises(TypeError, match="stores bytes only"):
        cache.put("k", {"a": 1})
    cache.put("k", b"abc")
    assert cache.get("k") == b"abc"
    cache.delete("k")
    assert cache.get("k") is None


def test_cache_hit_returns_identical_arrays_and_is_fast(fresh_cache):
    p = problem()
    d1, d2 = directions.random(p, seed=1)
    t0 = time.perf_counter()
    cold = surface.plane(p, d1, d2, steps=15)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    hit = surface.plane(p, d1, d2, steps=15)
    t_hit = time.perf_counter() - t0
    for q in cold.values:
        np.testing.assert_array_equal(hit.values[q], cold.values[q])
    np.testing.assert_array_equal(hit.alphas, cold.alphas)
    assert hit.settings == cold.settings
    assert t_hit < t_cold / 5, (t_hit, t_cold)
    line = surface.line(p, d1, steps=9)
    assert np.array_equal(surface.line(p, d1, steps=9).values["train_loss"], line.values["train_loss"])


def test_stored_value_is_plain_npz(fresh_cache):
    p = problem()
    d1, d2 = directions.random(p, seed=2)
    result = surface.plane(p, d1, d2, steps=5)
    (key,) = list(cache.get_cache().iterkeys())
    raw = cache.get(key)
    assert raw[:2] == b"PK"  # a zip archive (npz), not a pickle
    back = Surface.from_bytes(raw)
    np.testing.assert_array_equal(back.values["train_loss"], result.values["train_loss"])


def test_any_change_misses(fresh_cache):
    p = problem()
    d1, d2 = directions.random(p, seed=3)
    surface.plane(p, d1, d2, steps=5)
    n = len(list(cache.get_cache().iterkeys()))
    surface.plane(p, d1, d2, steps=7)  # other settings
    surface.plane(p, d2, d1, steps=5)  # other directions
    surface.plane(p.at(p.theta0 * 1.01), d1, d2, steps=5)  # other parameters
    other_data = problem(scale=2.0)
    surface.plane(other_data, d1, d2, steps=5)  # other data
    assert len(list(cache.get_cache().iterkeys())) == n + 4


def test_use_cache_false_writes_nothing(fresh_cache):
    p = problem()
    d1, d2 = directions.random(p, seed=4)
    surface.plane(p, d1, d2, steps=5, use_cache=False)
    surface.line(p, d1, steps=5, use_cache=False)
    assert list(cache.get_cache().iterkeys()) == []
