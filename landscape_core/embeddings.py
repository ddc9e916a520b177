"""Loss landscapes in the embedding space of a text classifier.

A text model looks its integer token ids ``X`` (LongTensor ``(n, T)``, padding id 0 by
default, or a tokenizer's dict ``{"input_ids", "attention_mask"}`` called as ``model(**X)``,
see ``token_inputs``) up in an ``nn.Embedding``, giving token embeddings ``E`` ``(n, T, D)``. Here
``E`` is perturbed, ``E + delta``, while the weights stay at ``theta``; a forward hook on
the embedding layer adds ``delta``, so any model whose forward goes through an
``nn.Embedding`` works unchanged (models that accept ``inputs_embeds`` have one too).

* ``average_case``: loss at ``E + r u`` for random directions ``u`` normalized per token,
  ``||u_t|| = ||e_t||`` (the text analogue of filter normalization), mean and standard
  error over samples;
* ``worst_case``: the largest loss in the ball ``||delta||_F <= eps`` over the real
  tokens of one input, by projected normalized gradient ascent (FreeLB, Zhu et al. 2020);
* ``sentence_embeddings``/``predictions``: what the model sees and says per input.

Beside it: ``input_hessian`` (top eigenvalue of each input's Hessian in its embeddings),
``embedding_matrix`` (weight-space surfaces of the embedding matrix alone) and
``fragility`` (the ranking of inputs, cached, and 2-D maps of sentence embeddings).

Radii are *relative* by default: radius ``r`` is the ball ``||delta||_F <= r ||E||_F``
(real tokens only), on whose sphere the average-case directions lie, so both curves share
one axis. ``relative=False`` makes the radius an absolute Frobenius norm. Padding
positions (the padding id, or ``attention_mask`` 0) are never perturbed: their ``delta`` is exactly zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import inputs as inp
from . import token_inputs as tok
from .evaluate import Cancelled
from .identity import raw_bytes
from .threads import single_thread  # noqa: F401  (re-exported: emb.single_thread)

Progress = Callable[[int, int], None]


# -- the embedding layer ------------------------------------------------------------------
def embedding_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Embedding]:
    """``(qualified name, module)`` of the ``nn.Embedding`` that looks up the tokens.

    ``name`` picks one by its module name; otherwise the only one, or with several (token
    and position embeddings) the one with the most rows (the vocabulary). A model with no
    ``nn.Embedding`` raises ``ValueError`` naming what is needed.
    """
    if isinstance(model, nn.Module) is False and hasattr(model, "model"):
        model = model.model
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if name is not None:
        for n, m in found:
            if n == name:
                return n, m
        raise ValueError(
            f"embedding={name!r} is not an nn.Embedding of this model; its embedding layers are "
            f"{[n for n, _ in found] or 'none'}."
        )
    if not found:
        raise ValueError(
            f"model {type(model).__name__} has no torch.nn.Embedding layer; embedding-space analysis needs a "
            "text model whose forward looks integer token ids (LongTensor (n, T)) up in an nn.Embedding "
            "(HuggingFace models that accept inputs_embeds have one) so the token embeddings can be perturbed."
        )
    return max(found, key=lambda item: item[1].num_embeddings)


def pad_id_of(module: nn.Embedding, pad_id: int | None = None) -> int:
    """Padding token id: ``pad_id`` if given, else the layer's ``padding_idx``, else 0."""
    if pad_id is not None:
        return int(pad_id)
    return int(module.padding_idx) if module.padding_idx is not None else 0


class _Perturbation:
    """Forward hook adding ``delta`` to the embedding output, only in the thread that set it."""

    def __init__(self):
        self.delta: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None
        self.thread = threading.get_ident()

    def __call__(self, module, inputs, output):
        if threading.get_ident() != self.thread:
            return None  # another job is using the same model: leave it alone
        self.captured = output
        if self.delta is None:
            return None
        if output.shape != self.delta.shape:
            raise ValueError(
                f"the embedding layer returned shape {tuple(output.shape)}, expected {tuple(self.delta.shape)} "
                "(n, T, D) for inputs (n, T); the model must embed each token id once."
            )
        return output + self.delta.to(output.dtype)


