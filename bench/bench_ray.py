"""Ray executor vs in-process: a plane of a net where the forward pass dominates, the fixed cost
per chunk, how it grows with the number of chunks, and peak memory of driver and workers.

    python bench/bench_ray.py                      # ResNet-20 on 256 synthetic 32x32 images, 7x7 plane
    python bench/bench_ray.py --steps 9 --samples 512 --workers 2

In-process runs with torch's default threads (all cores); Ray with ``--workers`` one-CPU actors
(one thread each) on a local Ray instance with this machine's cores. Prints one JSON object;
bench/README.md quotes it. Also times one ResNet-56 forward pass per image (for the estimate of
Li et al.'s 51x51 plane in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Problem, directions, executors
from landscape_core.nets import resnet_cifar, synthetic_images
from landscape_core.surface import plane


def resnet_problem(depth: int, samples: int) -> Problem:
    X, y = synthetic_images(samples, seed=0)
    return Problem(resnet_cifar(depth, seed=0), F.cross_entropy, (X, y), batch_size=min(samples, 256))


def tiny_problem() -> Problem:
    torch.manual_seed(0)
    X, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    return Problem(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)), F.cross_entropy, (X, y))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def per_image_seconds(depth: int, images: int = 64) -> float:
    """Seconds per image of one eval-mode forward pass of a CIFAR ResNet (best of 3)."""
    model = resnet_cifar(depth, seed=0).eval()
    X, _ = synthetic_images(images, seed=1)
    best = float("inf")
    with torch.no_grad():
        model(X[:8])
        for _ in range(3):
            best = min(best, timed(lambda: model(X))[0])
    return best / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray

    from landscape_core.ray_executor import RayExecutor

    report: dict = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), **vars(args)}
    problem = resnet_problem(args.depth, args.samples)
    d1, d2 = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    kwargs = {"steps": args.steps, "use_cache": False}
    points = args.steps**2

    local_s, local = timed(lambda: plane(problem, d1, d2, **kwargs))
    report["in_process_s"] = round(local_s, 3)
    report["in_process_s_per_point"] = round(local_s / points, 4)

    startup_s, _ = timed(lambda: ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False))
    executor = RayExecutor("local", workers=args.workers)
    report["ray_init_s"] = round(startup_s, 2)
    with executors.using(executor):
        # first call: actors start, import torch and build the problem once
        warm_s, _ = timed(lambda: plane(problem, d1, d2, span=(-0.5, 0.5), steps=2, use_cache=False))
        report["actors_warm_up_s"] = round(warm_s, 2)
        executor.stats.timings.clear()
        ray_s, remote = timed(lambda: plane(problem, d1, d2, **kwargs))
    report["ray_s"] = round(ray_s, 3)
    report["ray_chunks"] = len(executor.stats.timings)
    report["speed_up_in_process_over_ray"] = round(local_s / ray_s, 3)
    overheads = [wall - compute for wall, compute in executor.stats.timings]
    report["overhead_per_chunk_ms_median"] = round(1e3 * statistics.median(overheads), 2)
    report["max_abs_difference"] = float(max(np.abs(remote.values[q] - local.values[q]).max() for q in local.values))

    # fixed cost per chunk: a plane whose points cost almost nothing, cut into more and more chunks
    tiny = tiny_problem()
    t1, t2 = directions.random(tiny, count=2, seed=0)
    sweep = []
    with executors.using(executor):
        plane(tiny, t1, t2, steps=4, use_cache=False)  # the tiny problem reaches the actors once
        for rows in (32, 16, 8, 4, 2, 1):
            seconds, _ = timed(lambda rows=rows: plane(tiny, t1, t2, steps=32, use_cache=False, rows_per_chunk=rows))
            sweep.append({"chunks": 32 // rows, "seconds": round(seconds, 4)})
    chunks = np.array([s["chunks"] for s in sweep], dtype=float)
    seconds = np.array([s["seconds"] for s in sweep])
    slope, intercept = np.polyfit(chunks, seconds, 1)
    report["chunk_sweep"] = sweep
    report["seconds_per_extra_chunk_fit_ms"] = round(1e3 * slope, 2)
    report["fixed_request_s_fit"] = round(intercept, 4)

    report["peak_rss_driver_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["peak_rss_workers_mib"] = [round(b / 2**20, 1) for b in executor.peak_memory()]
    report["resnet56_cpu_s_per_image_one_process"] = round(per_image_seconds(56), 5)
    executor.shutdown()
    ray.shutdown()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
