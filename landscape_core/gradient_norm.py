"""Where gradients turn erratic: the norm of the loss gradient over planes, lines and paths.

* ``gradient_norms(problem, thetas)``: ``||grad L(theta)||_2`` of the exact full-split loss
  ``L = sum_b c_b L_b`` (``Problem.full_loss``) at each point, float64 ``(k,)``;
* ``plane``/``line``/``path``: that norm on the grid of a ``surface.plane``/``surface.line``
  (the same ``surface.grid`` coordinates and the same settings, so a map lines up with the
  loss map cell for cell) or along the straight path ``theta_a + alpha (theta_b - theta_a)``,
  as a ``Surface`` holding ``values["<split>_grad_norm"]``, cached by content like the surfaces;
* ``embedding_gradient_norms(problem, X, y)``: per input, ``||d loss_i / d E_i||_F`` over the
  real tokens of its token embeddings ``E_i`` (the Text page's gradient column).

Where the loss surface is smooth the gradient norm varies slowly; rings and spikes in its map
mark the regions where a step of gradient descent would be unreliable. Each value is one
forward and one backward pass over the split; a point where the loss is not finite gets NaN.
Buffers (BatchNorm statistics) are the problem's own, as in ``Problem.evaluate``.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import torch

from . import cache as cache_mod
from . import surface
from . import token_inputs as tok
from .embeddings import EmbeddingAccess, _batches
from .evaluate import Cancelled, Progress
from .results import Surface

ALGORITHM_VERSION = 1


def _check_split(problem, split: str) -> str:
    if split not in problem.splits:
        raise ValueError(f"split must be one of {list(problem.splits)}; got {split!r}.")
    return split


def gradient_norms(
    problem,
    thetas: torch.Tensor,
    split: str = "train",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> np.ndarray:
    """``||grad_theta L_split(theta_i)||_2`` for each row of ``thetas`` ``(k, P)`` (or one ``(P,)``).

    ``L_split`` is the exact loss on the whole split (every batch with its weight). Returns
    float64 ``(k,)``; NaN where the loss (or its gradient) is not finite.
    """
    split = _check_split(problem, split)
    if not isinstance(thetas, torch.Tensor):
        raise ValueError(
            f"thetas must be a torch.Tensor of shape (k, {problem.space.size}); got {type(thetas).__name__}."
        )
    if thetas.dim() == 1:
        thetas = thetas[None]
    problem.space.check(thetas, "thetas", batched=True)
    k = thetas.shape[0]
    norms = np.full(k, np.nan)
    for i in range(k):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {i} of {k} gradient norms")
        theta = thetas[i].detach().to(problem.device, problem.dtype).clone().requires_grad_(True)
        if torch.isfinite(theta).all():
            loss = problem.full_loss(theta, split)
            if torch.isfinite(loss):
                (grad,) = torch.autograd.grad(loss, theta)
                value = float(grad.detach().double().norm())
                norms[i] = value if np.isfinite(value) else np.nan
        if progress is not None:
            progress(i + 1, k)
    return norms


def _grid_norms(problem, center, basis, coeffs: np.ndarray, split, progress, cancel) -> np.ndarray:
    thetas = center[None] + torch.as_tensor(coeffs, dtype=torch.float64).to(problem.device) @ basis.double()
    return gradient_norms(problem, thetas.to(problem.dtype), split, progress, cancel)


def _cached(settings: dict, compute, use_cache: bool, progress, total: int) -> Surface:
    key = cache_mod.make_key("grad-norm", ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.get(key)) is not None:
        if progress is not None:
            progress(total, total)
        return Surface.from_bytes(hit)
    result = compute()
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def plane(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    span_y: tuple[float, float] | None = None,
    steps_y: int | None = None,
    split: str = "train",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Surface:
    """Gradient norm on the grid of ``surface.plane`` with the same arguments.

    Returns a ``Surface`` with ``values["<split>_grad_norm"]`` float64 ``(steps, steps_y)``,
    ``[i, j]`` at ``center + alphas[i] d1 + betas[j] d2``.
    """
    split = _check_split(problem, split)
    span_y = span if span_y is None else span_y
    steps_y = steps if steps_y is None else steps_y
    alphas = surface.grid(span, steps, "span")
    betas = surface.grid(span_y, steps_y, "span_y", "steps_y")
    center, basis = surface._prepare(problem, [d1, d2], center)
    extra = {
        "span": list(surface.check_span(span)),
        "steps": steps,
        "span_y": list(surface.check_span(span_y)),
        "steps_y": steps_y,
        "quantity": "grad_norm",
    }
    settings = surface._settings(problem, "plane", center, basis, [split], extra)

    def compute() -> Surface:
        a, b = np.meshgrid(alphas, betas, indexing="ij")
        coeffs = np.stack([a.ravel(), b.ravel()], axis=1)
        norms = _grid_norms(problem, center.double(), basis, coeffs, split, progress, cancel)
        values = {f"{split}_grad_norm": norms.reshape(steps, steps_y)}
        return Surface(alphas=alphas, betas=betas, values=values, settings=settings)

    return _cached(settings, compute, use_cache, progress, steps * steps_y)


def line(
    problem,
    direction: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    split: str = "train",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
    kind: str = "line",
) -> Surface:
    """Gradient norm along ``center + alpha direction`` on the grid of ``surface.line``;
    ``values["<split>_grad_norm"]`` float64 ``(steps,)``."""
    split = _check_split(problem, split)
    alphas = surface.grid(span, steps)
    center, basis = surface._prepare(problem, [direction], center)
    extra = {"span": list(surface.check_span(span)), "steps": steps, "quantity": "grad_norm"}
    settings = surface._settings(problem, kind, center, basis, [split], extra)

    def compute() -> Surface:
        norms = _grid_norms(problem, center.double(), basis, alphas[:, None], split, progress, cancel)
        return Surface(alphas=alphas, values={f"{split}_grad_norm": norms}, settings=settings)

    return _cached(settings, compute, use_cache, progress, steps)


def path(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    steps: int = 21,
    span: tuple[float, float] = (0.0, 1.0),
    split: str = "train",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Surface:
    """Gradient norm along the linear path ``theta_a + alpha (theta_b - theta_a)``, alpha over
    ``span`` (default the segment, ``[0, 1]``); ``ValueError`` if the two points are equal."""
    problem.space.check(theta_a, "theta_a")
    problem.space.check(theta_b, "theta_b")
    direction = theta_b.detach().to(problem.device, problem.dtype) - theta_a.detach().to(problem.device, problem.dtype)
    if not direction.abs().max() > 0:
        raise ValueError("theta_a and theta_b are the same point; a path needs two different endpoints.")
    return line(problem, direction, span, steps, theta_a, split, progress, cancel, use_cache, kind="path")


def embedding_gradient_norms(
    problem,
    X: torch.Tensor,
    y: torch.Tensor,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    batch_size: int = 128,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Per input, ``||d loss_i / d E_i||_F`` (float64 ``(n,)``) at the token embeddings ``E_i``.

    ``X``: token ids ``(n, T)`` or a tokenizer's dict (``token_inputs``); padding positions carry no gradient (they are not perturbed
    anywhere on the Text page). In eval mode input ``i``'s loss depends on its own embeddings
    only, so one backward pass of the summed losses gives every input's gradient. Cached on
    disk under "embedding-grad-norm" (model, point, inputs, labels, loss identity, batch size).
    """
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    n = tok.count(X)
    if not isinstance(y, torch.Tensor) or y.shape[:1] != (n,):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"X has {n} inputs but y is {shape}; give one label per input.")
    settings = {**access.identity(X, y), "batch_size": int(batch_size)}
    key = cache_mod.make_key("embedding-grad-norm", ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.fetch(key, lambda raw: _norms_from_bytes(raw, n))) is not None:
        return hit
    out = _embedding_norms(access, X, y, n, batch_size, cancel)
    if use_cache:
        cache_mod.put(key, _norms_to_bytes(out))
    return out


def _norms_to_bytes(norms: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(norms, dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def _norms_from_bytes(raw: bytes, n: int) -> np.ndarray:
    """The cached ``(n,)`` float64 norms; anything else (another shape, dtype, a pickle, a negative) is refused."""
    norms = np.load(io.BytesIO(raw), allow_pickle=False)
    if norms.dtype != np.float64 or norms.shape != (n,) or (norms < 0).any():
        raise ValueError(f"expected {n} non-negative float64 norms; got {norms.dtype} {norms.shape}.")
    return norms


def _embedding_norms(access: EmbeddingAccess, X, y: torch.Tensor, n: int, batch_size: int, cancel) -> np.ndarray:
    problem = access.problem
    out = np.zeros(n)
    for start, stop in _batches(n, batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {start} of {n} inputs")
        Xb, yb = tok.rows(X, start, stop), y[start:stop].to(problem.device)
        E = access.embed(Xb)
        delta = torch.zeros_like(E, requires_grad=True)
        losses = access.losses(Xb, yb, delta)
        (grad,) = torch.autograd.grad(losses.sum(), delta)
        grad = grad * access.mask(Xb)
        out[start:stop] = grad.double().flatten(1).norm(dim=1).cpu().numpy()
    return out
