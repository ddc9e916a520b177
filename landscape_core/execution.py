"""How chunks of points run through the model: the execution strategies of the evaluator.

``evaluate.evaluate_points`` hands each chunk of points ``theta_i = center + coeffs[i] @ basis``
to a ``Runner``, which returns the model outputs; the evaluator turns them into losses and
metrics. The strategies (``Strategy``):

* ``AFFINE``: for an ``nn.Sequential`` that starts with a ``Linear``/``Conv`` layer, that layer's
  output is affine in the point, so it is computed once for the centre and once per basis
  vector and combined per point ("affine prefix"); the dominant matmul of a small MLP then
  disappears. On CPU the combination reuses ``z_center + alpha z_1`` along a grid row (one
  fused ``addcmul`` per group of points), the rest of the net runs with batched matmuls
  (a "plan", ``make_plan``/``run_plan``) and the last Linear is computed class-major
  (``W x^T``);
* ``VMAP``: the whole model under ``torch.func.vmap`` over points (the default on CUDA);
* ``LOOP``: one ``functional_call`` per point (train mode, models that refuse vmap, and CPU
  when the affine prefix does not apply: faster than vmap there);
* ``FOLDED``: convolution and BatchNorm nets in eval mode: BatchNorm folded into its
  convolution per point, channels-last, under ``inference_mode`` (``landscape_core.folding``);
  one point per forward on CPU, vmapped points on CUDA.

The centre point (all coefficients 0) runs alone with freshly allocated parameters, in the
shapes of the base evaluation, so a grid's centre cell equals ``problem.base`` bit for bit.
Chunk size and the affine prefix's cache follow a memory budget.
"""

from __future__ import annotations

import logging
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from .folding import FoldedForward

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # bytes of activations per chunk
MAX_CHUNK = 256
MAX_AFFINE_BASIS = 3  # basis vectors up to which the affine prefix is used
GROUP_BYTES = 4 * 2**20  # first-layer activations of the points run through one batched matmul

logger = logging.getLogger(__name__)


class Strategy(str, Enum):
    """How a chunk of points runs through the model (chosen automatically)."""

    AFFINE = "affine"  # first layer combined from precomputed outputs, rest vmapped
    VMAP = "vmap"  # whole model vmapped over points
    LOOP = "loop"  # one functional_call per point
    FOLDED = "folded"  # BatchNorm folded into convolutions, channels-last (conv/BN nets)


