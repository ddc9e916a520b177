"""Benchmark on convolution nets: ours vs ``loss-landscapes`` and a plain ``functional_call`` loop.

Workloads (generated data, nothing downloaded; ``landscape_core.nets``):

* ``cnn``: a BatchNorm CNN of 90,058 parameters (three conv-BN-ReLU-pool stages 16/32/64
  channels, two Linear layers) on 3x32x32 images;
* ``resnet``: He et al.'s CIFAR ResNet-20 (269,722 parameters, 19 BatchNorms, option A
  shortcuts) on 3x32x32 images.

Both in eval mode, BatchNorm statistics taken from a few training-mode passes so they are
not trivial. For each: a ``steps x steps`` plane over [-1, 1]^2 along two filter-normalized
directions, loss only (cross-entropy), all samples in one batch, three ways, interleaved
(ours, loss-landscapes, loop, ours, ...) so they see the same load:

* ``ours``: ``landscape_core.surface.plane(..., use_cache=False)`` (the folded strategy);
* ``loss-landscapes``: ``loss_landscapes.random_plane(model, Loss(CrossEntropyLoss(), X, y),
  distance=1, steps, normalization="filter", deepcopy_model=True)``;
* ``loop``: per point ``theta0 + a d1 + b d2``, ``functional_call`` under ``torch.no_grad``;
* ``ours before``: ``surface.plane`` with the strategy used before folding (``affine`` for the
  Sequential CNN, the per-point loop for the ResNet).

Then seconds per point of each way in (``--ablation``): plain loop, ``inference_mode``,
channels-last only, BatchNorm folded only, folded + channels-last, and ``torch.compile`` of
the folded forward (with its compile time; ``--compile``). Ours' values are checked against
the loop's (1e-5 relative) and the centre cell against the base loss (exact).

``--growth`` times one point of ours against samples and parameters (widths) and fits the
exponents of ``seconds = a * samples^p * parameters^q`` by least squares on logs, and the
exponent in grid points from a 2x2 and a 4x4 plane.

Run: ``python bench/bench_real.py --threads 1`` (a few minutes on an idle 2-core machine; the
defaults use a subset of samples and a small grid so that it fits: the growth fit says how
the full workload scales).
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from common import checked_against_loop, interleaved, timed  # noqa: E402  (bench/common.py)

from landscape_core import Problem, directions, surface  # noqa: E402
from landscape_core.folding import FoldedForward  # noqa: E402
from landscape_core.nets import ResNetCifar, resnet_cifar, synthetic_images  # noqa: E402


def bn_cnn(width: int = 16, seed: int = 0) -> nn.Sequential:
    """Three conv-BN-ReLU-maxpool stages (``width``, 2, 4 x ``width`` channels), Linear(16 w^2... , 64), Linear(64, 10).
    ``width=16``: 90,058 parameters."""
    torch.manual_seed(seed)
    layers, c_in = [], 3
    for c in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * 16, 64), nn.ReLU(), nn.Linear(64, 10))


def with_statistics(model: nn.Module, X: torch.Tensor) -> nn.Module:
    """``model`` in eval mode after three training-mode passes (running statistics not 0/1),
    BatchNorm scales and shifts drawn near 1 and 0 as after training (``loss-landscapes`` divides
    by zero on the all-zero shifts of a fresh BatchNorm)."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(0.8, 1.2, generator=gen)
            module.bias.data.uniform_(-0.1, 0.1, generator=gen)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(X[:256])
    return model.eval()


def workload(name: str, samples: int, width: int | None = None):
    X, y = synthetic_images(samples, seed=0)
    if name == "cnn":
        model = bn_cnn(width or 16)
    elif name == "resnet":
        model = resnet_cifar(20) if width is None else ResNetCifar(20, width=width)
    else:
        raise ValueError(f"workload must be 'cnn' or 'resnet'; got {name!r}.")
    return with_statistics(model, X), X, y


def plain_loop(problem, d1, d2, alphas) -> np.ndarray:
    """The plain loop: ``functional_call`` at every grid point, no_grad, one batch."""
    model = problem.model
    X, y = problem.splits["train"].head(problem.splits["train"].n)
    out = np.empty((len(alphas), len(alphas)))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(alphas):
                theta = problem.theta0 + float(a) * d1 + float(b) * d2
                state = {**problem.buffers, **problem.space.unflatten(theta)}
                logits = torch.func.functional_call(model, state, (X,))
                out[i, j] = float(nn.functional.cross_entropy(logits, y))
    return out


def peer_plane(model, X, y, steps: int):
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)
    return loss_landscapes.random_plane(
        model, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
    )


