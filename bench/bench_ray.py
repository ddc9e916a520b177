"""Ray executor vs in-process: a plane of a net where the forward pass dominates, the fixed cost
per chunk, how it grows with the number of chunks, and peak memory of driver and workers.

    python bench/bench_ray.py                      # ResNet-20 on 64 synthetic 32x32 images, 5x5 plane
    python bench/bench_ray.py --steps 9 --samples 512 --workers 2 --repeats 3

In-process runs with torch's default threads (all cores) and with one thread; Ray with
``--workers`` one-CPU actors (one thread each) on a local Ray instance with this machine's
cores; the three are interleaved ``--repeats`` times. Prints one JSON object;
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
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    from landscape_core.ray_executor import RayExecutor

    report: dict = {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), **vars(args)}
    problem = resnet_problem(args.depth, args.samples)
    d1, d2 = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    kwargs = {"steps": args.steps, "use_cache": False}
    points = args.steps**2

    startup_s, _ = timed(lambda: ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False))
    executor = RayExecutor("local", workers=args.workers)
    report["ray_init_s"] = round(startup_s, 2)
    warm = {"span": (-0.5, 0.5), "steps": 2, "use_cache": False}
    plane(problem, d1, d2, **warm)  # in-process warm-up (first forward passes, the runner's probes)
    with executors.using(executor):
        # first call: actors start, import torch and build the problem once
        warm_s, _ = timed(lambda: plane(problem, d1, d2, **warm))
    report["actors_warm_up_s"] = round(warm_s, 2)
    # interleaved (so all see the same load): in-process on all cores, in-process on one thread, Ray
    runs: dict[str, list[float]] = {"in_process": [], "in_process_1_thread": [], "ray": []}
    threads = torch.get_num_threads()
    for _ in range(args.repeats):
        seconds, local = timed(lambda: plane(problem, d1, d2, **kwargs))
        runs["in_process"].append(seconds)
        torch.set_num_threads(1)
        runs["in_process_1_thread"].append(timed(lambda: plane(problem, d1, d2, **kwargs))[0])
        torch.set_num_threads(threads)
        executor.stats.timings.clear()
        with executors.using(executor):
            seconds, remote = timed(lambda: plane(problem, d1, d2, **kwargs))
        runs["ray"].append(seconds)
    for name, values in runs.items():
        report[f"{name}_s_best"] = round(min(values), 3)
        report[f"{name}_s_median"] = round(statistics.median(values), 3)
    report["in_process_s_per_point_best"] = round(min(runs["in_process"]) / points, 4)
    report["ray_chunks"] = len(executor.stats.timings)
    report["ratio_in_process_over_ray_best"] = round(min(runs["in_process"]) / min(runs["ray"]), 3)
    report["ratio_in_process_1_thread_over_ray_best"] = round(min(runs["in_process_1_thread"]) / min(runs["ray"]), 3)
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
