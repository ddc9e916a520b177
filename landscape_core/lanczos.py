"""Lanczos for symmetric operators given only as ``v -> A v``: extremal eigenpairs and quadrature.

``eigsh``: thick-restart Lanczos (Wu & Simon 2000; Stathopoulos et al. 1998) with full
reorthogonalization. The Krylov basis ``V`` and the products ``W = A V`` are kept in float64 (memory ``2 m n`` doubles),
so the projected matrix ``T = V W^T`` (tridiagonal, arrow-shaped after a restart) and the
true residuals ``||A x - theta x|| = ||W y - theta V y||`` of every Ritz pair come without
extra products. At a restart the wanted Ritz vectors (and as many again) are kept, with
the last residual direction; the basis grows again from there. Both ends of the spectrum
can be hunted in one run (``which="both"``), which is what tells a saddle from a minimum.

``tridiagonal``: plain Lanczos with full reorthogonalization from a given start, returning
the tridiagonal ``T``; its eigenvalues/first eigenvector components are the Gauss
quadrature nodes/weights that stochastic Lanczos quadrature averages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


class Which(str, Enum):
    """Which end of the spectrum to compute."""

    LARGEST = "largest"  # the k largest (algebraic) eigenvalues
    SMALLEST = "smallest"  # the k smallest (most negative) eigenvalues
    BOTH = "both"  # k largest and k smallest


@dataclass
class Eigenpairs:
    """Output of ``eigsh``: ``values`` ``(m,)`` descending, ``vectors`` ``(m, n)`` float64 unit rows,
    ``residuals`` ``||A x - lambda x||`` ``(m,)``, ``converged`` bool ``(m,)``, ``ends`` (``"largest"``/
    ``"smallest"`` per pair), ``matvecs``, ``restarts``, ``scale`` (largest ``|Ritz value|``)."""

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    ends: list[str]
    matvecs: int
    restarts: int
    scale: float


def _orthogonalize(r: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Classical Gram-Schmidt, twice ("twice is enough"), against the rows of ``V``."""
    if V.shape[0] == 0:
        return r
    r = r - V.T @ (V @ r)
    return r - V.T @ (V @ r)


