"""Hessian-vector products of a problem's full-split loss.

``HessianOperator(problem)`` is the symmetric linear map ``v -> H v`` with
``H = d^2 L / d theta^2`` at ``problem.theta0``, where ``L`` is the exact loss on a whole split,
``sum_b c_b L_b`` with the coefficients of ``Problem.weighted_batches`` (``n_b / n`` for a plain
mean; the share of the class weights for a weighted cross-entropy; 1 for a sum), so the product
is ``sum_b c_b H_b v``: independent of the batch size in eval mode.

Two ways to compute ``H_b v``:

* ``"forward"``: forward-over-reverse, ``jvp(grad(L_b), theta, v)`` with ``torch.func``
  (one forward-mode pass through the backward graph);
* ``"double-backward"``: ``grad(grad(L_b) . v)`` with autograd, for modules that forward
  mode cannot handle. When the split has at most ``MAX_KEPT_GRAPHS`` batches the gradient's
  graph is built once and reused, so each product is one backward pass through it.

``"auto"`` uses forward mode on GPUs and double backward on CPUs (measured about 2x faster
there on a digits MLP); if forward mode fails it falls back to double backward, logging why.

``dtype=torch.float64`` runs a float64 copy of the model and data (the problem is not
changed). ``mask`` (bool ``(P,)``) restricts the operator to the Hessian block of the
selected parameters: vectors then live in the ``(mask.sum(),)`` subspace.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import warnings
from enum import Enum

import torch
from torch import nn

from . import cache as cache_mod
from . import executors, inputs
from .evaluate import Cancelled
from .private_model import PrivateModels
from .problem import Mode

log = logging.getLogger(__name__)

MAX_KEPT_GRAPHS = 1  # splits with at most this many batches keep their gradient graphs (memory: one batch)


class HVPMethod(str, Enum):
    """How a Hessian-vector product is computed (see module docstring)."""

    AUTO = "auto"
    FORWARD = "forward"
    DOUBLE_BACKWARD = "double-backward"


class NonFiniteHVP(FloatingPointError):
    """A Hessian-vector product contained NaN or inf (the loss or model diverges at this point)."""


def choice(enum: type[Enum], value, name: str):
    """``enum(value)``, or a ``ValueError`` naming ``name``, the value given and the values allowed."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}.") from None


