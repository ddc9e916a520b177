"""The actor behind ``ray_executor.RayExecutor``: one Ray worker process holding built problems.

``Worker`` is a plain class; the executor wraps it with ``ray.remote`` (``max_concurrency=2``,
so ``cancel`` runs beside a running ``evaluate``). A worker builds each ``Problem`` once and
keeps the last few (``KEEP``), keyed by the driver's key for that problem; the vectors of a
request (centre and basis) are kept for the request. It never writes the disk cache: values
go back to the driver.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import OrderedDict

import numpy as np
import torch

KEEP = 4  # problems kept per worker


def _on_device(problem, device: str):
    """``problem`` with its model and data on ``device`` (the same values; as the dashboard does)."""
    return problem.on_device(device)


class _Shard:
    """The batches ``indices`` of a ``LossFunction``'s (lazily read) batches: this worker's shard."""

    def __init__(self, batches, indices):
        self.batches = batches
        self.indices = frozenset(indices)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if i in self.indices:
                yield batch

    def __len__(self) -> int:
        return len(self.indices)


def build_reference(reference: str):
    """The problem a ``RayExecutor.remember`` reference names (loaded on this worker)."""
    target, _, which = reference.partition("#")
    kind, _, name = target.partition(":")
    if kind == "demo":
        from .demos import load

        workspace = load(name)
    else:
        from .spec import load_spec

        workspace = load_spec(name)
    problem = workspace.compare if which == "B" else workspace.problem
    if problem is None:
        raise ValueError(f"{reference!r} has no model {which or 'A'}.")
    return problem


class Worker:
    """One actor: evaluates chunks of points and holds shards of data for Hessian products."""

    def __init__(self, device: str = "cpu", cpus: float = 1):
        torch.set_num_threads(max(1, int(cpus)))
        self.device = device
        self.problems: OrderedDict = OrderedDict()
        self.vectors: tuple | None = None
        self.cancels: dict[str, threading.Event] = {}
        self.shards: dict = {}
        self.builds: dict[str, int] = {}  # how often each problem was built here (once, unless evicted)
        self._lock = threading.Lock()

    def pid(self) -> int:
        return os.getpid()

    def built(self, key: str) -> int:
        """How many times this worker built the problem ``key``."""
        return self.builds.get(key, 0)

    def peak_rss(self) -> int:
        """Peak resident memory of this process in bytes."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _problem(self, key: str, how: list):
        with self._lock:
            if key in self.problems:
                self.problems.move_to_end(key)
                return self.problems[key]
        kind, *rest = how[0]
        if kind == "object":
            import ray

            problem = ray.get(rest[0])
        else:
            reference, model_hash, data_hash = rest
            problem = build_reference(reference)
            if problem.model_hash() != model_hash or problem.data_fingerprint() != data_hash:
                raise ValueError(
                    f"the worker's build of {reference!r} differs from the driver's (other weights or data): "
                    "install the same code, checkpoints and data on every node."
                )
        problem = _on_device(problem, self.device)
        with self._lock:
            self.builds[key] = self.builds.get(key, 0) + 1
            self.problems[key] = problem
            while len(self.problems) > KEEP:
                self.problems.popitem(last=False)
        return problem

    def _event(self, run: str) -> threading.Event:
        with self._lock:
            return self.cancels.setdefault(run, threading.Event())

    def cancel(self, run: str) -> None:
        """Stop ``run`` at this worker's next evaluator chunk (also one not started yet)."""
        self._event(run).set()

    def forget(self, run: str) -> None:
        with self._lock:
            self.cancels.pop(run, None)

    def evaluate(self, run, key, how, vectors, coeffs: np.ndarray, splits, buffers, memory_budget):
        """``(values, seconds)``: ``evaluate_points`` on this chunk, checking ``run``'s cancel."""
        from .evaluate import evaluate_points

        problem = self._problem(key, how)
        if self.vectors is None or self.vectors[0] != vectors[0]:
            import ray

            center, basis = ray.get(vectors[0])
            self.vectors = (vectors[0], center.to(problem.device), None if basis is None else basis.to(problem.device))
        _, center, basis = self.vectors
        if buffers is not None:
            import ray

            buffers = {k: v.to(problem.device) for k, v in ray.get(buffers[0]).items()}
        start = time.perf_counter()
        values = evaluate_points(problem, center, basis, coeffs, splits, None, self._event(run), buffers, memory_budget)
        return values, time.perf_counter() - start

    # -- shards of data for Hessian products ---------------------------------------------------
    def setup_shard(self, session, key, how, split, dtype, method, indices) -> None:
        """Hold the batches ``indices`` (of the non-zero-weight batches of ``split``) for ``session``."""
        from .hvp import LossFunction

        problem = self._problem(key, how)
        function = LossFunction(problem, split=split, dtype=getattr(torch, dtype), method=method)
        function.batches = _Shard(function.batches, indices)
        self.shards[session] = function

    def drop_shard(self, session) -> None:
        self.shards.pop(session, None)

    def _theta(self, function, theta_ref):
        import ray

        return ray.get(theta_ref[0]).to(function.device, function.dtype)

    def shard_hvp(self, session, theta_ref, v):
        """``(sum over this shard of c_b H_b v, method used)``."""
        function = self.shards[session]
        hv = function.hvp(self._theta(function, theta_ref), v)
        return hv.detach().cpu(), function.method.value

    def shard_gradient(self, session, theta_ref):
        function = self.shards[session]
        g = function.gradient(self._theta(function, theta_ref))
        return g.detach().cpu(), function.method.value
