"""Evaluation on a Ray cluster: points spread over actors, Hessian products over data shards.

``RayExecutor(address)`` is an ``executors.Executor`` (optional extra ``ray``). Enter it with
``executors.using(...)`` or ``executors.set_default(...)`` and the same calls run on the cluster:

* Points (planes, lines, paths, stacks of points): chunks of points go to a pool of actors,
  one per ``gpus_per_worker`` GPUs or ``cpus_per_worker`` CPUs. Each actor builds the
  ``Problem`` once (``ray_worker.Worker``) from the copy placed in Ray's object store (model
  structure, weights and data, pickled once per problem) or from a demo name or spec
  reference (``remember``), checked against the driver's model and data hashes. Only the
  driver touches the disk cache: finished chunks come back to it and are handed to the
  caller (``on_chunk``) as they arrive. Cancel reaches the actors (each checks it between its
  evaluator chunks); a chunk whose actor died is redone on another (a new actor replaces the
  dead one), so the result equals the uninterrupted one.
* Hessian-vector products: ``H v = sum_b c_b H_b v`` over the batches of a split, so each
  actor holds a shard of the batches (``loss_function``) and the driver sums their products
  in float64 (``ray_shards.ShardedLoss``). Lanczos, Hutch++ and SLQ run unchanged on top.

Values equal the in-process ones to rounding (1e-6 relative in float32); exactly where the
arithmetic is the same (the same chunks of points on the same kind of processor).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from .evaluate import DEFAULT_MEMORY_BUDGET, Cancelled
from .executors import Executor
from .ray_shards import ShardedLoss
from .ray_worker import Worker

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the driver looks at its cancel event while chunks run
MAX_ATTEMPTS = 3  # tries of one chunk (actors dying under it) before the run fails
CHUNKS_PER_WORKER = 4  # a plane is cut into at least this many stored chunks per worker


@dataclass
class Stats:
    """What the executor did (for tests and the bench): chunks run, chunks redone after an
    actor died, actors started, and per chunk ``(seconds on the driver, seconds computing on the actor)``."""

    chunks: int = 0
    redone: int = 0
    actors_started: int = 0
    timings: list[tuple[float, float]] = field(default_factory=list)


class RayExecutor(Executor):
    """Runs the evaluator's chunks and the HVP's shards on Ray actors.

    ``address``: ``"local"`` (start Ray here with this machine's cores), ``"auto"`` (``RAY_ADDRESS``)
    or a cluster address; when Ray is already initialised in this process it is used as it is.
    ``workers``: actors in the pool (default: the cluster's GPUs / ``gpus_per_worker``, else its
    CPUs / ``cpus_per_worker``). ``gpus_per_worker`` > 0 evaluates on ``cuda`` in the actors;
    ``None``: one GPU per actor when the cluster has GPUs, else CPU actors.
    """

    name = "ray"
    remote = True

    def __init__(
        self,
        address: str = "local",
        workers: int | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float | None = None,
    ):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer or None (one per GPU or CPU); got {workers!r}.")
        if not (isinstance(cpus_per_worker, int | float) and cpus_per_worker > 0):
            raise ValueError(f"cpus_per_worker must be a positive number; got {cpus_per_worker!r}.")
        if gpus_per_worker is not None and not (isinstance(gpus_per_worker, int | float) and gpus_per_worker >= 0):
            raise ValueError(
                f"gpus_per_worker must be a number >= 0 or None (1 when the cluster has GPUs); got {gpus_per_worker!r}."
            )
        self.address = address
        self._connect(address)
        if gpus_per_worker is None:
            gpus_per_worker = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.workers = workers or self._default_workers()
        self.stats = Stats()
        self._actors: list = []
        self._lock = threading.RLock()  # one request at a time on the pool
        self._sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._references: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # -- the cluster ----------------------------------------------------------------------------
    @staticmethod
    def _connect(address: str) -> None:
        if ray.is_initialized():
            return
        try:
            if address == "local":
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            elif address == "auto":
                ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as exc:
            raise ValueError(f"could not connect to the Ray cluster at {address!r}: {exc}") from exc

    def _default_workers(self) -> int:
        resources = ray.cluster_resources()
        if self.gpus_per_worker > 0:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))

    def cluster(self) -> dict:
        """``{"nodes": int, "cpus": float, "gpus": float}`` of the live cluster."""
        resources = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return {"nodes": nodes, "cpus": resources.get("CPU", 0.0), "gpus": resources.get("GPU", 0.0)}

    def describe(self) -> str:
        c = self.cluster()
        return f"Ray cluster: {c['nodes']} node(s), {c['cpus']:g} CPUs, {c['gpus']:g} GPUs; {self.workers} workers"

    def _new_actor(self):
        device = "cuda" if self.gpus_per_worker > 0 else "cpu"
        actor = (
            ray.remote(Worker)
            .options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_concurrency=2)
            .remote(device, self.cpus_per_worker)
        )
        self.stats.actors_started += 1
        return actor

    def actors(self) -> list:
        """The pool (started on first use)."""
        with self._lock:
            while len(self._actors) < self.workers:
                self._actors.append(self._new_actor())
            return list(self._actors)

    def _replace(self, dead) -> object:
        with self._lock:
            fresh = self._new_actor()
            self._actors = [fresh if a is dead else a for a in self._actors]
            return fresh

    def shutdown(self) -> None:
        """Stop the pool's actors (Ray itself keeps running)."""
        with self._lock:
            for actor in self._actors:
                ray.kill(actor)
            self._actors = []

    # -- problems on the actors -----------------------------------------------------------------
    def remember(self, problem, reference: str) -> None:
        """Let actors build ``problem`` from ``reference`` (``"demo:NAME"``, ``"demo:NAME#B"``,
        ``"spec:path/to/spec.py:build"``, ``"#B"`` for model B) instead of receiving a copy; the
        data must then be readable on every worker. An actor whose build differs from the
        driver's (model or data hash) refuses to evaluate."""
        kind, _, rest = reference.partition(":")
        if kind not in ("demo", "spec") or not rest:
            raise ValueError(
                f"reference must look like 'demo:NAME' or 'spec:TARGET' (optionally '#B'); got {reference!r}."
            )
        self._references[problem] = reference

    def _source(self, problem) -> tuple[str, list]:
        """``(key, [how to build it])``; the list keeps Ray from resolving the object each call."""
        found = self._sources.get(problem)
        if found is None:
            reference = self._references.get(problem)
            if reference is not None:
                how = ("reference", reference, problem.model_hash(), problem.data_fingerprint())
            else:
                _by_value_spec_modules()
                how = ("object", ray.put(problem))
            found = self._sources[problem] = (uuid.uuid4().hex, [how])
        return found

    # -- points ---------------------------------------------------------------------------------
    def points_per_piece(self, k: int, chunk: int) -> int:
        return max(1, min(chunk, math.ceil(k / (2 * self.workers))))

    def rows_per_chunk(self, steps: int, steps_y: int) -> int:
        local = super().rows_per_chunk(steps, steps_y)
        return max(1, min(local, math.ceil(steps / (CHUNKS_PER_WORKER * self.workers))))

    def run_chunks(
        self,
        problem,
        center,
        basis,
        chunks,
        splits,
        *,
        buffers=None,
        memory_budget=None,
        progress=None,
        cancel=None,
        on_chunk=None,
    ):
        chunks = [np.asarray(c, dtype=np.float64) for c in chunks]
        total = sum(len(c) for c in chunks)
        while not self._lock.acquire(timeout=POLL_S):  # another job has the pool: wait, but heed Cancel
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled before any of {total} points ran (the cluster was busy)")
        try:
            return self._run(problem, center, basis, chunks, splits, buffers, memory_budget, progress, cancel, on_chunk)
        finally:
            self._lock.release()

    def _run(self, problem, center, basis, chunks, splits, buffers, memory_budget, progress, cancel, on_chunk):
        total = sum(len(c) for c in chunks)
        key, how = self._source(problem)
        vectors = [ray.put((center.detach().cpu(), None if basis is None else basis.detach().cpu()))]
        held = None if buffers is None else [ray.put({k: v.detach().cpu() for k, v in buffers.items()})]
        run = uuid.uuid4().hex
        budget = memory_budget or DEFAULT_MEMORY_BUDGET
        results: list = [None] * len(chunks)
        queue, attempts = deque(range(len(chunks))), [0] * len(chunks)
        inflight: dict = {}  # ref -> (actor, index, submitted at)
        idle = self.actors()
        done = 0
        if progress is not None:
            progress(0, total)

        def submit(actor, index):
            ref = actor.evaluate.remote(run, key, how, vectors, chunks[index], splits, held, budget)
            inflight[ref] = (actor, index, time.perf_counter())

        def collect(ref) -> bool:
            """Take a finished chunk; ``False`` if its actor died (the chunk goes back in the queue)."""
            nonlocal done
            actor, index, submitted = inflight.pop(ref)
            try:
                values, seconds = ray.get(ref)
            except RayActorError as exc:
                attempts[index] += 1
                self.stats.redone += 1
                log.warning("a Ray worker died under chunk %d (%s); redoing it on another", index, exc)
                if attempts[index] >= MAX_ATTEMPTS:
                    raise RuntimeError(
                        f"chunk {index} of {len(chunks)} failed {attempts[index]} times as its Ray workers died "
                        "(out of memory on the workers?); finished chunks were kept."
                    ) from exc
                queue.appendleft(index)
                idle.append(self._replace(actor))
                return False
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            self.stats.chunks += 1
            self.stats.timings.append((time.perf_counter() - submitted, seconds))
            results[index] = values
            done += len(chunks[index])
            if on_chunk is not None:
                on_chunk(index, values)
            if progress is not None:
                progress(done, total)
            idle.append(actor)
            return True

        try:
            while queue or inflight:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"cancelled after {done} of {total} points")
                while queue and idle:
                    submit(idle.pop(), queue.popleft())
                ready = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)[0] if inflight else []
                for ref in ready:
                    collect(ref)
        except Cancelled:
            self._stop(run, inflight, collect)
            raise Cancelled(f"cancelled after {done} of {total} points; finished chunks were kept") from None
        except BaseException:
            self._stop(run, inflight, None)
            raise
        finally:
            for actor in self._actors:
                actor.forget.remote(run)
        return results

    def _stop(self, run: str, inflight: dict, collect) -> None:
        """Tell every actor to stop ``run`` and take what finished meanwhile (nothing finished is lost)."""
        for actor in {id(a): a for a, _, _ in inflight.values()}.values():
            actor.cancel.remote(run)
        for ref in list(inflight):
            try:
                ray.get(ref, timeout=600)
            except (RayTaskError, RayActorError, GetTimeoutError):
                inflight.pop(ref, None)
                continue
            if collect is not None:
                try:
                    collect(ref)
                except Exception:  # a failing hand-over must not hide the cancel
                    log.exception("storing a chunk that finished during cancel failed")
            else:
                inflight.pop(ref, None)

    # -- Hessian-vector products ------------------------------------------------------------------
    def loss_function(self, problem, split="train", dtype=None, method="auto"):
        return ShardedLoss(self, problem, split, dtype, method)

    def peak_memory(self) -> list[int]:
        """Peak resident memory of each actor in bytes (``getrusage``)."""
        return ray.get([a.peak_rss.remote() for a in self.actors()])


def _by_value_spec_modules() -> None:
    """Spec files are imported under names only this process knows (``spec._import_file``): their
    classes and functions travel by value, so workers need not import the spec."""
    for name, module in list(sys.modules.items()):
        if name.startswith("landscape_spec_") and module is not None:
            ray.cloudpickle.register_pickle_by_value(module)