def compare(name: str, samples: int, steps: int, repeats: int, before: bool = True) -> dict:
    model, X, y = workload(name, samples)
    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={})
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
    alphas = surface.grid((-1, 1), steps)
    params = problem.space.size
    print(f"\n## {name}: {params:,} parameters, {samples} samples 3x32x32, {steps}x{steps} plane, loss only")

    def ours_before():
        problem.strategy = "affine"  # the strategy before folding (the loop where no affine prefix applies)
        try:
            return surface.plane(problem, d1, d2, span=(-1, 1), steps=steps, use_cache=False)
        finally:
            problem.strategy = None

    ways = {"ours": lambda: surface.plane(problem, d1, d2, span=(-1, 1), steps=steps, use_cache=False)}
    if before:
        ways["ours before (affine/loop)"] = ours_before
    ways["loss-landscapes"] = lambda: peer_plane(model, X, y, steps)
    ways["loop"] = lambda: plain_loop(problem, d1, d2, alphas)
    times, last = interleaved(ways, repeats)
    rel = checked_against_loop(last["ours"], last["loop"], problem)
    points = steps * steps
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    for k in times:
        print(f"{k:<26} best {best[k]:8.2f} s  median {median[k]:8.2f} s  {best[k] / points * 1e3:8.1f} ms/point")
    row = {
        "name": name,
        "params": params,
        "samples": samples,
        "steps": steps,
        "vs_peer_best": best["loss-landscapes"] / best["ours"],
        "vs_peer_median": median["loss-landscapes"] / median["ours"],
        "vs_loop_best": best["loop"] / best["ours"],
        "vs_loop_median": median["loop"] / median["ours"],
        "vs_before_best": best["ours before (affine/loop)"] / best["ours"] if before else float("nan"),
        "max_rel_vs_loop": rel,
    }
    print(
        f"ratio vs loss-landscapes {row['vs_peer_best']:.2f}x (best) {row['vs_peer_median']:.2f}x (median); "
        f"vs plain loop {row['vs_loop_best']:.2f}x (best) {row['vs_loop_median']:.2f}x (median); "
        f"max relative difference to the loop {rel:.1e}; centre cell == base loss"
    )
    return row


def ablation(name: str, samples: int, points: int, with_compile: bool) -> None:
    """Seconds per point of each way in, interleaved round by round (best of the rounds)."""
    model, X, y = workload(name, samples)
    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={})
    d1 = directions.random(problem, count=1, norm="filter", seed=0)[0]
    thetas = [problem.theta0 + (0.1 + 0.8 * i / points) * d1 for i in range(points)]
    folded = FoldedForward.build(problem)
    Xcl = X.contiguous(memory_format=torch.channels_last)
    base_graph = problem.local_model()

    def plain(cl: bool, mode):
        def run():
            with mode():
                for t in thetas:
                    p = problem.space.unflatten(t)
                    if cl:
                        p = {
                            n: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
                            for n, v in p.items()
                        }
                    torch.func.functional_call(base_graph, {**problem.buffers, **p}, (Xcl if cl else X,))

        return run

    def fold(cl: bool):
        def run():
            with torch.inference_mode():
                for t in thetas:
                    state = folded.state(problem.space.unflatten(t), channels_last=cl)
                    torch.func.functional_call(folded.graph, state, (Xcl if cl else X,))

        return run

    ways = {
        "plain loop (no_grad)": plain(False, torch.no_grad),
        "+ inference_mode": plain(False, torch.inference_mode),
        "+ channels-last": plain(True, torch.inference_mode),
        "+ BN folded (NCHW)": fold(False),
        "+ BN folded + channels-last": fold(True),
    }
    if with_compile:

        def forward(params, x):
            return torch.func.functional_call(folded.graph, folded.state(params, channels_last=True), (x,))

        compiled = torch.compile(forward, dynamic=False)
        with torch.inference_mode():
            t_compile, _ = timed(lambda: compiled(problem.space.unflatten(thetas[0]), Xcl))

        def run_compiled():
            with torch.inference_mode():
                for t in thetas:
                    compiled(problem.space.unflatten(t), Xcl)

        ways["+ torch.compile (folded, NHWC)"] = run_compiled
    per_point = {k: [] for k in ways}
    for _ in range(3):
        for k, fn in ways.items():
            per_point[k].append(timed(fn)[0] / points)
    print(f"\n### ways in, {name}, {samples} samples, seconds per point (best of 3 interleaved rounds)")
    first = min(per_point["plain loop (no_grad)"])
    for k, v in per_point.items():
        print(f"{k:<34} {min(v) * 1e3:8.1f} ms  {first / min(v):5.2f}x")
    if with_compile:
        print(f"torch.compile: first call (compile) {t_compile:.1f} s")


