"""Benchmark: a 41x41 filter-normalized loss plane, ours vs the ``loss-landscapes`` package.

Same model, same data, same work: a digits MLP (64-128-10, ReLU), all 1797 samples of
``sklearn.datasets.load_digits`` scaled to [0, 1], cross-entropy loss only (no metrics),
a 41x41 grid over [-1, 1]^2 along two filter-normalized random directions.

Prints points/s of ``landscape_core.surface.plane`` (no cache) and of
``loss_landscapes.random_plane``, ``--repeats`` runs each, interleaved so both see the same
machine load: the best run (least disturbed by other load), the median, and the process
CPU time (robust on a shared machine, a fair proxy for an idle one with ``--threads 1``);
their ratios; the cold vs cached time of ``surface.plane``; and the CUDA (vmap) figure when
a GPU is present. Ours also asserts that the centre cell equals the base loss exactly.

Run: ``python bench/bench_surface.py [--threads 1]`` (well under a minute on an idle
2-core machine).
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


def plane_timer(model, X, y, device: str = "cpu"):
    """A function timing one uncached plane of ours, and the problem/directions it uses."""
    from landscape_core import Problem, directions, surface

    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={}, device=device)
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)

    def run() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        result = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS, use_cache=False)
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0, time.process_time() - c0
        assert result.center_value() == problem.base["train_loss"]  # centre cell is the base value exactly
        return elapsed

    return run, problem, (d1, d2)


def cold_and_cached(problem, d1, d2) -> tuple[float, float]:
    """Seconds for a plane with the cache on: first (cold, computed and stored), then repeated."""
    from landscape_core import surface

    t0 = time.perf_counter()
    cold = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached = surface.plane(problem, d1, d2, span=(-1, 1), steps=STEPS)
    t_cached = time.perf_counter() - t0
    assert np.array_equal(cold.values["train_loss"], cached.values["train_loss"])
    return t_cold, t_cached


def peer_timer(model, X, y):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)

    def run() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        loss_landscapes.random_plane(
            model, metric, distance=1, steps=STEPS, normalization="filter", deepcopy_model=True
        )
        return time.perf_counter() - t0, time.process_time() - c0

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("LANDSCAPE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    points = STEPS * STEPS
    model, X, y = digits_problem_parts()
    print(f"# digits MLP 64-128-10, {X.shape[0]} samples, {STEPS}x{STEPS} plane, loss only")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )

    run_ours, problem, (d1, d2) = plane_timer(model, X, y)
    run_peer = peer_timer(model, X, y)
    ours, peer = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        ours.append(run_ours())
        peer.append(run_peer())
    t_cold, t_cached = cold_and_cached(problem, d1, d2)
    rows = [
        ("landscape_core.surface.plane (cpu)", ours),
        ("loss_landscapes.random_plane (cpu)", peer),
    ]
    if torch.cuda.is_available():
        run_gpu, _, _ = plane_timer(model, X, y, device="cuda")
        run_gpu()  # warm-up (CUDA context, kernels)
        rows.append(("landscape_core.surface.plane (cuda, vmap)", [run_gpu() for _ in range(args.repeats)]))
    else:
        print("# CUDA not available: GPU (vmap) figure skipped")

    print(f"\n{'run':<44}{'best s':>9}{'median s':>10}{'points/s':>10}{'cpu s':>8}{'points/cpu-s':>14}")
    for name, runs in rows:
        wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"{name:<44}{min(wall):>9.3f}{statistics.median(wall):>10.3f}{points / min(wall):>10.0f}"
            f"{min(cpu):>8.3f}{points / min(cpu):>14.0f}"
        )
    best_ours, best_peer = min(r[0] for r in ours), min(r[0] for r in peer)
    ratio = best_peer / best_ours
    median_ratio = statistics.median(r[0] for r in peer) / statistics.median(r[0] for r in ours)
    cpu_ratio = min(r[1] for r in peer) / min(r[1] for r in ours)
    print(f"\nspeed-up over loss-landscapes, wall time, best of {args.repeats} each:   {ratio:.2f}x")
    print(f"speed-up over loss-landscapes, wall time, median of {args.repeats} each: {median_ratio:.2f}x")
    print(f"speed-up over loss-landscapes, process CPU time, best of each: {cpu_ratio:.2f}x")
    if len(rows) == 3:
        print(f"speed-up of cuda over loss-landscapes (wall, best): {best_peer / min(r[0] for r in rows[2][1]):.1f}x")
    print(f"cold plane {t_cold:.3f} s, cached repeat {t_cached * 1e3:.2f} ms: {t_cold / t_cached:.0f}x faster")
    print(
        f"SUMMARY threads={torch.get_num_threads()} ours={points / best_ours:.0f} pts/s  "
        f"loss-landscapes={points / best_peer:.0f} pts/s  ratio(best)={ratio:.2f}x  ratio(median)={median_ratio:.2f}x  "
        f"ratio(cpu)={cpu_ratio:.2f}x  cold={t_cold:.3f}s  cached={t_cached * 1e3:.2f}ms ({t_cold / t_cached:.0f}x)"
    )


if __name__ == "__main__":
    main()
