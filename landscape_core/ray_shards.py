"""Hessian-vector products over data shards on Ray actors (``RayExecutor.loss_function``).

``H v = sum_b c_b H_b v`` over the batches of a split (``hvp.LossFunction``), so each actor holds
a shard of the batches (``ray_worker.Worker.setup_shard``) and returns its part of the sum; the
driver adds the parts in float64. ``hvp.HessianOperator`` uses a ``ShardedLoss`` exactly like a
``LossFunction``, so Lanczos, Hutch++ and SLQ run unchanged on top. A shard whose actor died is
rebuilt on a new actor and its product asked again.
"""

from __future__ import annotations

import logging
import uuid

import ray
import torch
from ray.exceptions import RayActorError, RayTaskError

from .hvp import HVPMethod, choice, resolve_dtype

__all__ = ["ShardedLoss"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # tries of one product (actors dying under it) before it fails


class ShardedLoss:
    """``hvp.LossFunction``'s ``hvp``/``gradient`` with the split's batches sharded over the actors.

    Batch ``b`` (of the non-zero-weight batches, in order) lives on actor ``b % shards``; each
    actor returns ``sum_{b in shard} c_b H_b v`` and the driver adds them in float64.
    """

    def __init__(self, executor, problem, split: str, dtype, method):
        if split not in problem.splits:
            raise ValueError(f"split {split!r} is not available; this problem has {list(problem.splits)}.")
        self.executor = executor
        self.problem = problem
        self.split = split
        self.dtype = resolve_dtype(dtype) or problem.dtype
        self.method = choice(HVPMethod, method, "hvp_method")
        self.device = problem.device
        batches = sum(1 for c in problem.coefficients(split, "loss") if c != 0.0)
        actors = executor.actors()
        count = max(1, min(len(actors), batches))
        self.session = uuid.uuid4().hex
        self.shards = [list(range(i, batches, count)) for i in range(count)]
        self.key, self.how = executor._source(problem)
        self.owners = actors[:count]
        ray.get([self._setup(a, i) for i, a in enumerate(self.owners)])
        self._theta: tuple[torch.Tensor, object] | None = None

    def _setup(self, actor, shard: int):
        dtype = str(self.dtype).replace("torch.", "")
        return actor.setup_shard.remote(
            self.session, self.key, self.how, self.split, dtype, self.method.value, self.shards[shard]
        )

    def _theta_ref(self, theta: torch.Tensor):
        if self._theta is None or self._theta[0] is not theta:
            self._theta = (theta, ray.put(theta.detach().cpu()))
        return [self._theta[1]]

    def _sum(self, call: str, theta: torch.Tensor, *args) -> torch.Tensor:
        theta_ref = self._theta_ref(theta)
        parts: list = [None] * len(self.owners)
        pending = {i: getattr(a, call).remote(self.session, theta_ref, *args) for i, a in enumerate(self.owners)}
        for _ in range(MAX_ATTEMPTS):
            retry = {}
            for i, ref in pending.items():
                try:
                    parts[i], method = ray.get(ref)
                    self.method = HVPMethod(method)
                except RayActorError:
                    self.executor.stats.redone += 1
                    log.warning("a Ray worker died holding data shard %d; rebuilding the shard on a new one", i)
                    self.owners[i] = self.executor._replace(self.owners[i])
                    ray.get(self._setup(self.owners[i], i))
                    retry[i] = getattr(self.owners[i], call).remote(self.session, theta_ref, *args)
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
            if not retry:
                break
            pending = retry
        else:
            raise RuntimeError(f"Hessian shards failed {MAX_ATTEMPTS} times as their Ray workers died.")
        total = torch.stack([p.to(torch.float64) for p in parts]).sum(dim=0)
        return total.to(self.device, self.dtype)

    def hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H(theta) v`` ``(P,)``: the shards' products summed."""
        return self._sum("shard_hvp", theta, v.detach().cpu())

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient ``(P,)`` of the full-split loss: the shards' gradients summed."""
        return self._sum("shard_gradient", theta)

    def __del__(self):
        try:
            for actor in self.owners:
                actor.drop_shard.remote(self.session)
        except Exception:
            pass