def resolve_dtype(dtype) -> torch.dtype | None:
    """``None`` (the problem's dtype), ``"float64"``/``"float32"`` or a torch float dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        table = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "float": torch.float32}
        if dtype not in table:
            raise ValueError(f"dtype must be None, 'float32' or 'float64'; got {dtype!r}.")
        return table[dtype]
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be None, torch.float32 or torch.float64; got {dtype!r}.")
    return dtype


def check_curvature_mode(problem) -> None:
    """Refuse a train-mode model with active dropout; warn for train-mode BatchNorm.

    Dropout draws a new mask on every call, so ``H v`` would be a random matrix's product
    and Lanczos would return noise. Train-mode BatchNorm is deterministic per batch but
    its curvature depends on the batch size.
    """
    if problem.mode is not Mode.TRAIN:
        return
    dropout = [name for name, m in problem.model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    active = [name for name in dropout if dict(problem.model.named_modules())[name].p > 0]
    if active:
        raise ValueError(
            f"the problem runs its model in train mode with active dropout ({', '.join(active) or 'root'}); "
            "Hessian-vector products would be random. Build the Problem with mode='eval'."
        )
    warnings.warn(
        "curvature of a train-mode model: BatchNorm uses batch statistics, so the Hessian depends on the batch size.",
        stacklevel=3,
    )


class LossFunction:
    """The full-split loss of a problem as a function of flat parameters, in a chosen dtype.

    ``loss(theta)`` (differentiable scalar), ``gradient(theta)`` ``(P,)`` and
    ``hvp(theta, v)`` ``(P,)``; ``theta`` and ``v`` are full-space vectors. With another dtype
    than the problem's, a converted deep copy of the model, buffers and data is used.
    """

    def __init__(self, problem, split: str = "train", dtype=None, method: HVPMethod | str = "auto"):
        if split not in problem.splits:
            raise ValueError(f"split {split!r} is not available; this problem has {list(problem.splits)}.")
        self.problem = problem
        self.dtype = resolve_dtype(dtype) or problem.dtype
        self.method = choice(HVPMethod, method, "hvp_method")
        self._graphs: tuple[torch.Tensor, list] | None = None  # (theta, [(leaf, grad, weight)])
        self.device = problem.device
        # batches whose labels are all ignored weigh 0 (their mean is 0/0): left out; read one at a
        # time on every pass (a split kept on the CPU or in a Dataset is sent a batch at a time)
        batches = _Counted(problem.weighted_batches(split), None)
        if self.dtype == problem.dtype:
            # each thread runs its own copy of the model's structure (private_model)
            self.local_model = problem.local_model
            # train-mode BatchNorm updates its running statistics in place: work on copies
            train = problem.mode is Mode.TRAIN
            self.buffers = {k: v.clone() for k, v in problem.buffers.items()} if train else problem.buffers
            self.frozen = problem.space.frozen
            self.batches = batches
        else:
            self.local_model = PrivateModels(_converted(problem.model, self.dtype)).get
            self.buffers = {k: _cast(v, self.dtype) for k, v in problem.buffers.items()}
            self.frozen = {k: _cast(v, self.dtype) for k, v in problem.space.frozen.items()}
            self.batches = _Counted(batches.source, self.dtype)
        self.space = problem.space
        self.loss_value = problem.loss_value
        self.call = problem.call

    def batch_loss(self, theta: torch.Tensor, X, y: torch.Tensor) -> torch.Tensor:
        state = {**self.buffers, **self.frozen, **self.space.unflatten(theta)}
        return self.loss_value(self.call(self.local_model(), state, X), y)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact full-split loss at ``theta`` (differentiable scalar): ``sum_b c_b L_b``."""
        theta = theta.to(self.device, self.dtype)
        return sum(c * self.batch_loss(theta, X, y) for X, y, c in self.batches)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Gradient ``(P,)`` of the full-split loss (zeros where the loss does not depend on theta)."""
        theta = theta.to(self.device, self.dtype)
        total = torch.zeros_like(theta)
        for X, y, w in self.batches:
            total += w * torch.func.grad(self.batch_loss)(theta, X, y)
        return total

    def hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H(theta) v`` ``(P,)`` summed over weighted batches."""
        theta = theta.to(self.device, self.dtype)
        v = v.to(self.device, self.dtype)
        if self.method is HVPMethod.AUTO:
            return self._hvp_auto(theta, v)
        if self.method is HVPMethod.FORWARD:
            return self._hvp_forward(theta, v)
        return self._hvp_double_backward(theta, v)

    def _hvp_auto(self, theta, v):
        """Forward-over-reverse on a GPU; double backward on a CPU (measured faster there for small models).

        Falls back to double backward if forward mode fails on this model.
        """
        if theta.device.type == "cpu":
            self.method = HVPMethod.DOUBLE_BACKWARD
            return self._hvp_double_backward(theta, v)
        try:
            out = self._hvp_forward(theta, v)
        except (RuntimeError, NotImplementedError) as exc:
            log.warning("forward-over-reverse HVP failed (%s); using double backward.", exc)
            self.method = HVPMethod.DOUBLE_BACKWARD
            return self._hvp_double_backward(theta, v)
        self.method = HVPMethod.FORWARD
        return out

    def _hvp_forward(self, theta, v):
        total = torch.zeros_like(theta)
        for X, y, w in self.batches:
            _, tangent = torch.func.jvp(lambda t, X=X, y=y: torch.func.grad(self.batch_loss)(t, X, y), (theta,), (v,))
            total += w * tangent
        return total

    def _gradient_graph(self, theta, X, y):
        """``(leaf, gradient with its graph)`` of one batch at ``theta``, or ``None`` for a zero Hessian."""
        t = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.batch_loss(t, X, y)
            if not value.requires_grad:
                return None  # the loss does not depend on theta (checked by the operator)
            (g,) = torch.autograd.grad(value, t, create_graph=True)
        return (t, g) if g.requires_grad else None  # else piecewise linear in theta: a zero block

    def _hvp_double_backward(self, theta, v):
        """Batch by batch; a split of at most ``MAX_KEPT_GRAPHS`` batches keeps its graphs for the next product."""
        total = torch.zeros_like(theta)
        keep = len(self.batches) <= MAX_KEPT_GRAPHS
        if keep and (self._graphs is None or self._graphs[0] is not theta):
            self._graphs = (theta, [(self._gradient_graph(theta, X, y), w) for X, y, w in self.batches])
        for i, (X, y, w) in enumerate(self.batches):
            graph = self._graphs[1][i][0] if keep else self._gradient_graph(theta, X, y)
            if graph is None:
                continue
            t, g = graph
            (hv,) = torch.autograd.grad(g, t, grad_outputs=v, retain_graph=keep, allow_unused=True)
            if hv is not None:
                total += w * hv
        return total


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype) if t.is_floating_point() else t


class _Counted:
    """The weighted batches with ``c != 0``, floating tensors cast to ``dtype`` (``None``: kept),
    read lazily on each iteration; ``len`` counts them."""

    def __init__(self, source, dtype: torch.dtype | None):
        self.source = source
        self.dtype = dtype
        self.count = sum(1 for c in source.coefficients if c != 0.0)

    def __iter__(self):
        for X, y, c in self.source:
            if c == 0.0:
                continue
            if self.dtype is not None:
                X, y = inputs.apply(X, lambda t: _cast(t, self.dtype)), _cast(y, self.dtype)
            yield X, y, c

    def __len__(self) -> int:
        return self.count


