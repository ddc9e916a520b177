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

from . import embeddings
from .embeddings import EmbeddingAccess, _batches, token_directions
from .evaluate import Cancelled


@dataclasses.dataclass(frozen=True)
class Motion:
    """Per input: ``average`` and ``first_order`` movement at ``radius`` (float64 ``(n,)``),
    ``sigma_max`` of the Jacobian ``(n,)``, and ``embedding_norm`` ``||E_i||_F`` ``(n,)``."""

    radius: float
    average: np.ndarray
    first_order: np.ndarray
    sigma_max: np.ndarray
    embedding_norm: np.ndarray

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
) -> Motion:
    """Movement of each input's sentence embedding under perturbations of relative size ``radius``.

    ``problem``'s model must map ``X`` ``(n, T)`` token ids to ``(n, D)``; its loss is not used.
    """
    if not isinstance(radius, (int, float)) or not np.isfinite(radius) or not radius > 0:
        raise ValueError(f"radius must be a finite number > 0 (a fraction of the embedding norm); got {radius!r}.")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer; got {samples!r}.")
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
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
    )
