"""How far a sentence embedding moves when its token embeddings are perturbed.

For an encoder ``f`` that maps token ids ``(n, T)`` through an ``nn.Embedding`` to sentence
embeddings ``(n, D_out)``, and input ``i`` with token embeddings ``E_i``:

* ``average``: ``mean_s ||f(E_i + r u_s) - f(E_i)||_2`` over random directions ``u_s``
  normalized per token, ``||u_t|| = ||e_t||`` (``embeddings.token_directions``: the same
  seeded directions as the Text page's average case), so ``r`` is relative to the input;
* ``first_order``: ``r ||E_i||_F sigma_max(J_i)``, the largest movement a perturbation of
  relative size ``r`` can cause to first order; ``J_i = df/dE_i`` over the real tokens,
  from the exact Jacobian (``torch.func.jacrev``).

A flatter encoder moves its embeddings less; the inputs ranked first are those whose meaning
(as the encoder sees it) is least stable under small changes of their words' vectors.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import torch

from . import cache as cache_mod
from . import embeddings
from .embeddings import EmbeddingAccess, _batches, token_directions
from .evaluate import Cancelled
from .results import ResultIO

ALGORITHM_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Motion(ResultIO):
    """Per input: ``average`` and ``first_order`` movement at ``radius`` (float64 ``(n,)``),
    ``sigma_max`` of the Jacobian ``(n,)``, and ``embedding_norm`` ``||E_i||_F`` ``(n,)``;
    ``settings``: how it was made (the cache key's content)."""

    radius: float
    average: np.ndarray
    first_order: np.ndarray
    sigma_max: np.ndarray
    embedding_norm: np.ndarray
    settings: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("average", "first_order", "sigma_max", "embedding_norm")

    def check(self, n: int, radius: float) -> Motion:
        """``self`` if it holds ``n`` inputs' float64 values at ``radius``; else ``ValueError`` (a cache
        entry of another shape is not this result)."""
        for name in self.ARRAYS:
            values = getattr(self, name)
            if not isinstance(values, np.ndarray) or values.dtype != np.float64 or values.shape != (n,):
                raise ValueError(
                    f"Motion.{name} must be float64 of shape ({n},); got {getattr(values, 'shape', None)}."
                )
        if self.radius != radius:
            raise ValueError(f"Motion.radius is {self.radius!r}, not {radius!r}.")
        return self

    def ranking(self, by: str = "average") -> np.ndarray:
        """Rows, the largest movement first."""
        if by not in ("average", "first_order"):
            raise ValueError(f"by must be 'average' or 'first_order'; got {by!r}.")
        return np.argsort(-getattr(self, by), kind="stable")


def _encode(access: EmbeddingAccess, X: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
    with embeddings._hooked(access.hook_module()) as hook:
        hook.delta = delta
        out = access.problem.forward(access.theta, X)
    if out.dim() != 2 or out.shape[0] != X.shape[0]:
        raise ValueError(
            f"the encoder must map token ids (n, T) to sentence embeddings (n, D); it returned {tuple(out.shape)} "
            f"for inputs {tuple(X.shape)}."
        )
    return out


def motion(
    problem,
    X: torch.Tensor,
    radius: float = 0.05,
    samples: int = 8,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    batch_size: int = 64,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Motion:
    """Movement of each input's sentence embedding under perturbations of relative size ``radius``.

    ``problem``'s model must map ``X`` ``(n, T)`` token ids to ``(n, D)``; its loss is not used.
    Cached on disk under "embedding-motion" (model, point, inputs and every argument).
    """
    if not isinstance(radius, (int, float)) or not np.isfinite(radius) or not radius > 0:
        raise ValueError(f"radius must be a finite number > 0 (a fraction of the embedding norm); got {radius!r}.")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer; got {samples!r}.")
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    n = X.shape[0]
    settings = {
        "kind": "embedding-motion",
        **access.identity(X),
        "radius": float(radius),
        "samples": samples,
        "seed": int(seed),
        "batch_size": int(batch_size),
    }
    key = cache_mod.make_key("embedding-motion", ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.fetch(key, lambda raw: Motion.from_bytes(raw).check(n, float(radius)))):
        return hit
    result = _motion(access, X, float(radius), samples, int(seed), batch_size, cancel, settings)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def _motion(access: EmbeddingAccess, X, radius: float, samples: int, seed: int, batch_size: int, cancel, settings):
    n = X.shape[0]
    average, sigma, norm = np.zeros(n), np.zeros(n), np.zeros(n)
    for start, stop in _batches(n, batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {start} of {n} inputs")
        Xb = X[start:stop]
        E, mask = access.embed(Xb), access.mask(Xb)
        norm[start:stop] = (E * mask).double().flatten(1).norm(dim=1).cpu().numpy()
        with torch.no_grad():
            base = _encode(access, Xb, None)
            U = token_directions(E, mask, samples, seed, range(start, stop))
            moves = torch.stack(
                [(_encode(access, Xb, radius * U[s]) - base).double().norm(dim=1) for s in range(samples)]
            )
        average[start:stop] = moves.mean(0).cpu().numpy()
        for i in range(stop - start):
            real = Xb[i : i + 1] != access.pad_id
            x = Xb[i : i + 1]

            def f(delta, x=x):
                return _encode(access, x, delta)[0]

            J = torch.func.jacrev(f)(torch.zeros_like(E[i : i + 1]))  # (D_out, 1, T, D)
            J = J[:, 0][:, real[0]].reshape(J.shape[0], -1).double()
            sigma[start + i] = float(torch.linalg.matrix_norm(J, ord=2))
    return Motion(
        radius=float(radius),
        average=average,
        first_order=radius * norm * sigma,
        sigma_max=sigma,
        embedding_norm=norm,
        settings=settings,
    )