@contextlib.contextmanager
def _hooked(module: nn.Embedding):
    perturbation = _Perturbation()
    handle = module.register_forward_hook(perturbation)
    try:
        yield perturbation
    finally:
        handle.remove()


class EmbeddingAccess:
    """Per-example losses of ``problem`` at ``theta`` with perturbed token embeddings.

    ``losses(X, y, delta)`` -> ``(n,)``, differentiable in ``delta`` ``(n, T, D)``;
    ``embed(X)`` -> token embeddings ``(n, T, D)`` as the model computes them.
    """

    def __init__(self, problem, theta: torch.Tensor | None = None, embedding: str | None = None, pad_id=None):
        self.problem = problem
        self.name, self.module = embedding_layer(problem.model, embedding)
        self.pad_id = pad_id_of(self.module, pad_id)
        self.theta = problem.theta0 if theta is None else theta.to(problem.device, problem.dtype)
        problem.space.check(self.theta, "theta")
        self._vmap_loss = True

    def hook_module(self) -> nn.Embedding:
        """The embedding layer of the model copy this thread evaluates (``Problem.local_model``): hooks go there."""
        return self.problem.local_model().get_submodule(self.name)

    @property
    def weight_name(self) -> str:
        """Name of the embedding matrix in the parameter space (``"<module>.weight"``)."""
        return f"{self.name}.weight" if self.name else "weight"

    def check_inputs(self, X):
        """``X`` (token ids ``(n, T)`` or a tokenizer's dict, see ``token_inputs``) checked and on the device."""
        return tok.to(tok.check(X, self.pad_id), self.problem.device)

    def mask(self, X) -> torch.Tensor:
        """Boolean ``(n, T, 1)``: True at real tokens, False at padding (``attention_mask`` 0 or the padding id)."""
        return tok.real_tokens(X, self.pad_id)

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), _hooked(self.hook_module()) as hook:
            self.problem.forward(self.theta, X)
        return hook.captured.detach()

    def losses(self, X: torch.Tensor, y: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        with _hooked(self.hook_module()) as hook:
            hook.delta = delta
            out = self.problem.forward(self.theta, X)
        return self.per_example(out, y)

    def per_example(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``loss(out[i], y[i])`` for every example (the problem's loss is a batch mean)."""
        loss = self.problem.loss
        fast = _PER_EXAMPLE.get(loss)
        if isinstance(loss, nn.CrossEntropyLoss) and loss.weight is None and loss.label_smoothing == 0:
            fast = _PER_EXAMPLE[F.cross_entropy]
        if fast is not None:
            return fast(out, y)
        if self._vmap_loss:
            try:
                return torch.func.vmap(lambda o, t: loss(o[None], t[None]))(out, y).reshape(-1)
            except Exception:
                self._vmap_loss = False
        return torch.stack([loss(out[i : i + 1], y[i : i + 1]).reshape(()) for i in range(out.shape[0])])

    def outputs(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.problem.forward(self.theta, X)

    def identity(self, X, y: torch.Tensor | None = None) -> dict:
        """What a result on inputs ``X`` (labels ``y``) at this point depends on, for a cache key: the
        model and point, the embedding layer and padding id, the inputs' bytes and the loss identity."""
        h = hashlib.sha256()
        for name, t in [*inp.leaves(X), *([("y", y)] if y is not None else [])]:
            h.update(repr((name, tuple(t.shape), str(t.dtype))).encode())
            h.update(raw_bytes(t))
        return {
            "embedding": self.name,
            "pad_id": self.pad_id,
            "model_sha256": self.problem.model_hash(self.theta),
            "theta_sha256": hashlib.sha256(raw_bytes(self.theta)).hexdigest(),
            "inputs_sha256": h.hexdigest(),
            "problem": self.problem.describe(),
        }


_PER_EXAMPLE = {
    F.cross_entropy: lambda out, y: F.cross_entropy(out, y, reduction="none"),
    F.binary_cross_entropy_with_logits: lambda out, y: (
        F.binary_cross_entropy_with_logits(out, y, reduction="none").reshape(out.shape[0], -1).mean(1)
    ),
    F.mse_loss: lambda out, y: F.mse_loss(out, y, reduction="none").reshape(out.shape[0], -1).mean(1),
}


def _batches(n: int, batch_size: int):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def check_radii(radii: Sequence[float]) -> np.ndarray:
    """Radii as a float64 array; each finite and >= 0."""
    r = np.asarray(radii, dtype=np.float64).reshape(-1)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"radii must be a non-empty list of finite numbers >= 0; got {list(radii)!r}.")
    return r


def _example_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# -- average case ---------------------------------------------------------------------
def token_directions(
    E: torch.Tensor, mask: torch.Tensor, samples: int, seed: int = 0, indices: Sequence[int] | None = None
) -> torch.Tensor:
    """Random directions ``(samples, n, T, D)`` normalized per token: ``||u_t|| = ||e_t||``.

    ``E``: token embeddings ``(n, T, D)``; ``mask``: ``(n, T, 1)`` True at real tokens.
    Padding positions are exactly zero. Example ``i`` draws from its own generator seeded by
    ``(seed, indices[i])``, so a direction does not depend on batching or on the other inputs.
    """
    n, T, D = E.shape
    indices = range(n) if indices is None else indices
    raw = torch.stack(
        [
            torch.randn(samples, T, D, generator=torch.Generator().manual_seed(_example_seed(seed, int(i))))
            for i in indices
        ],
        dim=1,
    ).to(E.device, E.dtype)
    token_norm = E.norm(dim=-1, keepdim=True)
    scaled = raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-30) * token_norm
    return torch.where(mask, scaled, torch.zeros((), dtype=E.dtype, device=E.device))


def average_case(
    problem,
    X: torch.Tensor,
    y: torch.Tensor,
    radii: Sequence[float],
    samples: int = 16,
    seed: int = 0,
    relative: bool = True,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    batch_size: int = 128,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss over random per-token-normalized perturbations, per example and radius.

    Returns ``(mean, stderr)``, float64 ``(n, R)``: at radius ``r`` the loss at
    ``E + r u_s`` (``relative=True``) or ``E + r u_s / ||u_s||_F`` (absolute radius),
    averaged over ``samples`` directions ``u_s`` (the same directions at every radius),
    with the standard error ``std / sqrt(samples)``.
    """
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    r = check_radii(radii)
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 (a standard error needs two); got {samples!r}.")
    n = tok.count(X)
    mean = np.zeros((n, r.size))
    stderr = np.zeros((n, r.size))
    for start, stop in _batches(n, batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {start} of {n} inputs")
        Xb, yb = tok.rows(X, start, stop), y[start:stop].to(problem.device)
        E, m = access.embed(Xb), access.mask(Xb)
        U = token_directions(E, m, samples, seed, range(start, stop))
        if not relative:
            U = U / U.flatten(2).norm(dim=-1)[..., None, None].clamp_min(1e-30)
        with torch.no_grad():
            for j, radius in enumerate(r):
                values = torch.stack([access.losses(Xb, yb, radius * U[s]) for s in range(samples)]).double()
                mean[start:stop, j] = values.mean(0).cpu().numpy()
                stderr[start:stop, j] = (values.std(0, unbiased=True) / samples**0.5).cpu().numpy()
        if progress is not None:
            progress(stop, n)
    return mean, stderr


# -- worst case -----------------------------------------------------------------------
def worst_case(
    problem,
    X: torch.Tensor,
    y: torch.Tensor,
    radii: Sequence[float],
    steps: int = 20,
    seed: int = 0,
    relative: bool = True,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    batch_size: int = 128,
    return_delta: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
):
    """Largest loss in the embedding ball of each input, by projected gradient ascent.

    For input ``i`` and radius ``r`` the ball is ``||delta_i||_F <= eps_i`` over its real
    tokens, ``eps_i = r ||E_i||_F`` (``relative=True``) or ``eps_i = r``. Ascent: a seeded
    start at ``1e-3 eps`` inside the ball, then ``steps`` normalized-gradient steps of
    ``eps * lr_k`` (``lr_k`` cosine-decays from 1 to 0.02), each projected back onto the
    ball; padding stays exactly zero. The best iterate is kept, so every value returned is
    attained by a feasible ``delta`` (a lower bound on the true maximum, tight for
    losses convex in the embeddings).

    Returns float64 ``(n, R)`` losses; with ``return_delta=True`` also the maximizing
    ``delta`` ``(R, n, T, D)``.
    """
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    r = check_radii(radii)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}.")
    n = tok.count(X)
    worst = np.zeros((n, r.size))
    deltas = [] if return_delta else None
    lrs = 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * np.arange(steps) / max(steps - 1, 1)))
    total = n * r.size
    for j, radius in enumerate(r):
        parts = []
        for start, stop in _batches(n, batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled at radius {radius} after {start} of {n} inputs")
            Xb, yb = tok.rows(X, start, stop), y[start:stop].to(problem.device)
            E, m = access.embed(Xb), access.mask(Xb)
            zero = torch.zeros((), dtype=E.dtype, device=E.device)
            eps = (
                (E * m).flatten(1).norm(dim=1) * radius
                if relative
                else torch.full((E.shape[0],), float(radius), dtype=torch.float64)
            )
            eps = eps.to(E.device, E.dtype)[:, None, None]
            delta = 1e-3 * token_directions(E, m, 1, seed, range(start, stop))[0]
            delta = delta / delta.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None] * eps
            with torch.no_grad():
                best = access.losses(Xb, yb, delta).detach().double()
            best_delta = delta.detach().clone()
            if radius > 0:
                for lr in lrs:
                    delta = delta.detach().requires_grad_(True)
                    grad = torch.autograd.grad(access.losses(Xb, yb, delta).sum(), delta)[0]
                    grad = torch.where(m, grad, zero)
                    gnorm = grad.flatten(1).norm(dim=1)[:, None, None].clamp_min(1e-30)
                    step = delta.detach() + float(lr) * eps * grad / gnorm
                    snorm = step.flatten(1).norm(dim=1)[:, None, None]
                    step = step * torch.clamp(eps / snorm.clamp_min(1e-30), max=1.0)
                    delta = torch.where(m, step, zero)
                    with torch.no_grad():
                        value = access.losses(Xb, yb, delta).double()
                    better = value > best
                    best = torch.where(better, value, best)
                    best_delta = torch.where(better[:, None, None], delta, best_delta)
            worst[start:stop, j] = best.cpu().numpy()
            if return_delta:
                parts.append(best_delta.detach())
            if progress is not None:
                progress(j * n + stop, total)
        if return_delta:
            deltas.append(torch.cat(parts))
    return (worst, torch.stack(deltas)) if return_delta else worst


# -- what the model sees ------------------------------------------------------------------
def sentence_embeddings(
    problem, X: torch.Tensor, theta: torch.Tensor | None = None, embedding: str | None = None
) -> np.ndarray:
    """Mean of each input's token embeddings over its real tokens, float64 ``(n, D)``."""
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    E, m = access.embed(X), access.mask(X)
    pooled = (E * m).sum(1) / m.sum(1).clamp_min(1)
    return pooled.double().cpu().numpy()


def predictions(
    problem, X: torch.Tensor, theta: torch.Tensor | None = None, delta: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted class (n,), probability of that class (n,))`` from the model's logits,
    with the token embeddings perturbed by ``delta`` ``(n, T, D)`` if given."""
    access = EmbeddingAccess(problem, theta)
    with torch.no_grad(), _hooked(access.hook_module()) as hook:
        hook.delta = delta
        out = access.outputs(tok.to(X, problem.device)).double()
    probs = torch.softmax(out, dim=-1)
    conf, pred = probs.max(dim=-1)
    return pred.cpu().numpy(), conf.cpu().numpy()
