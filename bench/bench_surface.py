"""Benchmark: a 41x41 filter-normalized loss plane, ours vs the ``loss-landscapes`` package.

Same model, same data, same work: a digits MLP (64-128-10, ReLU), all 1797 samples of
``sklearn.datasets.load_digits`` scaled to [0, 1], cross-entropy loss only (no metrics),
a 41x41 grid over [-1, 1]^2 along two filter-normalized random directions.

Prints points/s of ``landscape_core.surface.plane`` (no cache) and of
``loss_landscapes.random_plane``, the best of ``--repeats`` runs each (best = least
disturbed by other load on the machine), their ratio, the cold vs cached time of
``surface.plane``, and the CUDA (vmap) figure when a GPU is present.

Run: ``python bench/bench_surface.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

STEPS = 41


def digits_problem_parts(seed: int = 0):
    """The digits MLP (briefly trained, so the plane has structure) and the full data set."""
    digits = load_digits()
    X = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def time_ours(model, X, y, repeats: int, device: str = "cpu") -> tuple[list[float], float, float, float]:
    """Seconds per uncached plane (``repeats`` runs), then cold and cached time with the cache on."""
    from landscape_core import Problem, directions, surface

    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={}, device=device)
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS, use_cache=False)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    assert result.center_value() == problem.base["train_loss"]
    t0 = time.perf_counter()
    cold = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS)
    t_cached = time.perf_counter() - t0
    assert np.array_equal(cold.values["train_loss"], cached.values["train_loss"])
    return times, t_cold, t_cached, float(result.values["train_loss"].mean())


def time_peer(model, X, y, repeats: int) -> list[float]:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss_landscapes.random_plane(
            model, metric, distance=1, steps=STEPS, normalization="filter", deepcopy_model=True
        )
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("LANDSCAPE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    points = STEPS * STEPS
    model, X, y = digits_problem_parts()
    print(f"# digits MLP 64-128-10, {X.shape[0]} samples, {STEPS}x{STEPS} plane, loss only")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )

    ours, t_cold, t_cached, _ = time_ours(model, X, y, args.repeats)
    peer = time_peer(model, X, y, args.repeats)
    rows = [
        ("landscape_core.surface.plane (cpu)", ours),
        ("loss_landscapes.random_plane (cpu)", peer),
    ]
    if torch.cuda.is_available():
        gpu, _, _, _ = time_ours(model, X, y, args.repeats, device="cuda")
        rows.append(("landscape_core.surface.plane (cuda, vmap)", gpu))
    else:
        print("# CUDA not available: GPU (vmap) figure skipped")

    print(f"\n{'run':<44}{'best s':>9}{'median s':>10}{'points/s (best)':>17}")
    for name, times in rows:
        best, median = min(times), statistics.median(times)
        print(f"{name:<44}{best:>9.3f}{median:>10.3f}{points / best:>17.0f}")
    ratio = min(peer) / min(ours)
    print(f"\nspeed-up over loss-landscapes (best of {args.repeats} each): {ratio:.2f}x")
    if len(rows) == 3:
        print(f"speed-up of cuda over loss-landscapes: {min(peer) / min(rows[2][1]):.1f}x")
    print(f"cold plane {t_cold:.3f} s, cached repeat {t_cached * 1e3:.2f} ms: {t_cold / t_cached:.0f}x faster")
    print(
        f"SUMMARY ours={points / min(ours):.0f} pts/s  loss-landscapes={points / min(peer):.0f} pts/s  "
        f"ratio={ratio:.2f}x  cold={t_cold:.3f}s  cached={t_cached * 1e3:.2f}ms ({t_cold / t_cached:.0f}x)"
    )


if __name__ == "__main__":
    main()
