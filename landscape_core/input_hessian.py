"""Curvature of one input's loss in its token embeddings: the top eigenvalue of the input Hessian.

For input ``i`` with token embeddings ``E_i`` (``T_real x D`` coordinates over its real tokens)
the Hessian ``H_i = d^2 L_i / dE_i^2`` says how sharply its loss bends when its embeddings move.
Power iteration with Hessian-vector products (double backward through the forward hook of
``embeddings``) finds its largest-magnitude eigenvalue for every input of a batch at once.
"""

from __future__ import annotations

import numpy as np
import torch

from . import token_inputs as tok
from .embeddings import EmbeddingAccess, _batches, token_directions


def input_hessian_top_eigenvalue(
    problem,
    X: torch.Tensor,
    y: torch.Tensor,
    iterations: int = 30,
    seed: int = 0,
    theta: torch.Tensor | None = None,
    embedding: str | None = None,
    batch_size: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Largest-magnitude eigenvalue of each input's loss Hessian w.r.t. its token embeddings.

    Power iteration with Hessian-vector products (double backward) on the real tokens
    (``T_real * D`` coordinates per input); all inputs of a batch at once, since the Hessian
    of the summed loss is block diagonal over inputs. Returns ``(eigenvalue, residual)``,
    float64 ``(n,)``, with ``residual = ||H v - lambda v|| / max(|lambda|, 1e-30)``.
    """
    access = EmbeddingAccess(problem, theta, embedding)
    X = access.check_inputs(X)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer; got {iterations!r}.")
    n = tok.count(X)
    eigenvalue, residual = np.zeros(n), np.zeros(n)
    for start, stop in _batches(n, batch_size):
        Xb, yb = tok.rows(X, start, stop), y[start:stop].to(problem.device)
        E, m = access.embed(Xb), access.mask(Xb)
        zero = torch.zeros((), dtype=E.dtype, device=E.device)
        delta = torch.zeros_like(E, requires_grad=True)
        grad = torch.autograd.grad(access.losses(Xb, yb, delta).sum(), delta, create_graph=True)[0]

        def hvp(v, grad=grad, delta=delta, m=m, zero=zero):
            hv = torch.autograd.grad((grad * v).sum(), delta, retain_graph=True)[0]
            return torch.where(m, hv, zero)

        v = token_directions(E, m, 1, seed, range(start, stop))[0]
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None]
        lam = torch.zeros(E.shape[0], dtype=E.dtype, device=E.device)
        hv = hvp(v)
        for _ in range(iterations):
            lam = (v * hv).flatten(1).sum(1)
            norm = hv.flatten(1).norm(dim=1)
            ok = norm > 0
            v = torch.where(ok[:, None, None], hv / norm.clamp_min(1e-30)[:, None, None], v)
            hv = hvp(v)
        lam = (v * hv).flatten(1).sum(1)
        res = (hv - lam[:, None, None] * v).flatten(1).norm(dim=1) / lam.abs().clamp_min(1e-30)
        eigenvalue[start:stop] = lam.detach().double().cpu().numpy()
        residual[start:stop] = res.detach().double().cpu().numpy()
    return eigenvalue, residual