class Runner:
    """Runs chunks of points through the model with the fastest strategy that works.

    Eval mode, a net with convolutions or foldable BatchNorms that ``torch.fx`` traces: the
    folded strategy (per point on CPU, vmapped points on CUDA). Otherwise CPU: the affine
    prefix with batched matmuls when the model is an ``nn.Sequential`` starting with a
    ``Linear``/``Conv`` layer and the basis has at most ``MAX_AFFINE_BASIS`` vectors (lines,
    planes), else a per-point loop (faster than ``vmap`` on CPU); CUDA: vmap over points.
    Train mode: the loop. ``problem.strategy = "affine" | "vmap" | "loop" | "folded"`` forces
    one (tests, benchmarks); a failing strategy falls back with a logged warning.
    """

    def __init__(
        self,
        problem,
        center,
        basis,
        buffers,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        batched: bool | None = None,
    ):
        self.problem = problem
        # several points per forward (vmap) in the folded strategy: the default on CUDA only,
        # where one grouped convolution beats a loop (on CPU it was measured 2x slower)
        self.batched = problem.device.type != "cpu" if batched is None else batched
        self._prepared: dict = {}
        self.model = problem.local_model()  # this thread's copy of the structure (private_model)
        self.memory_budget = memory_budget
        self.space = problem.space
        self.center = center
        self.basis = basis
        self.buffers = buffers
        self.frozen = problem.space.frozen
        self._prefix_cache: dict = {}
        self._partial_cache: dict = {}
        self._scratch: dict = {}
        self.split_at = self._affine_split()
        self.strategy = self._choose()

    # -- strategy -----------------------------------------------------------------
    def _choose(self) -> Strategy:
        forced = getattr(self.problem, "strategy", None)
        if forced is not None:
            allowed = [m.value for m in Strategy]
            if forced not in allowed:
                raise ValueError(f"problem.strategy must be one of {allowed} or None; got {forced!r}.")
            if Strategy(forced) is Strategy.AFFINE and self.split_at is None:
                return Strategy.LOOP  # no affine first layer to reuse: the model is not such a Sequential
            if Strategy(forced) is Strategy.FOLDED and self._folded() is None:
                return Strategy.LOOP  # nothing to fold and no convolution: the loop is the same work
            return Strategy(forced)
        if self.problem.mode.value == "train":
            return Strategy.LOOP
        if self._folded() is not None:
            return Strategy.FOLDED
        if self.problem.device.type != "cpu":
            return Strategy.VMAP
        # the affine prefix pays off for lines and planes (a few basis vectors shared by many
        # points); for a stack of unrelated points (basis = the points) it would only add work
        few = self.basis.shape[0] <= MAX_AFFINE_BASIS
        if self.split_at is None or not few or self._prefix_bytes() > self.memory_budget:
            return Strategy.LOOP
        return Strategy.AFFINE

    def _folded(self) -> FoldedForward | None:
        if not hasattr(self, "_folded_forward"):
            self._folded_forward = FoldedForward.build(self.problem)
        return self._folded_forward

    def _prefix_bytes(self) -> int:
        """Memory the affine path keeps: first-layer outputs at the centre, along each basis
        vector and one partial sum, for every sample of every split."""
        index, layer = self.split_at
        x = self.problem.splits["train"].head(2)[0]
        with torch.no_grad():
            for module in list(self.model)[: index + 1]:
                x = module(x)
        per_sample = x[0].numel() * x.element_size()
        samples = sum(s.n for s in self.problem.splits.values())
        return (2 + self.basis.shape[0]) * samples * per_sample

    def _affine_split(self):
        """``(index, layer)`` of the first parametrised layer of a Sequential if it is affine."""
        model = self.model
        if not isinstance(model, nn.Sequential) or self.problem.mode.value == "train":
            return None
        if getattr(self.problem, "output", None) is not None:
            return None  # output= picks from one point's output; the affine path stacks points
        for i, module in enumerate(model):
            if not list(module.parameters(recurse=True)):
                if list(module.buffers()):
                    return None
                continue
            if type(module) in (nn.Linear, nn.Conv1d, nn.Conv2d) and i + 1 < len(model):
                names = [f"{i}.{n}" for n, _ in module.named_parameters()]
                if all(n in self.space._by_name for n in names):
                    return i, module
            return None
        return None

    def chunk_size(self, budget: int) -> int:
        """Points per chunk so that activations of one batch stay within ``budget`` bytes."""
        per_sample = activation_numel(self.problem)
        largest_batch = max(min(s.batch_size, s.n) for s in self.problem.splits.values())
        elem = torch.finfo(self.problem.dtype).bits // 8
        per_point = (3 * per_sample * largest_batch + 2 * self.space.size) * elem
        return int(max(1, min(MAX_CHUNK, budget // max(per_point, 1))))

    # -- forward ----------------------------------------------------------------------
    def thetas(self, c: torch.Tensor) -> torch.Tensor:
        if self.basis.shape[0] == 0:
            return self.center.expand(c.shape[0], -1)
        # one fused pass (center + c @ basis): on a 22.7M-parameter space making the points was
        # memory traffic as large as the forward passes; addmm writes each point once
        return torch.addmm(self.center, c.to(self.basis.dtype), self.basis)

    def outputs(self, c: torch.Tensor, X: torch.Tensor, batch_key) -> list[torch.Tensor]:
        """Model outputs for the chunk's points on one batch, as consecutive segments
        ``(g, n_b, ...)`` (their ``g`` add up to the chunk's points)."""
        thetas = self.thetas(c)
        if self.strategy is Strategy.AFFINE:
            try:
                return self._affine(c, thetas, X, batch_key)
            except Exception as exc:
                self.strategy = Strategy.LOOP if self.problem.device.type == "cpu" else Strategy.VMAP
                logger.warning("affine-prefix evaluation failed (%s); using %s", exc, self.strategy.value)
        if self.strategy is Strategy.FOLDED:
            try:
                return self._folded_outputs(c, thetas, X, batch_key)
            except Exception as exc:
                self.strategy = Strategy.LOOP if self.problem.device.type == "cpu" else Strategy.VMAP
                logger.warning("folded evaluation failed (%s); using %s", exc, self.strategy.value)
        segments = []
        for start, stop in centre_apart(c):
            # a fresh (aligned) stack per segment; the centre alone, as in the base evaluation
            part = thetas[start:stop] if stop - start > 1 or c[start].any() else thetas[start:stop].clone()
            segments.append(self._whole_model(part, X))
        return segments

    def _folded_outputs(self, c, thetas, X, batch_key) -> list[torch.Tensor]:
        """Outputs with BatchNorm folded (``landscape_core.folding``); the centre on the plain
        path, as in the base evaluation, so the centre cell equals ``problem.base`` bit for bit."""
        folded = self._folded()
        if batch_key not in self._prepared:
            # this batch in the graph's layout: whole for the vmapped path, in slices for the loop
            self._prepared = {batch_key: folded.prepare(X) if self.batched else folded.slices(X)}
        prepared = self._prepared[batch_key]
        segments = []
        for start, stop in centre_apart(c):
            if stop - start == 1 and not c[start].any():
                segments.append(self.problem.forward(thetas[start].clone(), X, self.buffers).unsqueeze(0))
                continue
            params = self.space.unflatten(thetas[start:stop])
            with torch.inference_mode():
                if self.batched:
                    out = folded.forward_batched(params, X, self.buffers, call=self.problem.call)
                else:
                    rows = [{n: v[i] for n, v in params.items()} for i in range(stop - start)]
                    out = torch.stack(
                        [folded.forward_slices(p, prepared, self.buffers, self.problem.call) for p in rows]
                    )
            segments.append(out)
        return segments

    def _whole_model(self, thetas: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        if self.strategy is Strategy.VMAP:
            try:
                return self._vmap(self.model, thetas, X)
            except Exception as exc:
                self.strategy = Strategy.LOOP
                logger.warning("vmap over points failed (%s); using a per-point loop", exc)
        return torch.stack([self.problem.forward(t, X, self.buffers) for t in thetas])

    def _state(self, params: dict) -> dict:
        return {**self.buffers, **self.frozen, **params}

    def _vmap(self, module: nn.Module, thetas: torch.Tensor, X: torch.Tensor, batched_input: bool = False):
        params = self.space.unflatten(thetas)
        if module is not self.model:
            own = {n for n, _ in module.named_parameters()}
            params = {n: v for n, v in params.items() if n in own}

        def one(p, x):
            return self.problem.call(module, self._state(p), x)

        return torch.func.vmap(one, in_dims=(0, 0 if batched_input else None))(params, X)

    def _prefix(self, X: torch.Tensor, batch_key):
        """First-layer outputs at the centre and along each basis vector, once per batch."""
        if batch_key not in self._prefix_cache:
            index, layer = self.split_at
            x = X
            for module in list(self.model)[:index]:
                x = module(x)

            def layer_out(theta: torch.Tensor) -> torch.Tensor:
                p = self.space.unflatten(theta)
                return _apply_layer(layer, p[f"{index}.weight"], p.get(f"{index}.bias"), x)

            z_basis = torch.stack([layer_out(d) for d in self.basis]) if self.basis.shape[0] else None
            self._prefix_cache[batch_key] = (layer_out(self.center), z_basis)
        return self._prefix_cache[batch_key]

    def _affine(self, c, thetas, X, batch_key) -> list[torch.Tensor]:
        index, _ = self.split_at
        z_center, z_basis = self._prefix(X, batch_key)
        rest = self.model[index + 1 :]
        if self.strategy is Strategy.VMAP or self.problem.device.type != "cpu":
            z = z_center if z_basis is None else z_center + torch.tensordot(c.to(z_basis.dtype), z_basis, dims=1)
            return [self._vmap(rest, thetas, z.expand(c.shape[0], *z_center.shape), batched_input=True)]
        params = self.space.unflatten(thetas)
        plan = self._plan(rest)
        group = max(1, GROUP_BYTES // (z_center.numel() * z_center.element_size()))
        # one scratch buffer for the first-layer outputs of a group, reused (no page faults)
        scratch = self._scratch.get(z_center.shape)
        if scratch is None:
            scratch = self._scratch[z_center.shape] = torch.empty(
                (group, *z_center.shape), dtype=z_center.dtype, device=z_center.device
            )
        rows = c.tolist()
        outputs = []
        start = 0
        while start < len(rows):
            # a run of points sharing all but the last coefficient (a grid row: same alpha)
            # the centre (all coefficients 0) runs alone, in the same shapes as the base value
            # (problem.base), so elementwise kernels round it the same way: centre cell == base
            lead = rows[start][:-1]
            stop = start + 1
            if any(rows[start]):
                while stop < len(rows) and stop - start < group and rows[stop][:-1] == lead and any(rows[stop]):
                    stop += 1
            partial = self._partial(batch_key, lead, z_center, z_basis)
            z = scratch[: stop - start]
            if z_basis is None:
                z.copy_(partial.unsqueeze(0).expand_as(z))
            else:
                last = c[start:stop, -1].to(partial.dtype).view(-1, *([1] * partial.dim()))
                torch.addcmul(partial.unsqueeze(0), last, z_basis[-1].unsqueeze(0), out=z)
            group_params = {n: v[start:stop] for n, v in params.items()}
            if not any(rows[start]):
                # small matmuls may take alignment-dependent paths: give the centre freshly
                # allocated (aligned) parameters, as for the base value, so it rounds the same
                group_params = {n: v.clone() for n, v in group_params.items()}
            out = run_plan(plan, group_params, self._state, z)
            if out.untyped_storage().data_ptr() == scratch.untyped_storage().data_ptr():
                out = out.clone()  # the scratch buffer is overwritten by the next group
            outputs.append(out)
            start = stop
        return outputs

    def _partial(self, batch_key, lead: list[float], z_center, z_basis):
        """``z_center + sum_j lead[j] z_basis[j]``, kept for the last ``lead`` of each batch."""
        cached = self._partial_cache.get(batch_key)
        if cached is not None and cached[0] == lead:
            return cached[1]
        z = z_center
        for j, coef in enumerate(lead):
            if coef != 0.0:
                z = torch.add(z, z_basis[j], alpha=coef)
        self._partial_cache[batch_key] = (lead, z)
        return z

    def _plan(self, seq: nn.Sequential):
        if not hasattr(self, "_plan_cache"):
            self._plan_cache = make_plan(seq, self.space)
        return self._plan_cache


def centre_apart(c: torch.Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` runs of the chunk's points, with every all-zero row on its own."""
    zero = (~(c != 0).any(dim=1)).tolist()
    runs, start = [], 0
    for i, is_zero in enumerate(zero):
        if is_zero:
            if i > start:
                runs.append((start, i))
            runs.append((i, i + 1))
            start = i + 1
    if start < len(zero):
        runs.append((start, len(zero)))
    return runs


def _apply_layer(layer: nn.Module, weight, bias, x):
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    return layer._conv_forward(x, weight, bias)


def make_plan(seq: nn.Sequential, space) -> list[tuple]:
    """Steps to run ``seq`` with per-point parameters without swapping module state.

    ``("layer", module, weight_name, bias_name)`` calls the functional form of a
    Linear/Conv; ``("relu",)`` an in-place ReLU on a fresh tensor; ``("plain", module)``
    a parameter-free module; ``("call", module, prefix)`` goes through ``functional_call``.
    """
    plan = []
    for name, module in seq._modules.items():
        own = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if not own and not list(module.buffers()):
            plan.append(("relu",) if type(module) is nn.ReLU else ("plain", module))
        elif type(module) in (nn.Linear, nn.Conv1d, nn.Conv2d) and all(n in space._by_name for n in own):
            bias = f"{name}.bias" if f"{name}.bias" in own else None
            plan.append(("layer", module, f"{name}.weight", bias))
        else:
            plan.append(("call", module, name + "."))
    return plan


def run_plan(plan, params: dict, state, x: torch.Tensor) -> torch.Tensor:
    """Run a plan from ``make_plan`` on ``x`` ``(g, n, ...)``: ``g`` points, each with its own
    parameters ``params[name]`` ``(g, *shape)``, on the same ``n`` samples. ``x`` must be a
    fresh tensor (it is overwritten in place). Linear layers run as one batched matmul."""
    g = x.shape[0]
    for position, step in enumerate(plan):
        kind = step[0]
        if kind == "relu":
            x = torch.relu_(x)
        elif kind == "plain":
            n = x.shape[1]
            y = step[1](x.reshape(g * n, *x.shape[2:]))
            x = y.reshape(g, n, *y.shape[1:])
        elif kind == "layer":
            _, module, weight, bias = step
            w, b = params[weight], (params[bias] if bias else None)
            if isinstance(module, nn.Linear) and position == len(plan) - 1 and x.dim() == 3:
                # last layer: (g, out, n) = W x^T + b, stored class-major, returned as a (g, n, out)
                # view; a narrow output (10 classes) multiplies about 2x faster this way round and
                # cross-entropy's softmax over a strided class axis is much faster than over rows of 10
                xt = x.transpose(1, 2)
                y = torch.bmm(w, xt) if b is None else torch.baddbmm(b.unsqueeze(2), w, xt)
                x = y.transpose(1, 2)
            elif isinstance(module, nn.Linear):
                flat = x.reshape(g, -1, x.shape[-1])
                wt = w.transpose(1, 2)
                y = torch.bmm(flat, wt) if b is None else torch.baddbmm(b.unsqueeze(1), flat, wt)
                x = y.reshape(*x.shape[:-1], y.shape[-1])
            else:
                x = torch.stack([_apply_layer(module, w[i], None if b is None else b[i], x[i]) for i in range(g)])
        else:
            _, module, prefix = step
            outs = []
            for i in range(g):
                point = {name: value[i] for name, value in params.items()}
                sub = {k[len(prefix) :]: v for k, v in state(point).items() if k.startswith(prefix)}
                outs.append(torch.func.functional_call(module, sub, (x[i],)))
            x = torch.stack(outs)
    return x


def activation_numel(problem) -> int:
    """Sum of output sizes of all leaf modules for one sample (a proxy for activation memory)."""
    cached = getattr(problem, "_activation_numel", None)
    if cached is not None:
        return cached
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output[0].numel() if output.dim() else 1

    model = problem.local_model()  # the copy problem.forward runs in this thread
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        X = problem.splits["train"].head(2)[0]  # two samples: train-mode BatchNorm refuses one
        with torch.no_grad():
            problem.forward(problem.theta0, X)
    finally:
        for h in handles:
            h.remove()
    problem._activation_numel = max(total, 1)
    return problem._activation_numel