def _random_unit(n: int, V: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    for _ in range(10):
        r = _orthogonalize(torch.randn(n, generator=gen, dtype=torch.float64), V)
        norm = r.norm()
        if norm > 1e-8:
            return r / norm
    raise RuntimeError("could not extend the Krylov basis: it already spans the space.")


def _wanted(values: torch.Tensor, count: int, which: Which) -> tuple[torch.Tensor, list[str]]:
    """Indices into ascending ``values`` of the ``count`` wanted per end, ordered by descending value."""
    j = values.numel()
    if which is Which.LARGEST:
        idx = torch.arange(j - 1, j - 1 - count, -1)
        return idx, ["largest"] * count
    if which is Which.SMALLEST:
        idx = torch.arange(count - 1, -1, -1)
        return idx, ["smallest"] * count
    top = torch.arange(j - 1, j - 1 - count, -1)
    bottom = torch.arange(count - 1, -1, -1)
    return torch.cat([top, bottom]), ["largest"] * count + ["smallest"] * count


def eigsh(
    matvec: MatVec,
    n: int,
    k: int,
    which: Which | str = "largest",
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int = 0,
    basis_size: int | None = None,
) -> Eigenpairs:
    """Extremal eigenpairs of a symmetric ``n x n`` operator by thick-restart Lanczos.

    ``k`` pairs per end (``which="both"``: ``2k``). A pair is converged when its residual
    ``||A x - lambda x|| <= tol * scale`` with ``scale`` the largest ``|Ritz value|`` (an
    estimate of ``||A||``); unconverged pairs are returned with ``converged=False``.
    ``max_iter``: most products ``A v`` (default ``max(300, 40 k)``). ``basis_size``: Krylov
    basis size before a restart (default ``max(3 k_total, k_total + 20)``, at most ``n``).
    The start vector is Gaussian from ``torch.Generator().manual_seed(seed)``.

    >>> A = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
    >>> out = eigsh(lambda v: A @ v, 100, k=2, tol=1e-10)
    >>> [round(x, 6) for x in out.values.tolist()], bool(out.converged.all())
    ([100.0, 99.0], True)
    """
    which = Which(which)
    total = 2 * k if which is Which.BOTH else k
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    if total > n:
        what = f"2k = {total}" if which is Which.BOTH else f"k = {k}"
        raise ValueError(f"{what} eigenpairs requested but the operator has dimension {n}; need {what} <= {n}.")
    if not tol > 0:
        raise ValueError(f"tol must be positive; got {tol!r}.")
    max_iter = max(300, 40 * k) if max_iter is None else int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    m = min(n, basis_size or max(3 * total, total + 20))
    if m < min(n, total + 1):
        raise ValueError(f"basis_size must exceed the number of wanted pairs ({total}); got {basis_size}.")
    keep = min(m - 1, total + max(total, (m - total) // 2))

    gen = torch.Generator().manual_seed(int(seed))
    V = torch.zeros(m, n, dtype=torch.float64)
    W = torch.zeros(m, n, dtype=torch.float64)
    T = torch.zeros(m, m, dtype=torch.float64)
    V[0] = _random_unit(n, V[:0], gen)
    j, matvecs, restarts = 0, 0, 0
    while True:
        W[j] = matvec(V[j]).to(torch.float64)
        matvecs += 1
        j += 1
        T[:j, j - 1] = T[j - 1, :j] = V[:j] @ W[j - 1]  # the new row/column of T = V W^T
        theta, Y = torch.linalg.eigh(T[:j, :j])
        scale = float(theta.abs().max()) if j else 0.0
        done = j == n or matvecs >= max_iter
        if j >= total:
            idx, ends = _wanted(theta, k if which is Which.BOTH else total, which)
            Yw = Y[:, idx]
            X = Yw.T @ V[:j]
            R = Yw.T @ W[:j] - theta[idx, None] * X
            residuals = R.norm(dim=1)
            converged = residuals <= tol * max(scale, 1e-300)
            if bool(converged.all()) or done:
                X = X / X.norm(dim=1, keepdim=True)
                signs = torch.sign(X.gather(1, X.abs().argmax(dim=1, keepdim=True)))
                return Eigenpairs(theta[idx], X * signs, residuals, converged, ends, matvecs, restarts, scale)
        if done:  # fewer steps than wanted pairs (max_iter too small)
            raise ValueError(f"max_iter = {max_iter} is too small to find {total} eigenpairs.")
        r = _orthogonalize(W[j - 1], V[:j])
        if j == m:  # thick restart: keep the best Ritz vectors and the residual direction
            restarts += 1
            if which is Which.SMALLEST:
                # also keep a few of the largest Ritz vectors: they converge first, and holding them in
                # the basis deflates the dominant end that would otherwise re-enter every new block
                top = max(1, keep // 2)
                idx = torch.cat([_wanted(theta, keep - top, which)[0], torch.arange(j - 1, j - 1 - top, -1)])
            else:
                idx, _ = _wanted(theta, keep // 2 if which is Which.BOTH else keep, which)
            Yk = Y[:, idx]
            V[: idx.numel()], W[: idx.numel()] = Yk.T @ V[:j], Yk.T @ W[:j]
            j = idx.numel()
            V[j:], W[j:], T[:] = 0.0, 0.0, 0.0
            T[:j, :j] = torch.diag(theta[idx])
            r = _orthogonalize(r, V[:j])
        norm = r.norm()
        if norm <= 1e-10 * max(scale, 1e-300):  # invariant subspace: continue with a fresh direction
            V[j] = _random_unit(n, V[:j], gen)
        else:
            V[j] = r / norm


def tridiagonal(matvec: MatVec, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """Lanczos tridiagonal ``T`` ``(s, s)``, ``s <= steps``, from ``start``, with full reorthogonalization.

    Stops early (``s < steps``) when the Krylov space is invariant (``beta ~ 0``), so
    ``steps = n`` gives the exact spectrum of the part of ``A`` that ``start`` sees.
    Returns ``(T, matvecs)``.
    """
    n = start.numel()
    steps = min(int(steps), n)
    V = torch.zeros(steps, n, dtype=torch.float64)
    alphas, betas = [], []
    v = start.to(torch.float64)
    V[0] = v / v.norm()
    scale = 0.0
    for j in range(steps):
        w = matvec(V[j]).to(torch.float64)
        alphas.append(float(V[j] @ w))
        scale = max(scale, w.norm().item())
        if j == steps - 1:
            break
        r = _orthogonalize(w, V[: j + 1])
        beta = float(r.norm())
        if beta <= 1e-10 * max(scale, 1e-300):
            break
        betas.append(beta)
        V[j + 1] = r / beta
    s = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if s > 1:
        b = torch.tensor(betas[: s - 1], dtype=torch.float64)
        T += torch.diag(b, 1) + torch.diag(b, -1)
    return T, s