def slice_sweep(name: str, samples: int, points: int = 3) -> None:
    """Seconds per point of the folded forward on one batch of ``samples`` cut into slices of
    64 ... ``samples`` images, with the minor page faults per point (``getrusage``): what sets
    ``folding.SLICE_BYTES``."""
    import resource

    model, X, y = workload(name, samples)
    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={})
    d1 = directions.random(problem, count=1, norm="filter", seed=0)[0]
    thetas = [problem.theta0 + (0.1 + 0.8 * i / points) * d1 for i in range(points)]
    folded = FoldedForward.build(problem)
    sizes = [s for s in (64, 128, 256, 512, 1024) if s < samples] + [samples]
    print(f"\n### slices, {name}, one batch of {samples} samples (default slice: {folded.slice_samples})")
    rows = {s: [] for s in sizes}
    for _ in range(3):
        for size in sizes:
            folded.slice_samples = size
            parts = folded.slices(X)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            with torch.inference_mode():
                for t in thetas:
                    folded.forward_slices(problem.space.unflatten(t), parts, call=problem.call)
            seconds = (time.perf_counter() - t0) / points
            rows[size].append((seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / points))
    whole = min(r[0] for r in rows[samples])
    for size, r in rows.items():
        seconds, faults = min(r)
        print(
            f"slice {size:>5} samples  {seconds * 1e3:8.1f} ms/point  {whole / seconds:5.2f}x  {faults:9.0f} page faults/point"
        )


def seconds_per_point(problem, d1, d2) -> float:
    """Wall seconds per point of a 2x2 plane off the centre (every point on the fast path)."""
    t, _ = timed(lambda: surface.plane(problem, d1, d2, span=(0.1, 1), steps=2, use_cache=False))
    return t / 4


def growth(name: str, samples_list: list[int], widths: list[int], repeats: int = 2) -> None:
    """Seconds per point of ours vs samples and vs parameters (width), and the fitted exponents."""
    rows = []
    for width in widths:
        for samples in samples_list:
            model, X, y = workload(name, samples, width=width)
            problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={})
            d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
            t = min(seconds_per_point(problem, d1, d2) for _ in range(repeats))
            rows.append((problem.space.size, samples, t))
            print(
                f"{name} width {width:3d} {problem.space.size:>9,} params {samples:>6} samples  {t * 1e3:8.1f} ms/point"
            )
    logs = np.log(np.array(rows))
    design = np.column_stack([np.ones(len(rows)), logs[:, 1], logs[:, 0]])
    (log_a, p, q), *_ = np.linalg.lstsq(design, logs[:, 2], rcond=None)
    print(f"fit {name}: seconds/point = {np.exp(log_a):.3g} * samples^{p:.2f} * params^{q:.2f}")
    # grid points: a 2x2 and a 4x4 plane off the centre on the middle configuration
    model, X, y = workload(name, samples_list[len(samples_list) // 2], width=widths[len(widths) // 2])
    problem = Problem(model, nn.functional.cross_entropy, (X, y), metrics={})
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
    small = min(timed(lambda: surface.plane(problem, d1, d2, span=(0.1, 1), steps=2, use_cache=False))[0] for _ in "ab")
    large = min(timed(lambda: surface.plane(problem, d1, d2, span=(0.1, 1), steps=4, use_cache=False))[0] for _ in "ab")
    print(f"fit {name}: seconds = c * points^{np.log(large / small) / np.log(4):.2f} (4 -> 16 points)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="cnn,resnet")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--resnet-samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--growth", action="store_true")
    parser.add_argument("--no-compare", action="store_true", help="skip the side-by-side planes")
    parser.add_argument("--slices", action="store_true", help="time the folded forward per slice size")
    parser.add_argument("--no-before", action="store_true", help="skip 'ours before' (slow on large planes)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("LANDSCAPE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    if not torch.cuda.is_available():
        print("# CUDA not available: GPU figures not measured")
    rows = []
    for name in args.workloads.split(","):
        samples = args.resnet_samples if name == "resnet" else args.samples
        if not args.no_compare:
            rows.append(compare(name, samples, args.steps, args.repeats, before=not args.no_before))
        if args.ablation:
            ablation(name, min(samples, 256), 3, args.compile)
        if args.slices:
            slice_sweep(name, samples)
        if args.growth:
            growth(name, [64, 128, 256], [8, 16, 32] if name == "resnet" else [8, 16, 32])
    print(f"\n# load average {os.getloadavg()[0]:.1f} at end")
    for r in rows:
        print(
            f"SUMMARY {r['name']} params={r['params']} samples={r['samples']} steps={r['steps']} "
            f"vs_loss_landscapes={r['vs_peer_best']:.2f}x/{r['vs_peer_median']:.2f}x "
            f"vs_loop={r['vs_loop_best']:.2f}x/{r['vs_loop_median']:.2f}x (best/median) "
            f"vs_before={r['vs_before_best']:.2f}x "
            f"max_rel={r['max_rel_vs_loop']:.1e}"
        )


if __name__ == "__main__":
    main()