def _converted(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy of ``model`` in ``dtype`` (``model`` is only read)."""
    return copy.deepcopy(model).to(dtype)


class HessianOperator:
    """The symmetric map ``v -> H v`` of the full-split loss at ``problem.theta0``.

    ``size``: dimension ``n`` of the operator (``P``, or ``mask.sum()``).
    ``matvec(v)``: ``v`` ``(n,)`` -> ``H v`` ``(n,)`` float64 on the CPU (counted in ``hvp_count``).
    ``embed(v)``/``restrict(v)``: between the ``(n,)`` subspace and the full ``(P,)`` space.
    ``progress(done, total)`` is called after each product (``total``: ``expected``, an upper
    bound) and ``cancel`` (a ``threading.Event``) is checked before each (raises ``Cancelled``).
    Raises ``NonFiniteHVP`` on a NaN/inf product, and ``ValueError`` on the first product
    if the gradient and ``H v`` are exactly zero (a loss that is not twice differentiable,
    e.g. an ``argmax`` inside).
    """

    def __init__(
        self,
        problem,
        mask=None,
        dtype=None,
        method="auto",
        split: str = "train",
        check: bool = True,
        progress=None,
        cancel=None,
        expected: int | None = None,
    ):
        check_curvature_mode(problem)
        self.progress, self.cancel, self.expected = progress, cancel, expected
        self.problem = problem
        # the executor seam: in-process a LossFunction; on a cluster, shards of the batches summed
        executor = executors.current()
        make = executor.loss_function if executor.remote else LossFunction
        self.function = make(problem, split=split, dtype=dtype, method=method)
        self.theta = problem.theta0.to(problem.device, self.function.dtype)
        P = problem.space.size
        if mask is None:
            self.index = None
            self.size = P
        else:
            problem.space.check(mask, "mask")
            if mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor (from problem.space.mask(...)); got {mask.dtype}.")
            self.index = torch.nonzero(mask.cpu()).flatten()
            self.size = int(self.index.numel())
            if self.size == 0:
                raise ValueError("mask selects no parameters; the Hessian block would be empty.")
        self.hvp_count = 0
        self._checked = not check

    @property
    def dtype(self) -> torch.dtype:
        return self.function.dtype

    @property
    def method(self) -> str:
        return self.function.method.value

    def embed(self, v: torch.Tensor) -> torch.Tensor:
        """Subspace ``(n,)`` -> full space ``(P,)`` (zeros outside the mask)."""
        if self.index is None:
            return v
        full = torch.zeros(*v.shape[:-1], self.problem.space.size, dtype=v.dtype, device=v.device)
        full[..., self.index.to(v.device)] = v
        return full

    def restrict(self, v: torch.Tensor) -> torch.Tensor:
        """Full space ``(P,)`` -> subspace ``(n,)``."""
        return v if self.index is None else v[..., self.index.to(v.device)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for ``v`` ``(n,)``; returns float64 ``(n,)`` on the CPU."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Hessian computation cancelled")
        full = self.embed(v.to(self.problem.device, self.dtype))
        hv = self.restrict(self.function.hvp(self.theta, full))
        self.hvp_count += 1
        if not torch.isfinite(hv).all():
            raise NonFiniteHVP(
                "a Hessian-vector product contains NaN or inf: the loss is not finite or not twice differentiable "
                "near theta0 (check the model's outputs and the loss)."
            )
        if not self._checked:
            self._check_differentiable(v, hv)
        if self.progress is not None:
            self.progress(self.hvp_count, max(self.expected or 0, self.hvp_count))
        return hv.detach().to("cpu", torch.float64)

    def _check_differentiable(self, v: torch.Tensor, hv: torch.Tensor) -> None:
        self._checked = True
        if bool((hv != 0).any()) or not bool((v != 0).any()):
            return
        grad = self.function.gradient(self.theta)
        if not bool((grad != 0).any()):
            raise ValueError(
                "the gradient and the Hessian-vector product of the loss are exactly zero: the loss is locally "
                "constant in the parameters, as when it is not twice differentiable (argmax, round or a comparison "
                "inside the loss or model). Curvature is undefined here; use a differentiable loss."
            )

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)


ALGORITHM_VERSION = 1  # bump when a curvature algorithm changes its numbers


def curvature_settings(problem, mask, dtype, hvp_method, split: str = "train") -> dict:
    """Settings shared by every curvature result: the problem, the mask, precision and HVP method."""
    mask_info = None
    if mask is not None:
        problem.space.check(mask, "mask")
        m = mask.detach().cpu().to(torch.bool)
        mask_info = {"selected": int(m.sum()), "sha256": hashlib.sha256(m.numpy().tobytes()).hexdigest()}
    dtype = resolve_dtype(dtype) or problem.dtype
    return {
        "problem": problem.describe(),
        "split": split,
        "mask": mask_info,
        "dtype": str(dtype).replace("torch.", ""),
        "hvp_method": choice(HVPMethod, hvp_method, "hvp_method").value,
    }


def cached(kind: str, cls, settings: dict, use_cache: bool, compute, progress=None):
    """Return the cached ``cls`` result for ``settings`` or compute, store and return it."""
    key = cache_mod.make_key(kind, ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.fetch(key, cls.from_bytes)) is not None:
        if progress is not None:
            progress(1, 1)
        return hit
    result = compute()
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result
