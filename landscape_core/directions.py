"""Directions in parameter space: random (filter/layer/no normalization) and axis vectors.

Every direction is a flat ``(P,)`` tensor of ``problem.space``. Each function registers
how a direction was made (``provenance``), so a surface drawn along it can say so.
Hessian, PCA and checkpoint-plane directions live beside their algorithms
(``hessian.py``, ``trajectory.py``, ``checkpoint_plane.py``) and are re-exported here; those
modules register provenance through ``provenance.py`` and never import this one, so the
dependencies run one way.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import torch

from .provenance import digest, provenance, register  # noqa: F401  (part of this module's API)
from .space import ParamKind


class Norm(str, Enum):
    """How a random direction is scaled to the model (Li et al. 2018)."""

    FILTER = "filter"  # each output slice (conv filter, linear row) to the norm of theta0's slice
    LAYER = "layer"  # each tensor to the norm of theta0's tensor
    NONE = "none"  # raw N(0, 1) entries


def random(
    problem,
    count: int = 2,
    norm: Norm | str = "filter",
    ignore: Iterable[str] = ("bias", "norm"),
    orthogonal: bool = False,
    seed: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gaussian directions, ``(count, P)``, scaled to the model.

    ``norm="filter"``: every tensor of dim > 1 is split into output slices (rows of a
    linear weight, filters of a conv); each slice of the direction is rescaled to the norm
    of the same slice of ``theta0``. Tensors of dim <= 1 that are not ignored are treated
    as one slice (layer-wise), never element-wise. ``"layer"``: each tensor rescaled to the
    norm of theta0's tensor. ``"none"``: raw N(0, 1).

    ``ignore``: kinds set exactly to zero: ``"bias"`` and/or ``"norm"`` (normalization-layer
    weights and biases). With ``ignore=()`` they get the normalization above like any tensor.
    ``mask``: boolean ``(P,)``; entries outside it are zero (analysis restricted to a subset).
    ``orthogonal``: Gram-Schmidt in float64, each vector then rescaled to its norm before
    orthogonalization, so scales stay comparable.

    The draw is made on the CPU from ``torch.Generator().manual_seed(seed)`` over the whole
    space, so the same seed gives the same directions on any device, batch size or mask.

    >>> d = random(problem, count=2, seed=0)   # doctest: +SKIP
    >>> d.shape                                  # doctest: +SKIP
    torch.Size([2, P])
    """
    allowed_norms = [n.value for n in Norm]
    if norm not in allowed_norms:
        raise ValueError(f"norm must be one of {allowed_norms}; got {norm!r}.")
    norm = Norm(norm)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}.")
    _check_memory(problem, count)
    if isinstance(ignore, str):
        ignore = (ignore,)
    allowed_kinds = [k.value for k in ParamKind if k is not ParamKind.WEIGHT]
    for k in ignore:
        if k not in allowed_kinds:
            raise ValueError(f"ignore may name {allowed_kinds}; got {k!r} in ignore={tuple(ignore)!r}.")
    ignore_kinds = {ParamKind(k) for k in ignore}
    space = problem.space
    theta0 = problem.theta0.detach().to("cpu")
    gen = torch.Generator().manual_seed(int(seed))
    # drawn in float32 (the same numbers for every model dtype), each tensor's slice scaled in
    # float64 and rounded once into the output: no float64 copy of the whole space is held
    # (on a 22.7M-parameter encoder the whole-space float64 copies were most of a plane's peak)
    raw = torch.randn(count, space.size, generator=gen, dtype=torch.float32)
    out_dtype = torch.float64 if orthogonal else problem.dtype
    directions = raw if out_dtype == torch.float32 else torch.empty(count, space.size, dtype=out_dtype)
    for p in space.params:
        if p.kind in ignore_kinds:
            directions[:, p.slice] = 0
        elif norm is Norm.NONE:
            if directions is not raw:
                directions[:, p.slice] = raw[:, p.slice].to(out_dtype)
        elif norm is Norm.FILTER and len(p.shape) > 1:
            # each output slice on its own, in blocks of rows (a 30k x 384 embedding matrix in
            # float64 at once was a transient of half a GiB)
            start, rows = p.slice.start, p.shape[0]
            width = p.numel // rows
            step = max(1, BLOCK_ENTRIES // max(width, 1))
            for r in range(0, rows, step):
                block = slice(start + r * width, start + min(rows, r + step) * width)
                d = raw[:, block].double().reshape(count, -1, width)
                w = theta0[block].double().reshape(1, -1, width)
                directions[:, block] = _scaled(d, w).reshape(count, -1).to(out_dtype)
        else:  # one slice: the whole tensor (layer-wise, and tensors of dim <= 1)
            d = raw[:, p.slice].double().reshape(count, 1, -1)
            w = theta0[p.slice].double().reshape(1, 1, -1)
            directions[:, p.slice] = _scaled(d, w).reshape(count, -1).to(out_dtype)
    if mask is not None:
        space.check(mask, "mask")
        if mask.dtype is not torch.bool:
            raise ValueError(f"mask must be a boolean tensor (from problem.space.mask); got dtype {mask.dtype}.")
        directions.mul_(mask.to("cpu", directions.dtype))  # 0 or 1: exact in any dtype
        if not directions.abs().amax(dim=1).gt(0).all():
            raise ValueError("mask leaves no direction entry non-zero (it selects only ignored parameters).")
    if orthogonal:
        directions = _gram_schmidt(directions)
    directions = directions.to(problem.device, problem.dtype)
    settings = {
        "kind": "random",
        "norm": norm.value,
        "ignore": sorted(k.value for k in ignore_kinds),
        "orthogonal": bool(orthogonal),
        "seed": int(seed),
        "count": count,
        "masked": mask is not None,
    }
    return register(directions, settings)


BLOCK_ENTRIES = 2**20  # entries of a parameter scaled at once in float64 (filter normalization)
BYTES_PER_ENTRY = 4 + 8 + 8  # the float32 draw, the output (float64 at most), its copy on the model's device


def _scaled(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``d`` ``(count, slices, n)`` with each slice rescaled to the norm of ``w``'s ``(1, slices, n)``."""
    return d * (w.norm(dim=-1, keepdim=True) / d.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def _check_memory(problem, count: int) -> None:
    """Refuse ``count`` directions whose working memory exceeds the budget (``guards.memory_budget``)."""
    from .guards import LimitError, memory_budget

    need = count * problem.space.size * BYTES_PER_ENTRY
    budget = memory_budget()
    if need > budget:
        raise LimitError(
            f"{count:,} random directions of {problem.space.size:,} parameters need about {need / 2**30:.2f} GiB, "
            f"over the memory budget of {budget / 2**30:.2f} GiB; ask for fewer directions "
            f"(at most {max(1, budget // (problem.space.size * BYTES_PER_ENTRY)):,} here) or raise "
            "LANDSCAPE_MEMORY_BUDGET_MB."
        )


def _gram_schmidt(vectors: torch.Tensor) -> torch.Tensor:
    """Orthogonalize rows in float64, keeping each row's original norm."""
    v = vectors.double()
    norms = v.norm(dim=1)
    out = []
    for i in range(v.shape[0]):
        u = v[i].clone()
        for q in out:
            u -= (u @ q) * q
        n = u.norm()
        if n < 1e-12 * max(norms[i].item(), 1e-300):
            raise ValueError(f"direction {i} is linearly dependent on the previous ones; cannot orthogonalize.")
        out.append(u / n)
    return (torch.stack(out) * norms[:, None]).to(vectors.dtype)


def axis(problem, name: str, index: int | tuple[int, ...] = 0) -> torch.Tensor:
    """Unit vector ``(P,)`` of one parameter entry, e.g. ``axis(problem, "0.weight", (0, 0))``.

    Lets a small model be drawn over its raw parameters (slope and intercept of a line).
    """
    info = problem.space[name]
    flat = torch.zeros(info.numel, dtype=torch.long)
    try:
        position = flat.reshape(info.shape)[index] if info.shape else flat
        if position.numel() != 1:
            raise IndexError
        offset = int(torch.arange(info.numel).reshape(info.shape or (1,))[index if info.shape else 0])
    except (IndexError, TypeError):
        raise ValueError(f"index {index!r} does not name one entry of {name!r} with shape {info.shape}.") from None
    direction = torch.zeros(problem.space.size, dtype=problem.dtype, device=problem.device)
    direction[info.offset + offset] = 1.0
    return register(
        direction, {"kind": "axis", "name": name, "entry": list(index) if isinstance(index, tuple) else index}
    )


def through(theta_a: torch.Tensor, theta_b: torch.Tensor, theta_c: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``(2, P)`` axes of the plane through three checkpoints, origin ``theta_a``.

    See ``checkpoint_plane.through``; ``checkpoint_plane.plane_through`` draws the surface with the models on it.
    """
    from .checkpoint_plane import through as _through

    return _through(theta_a, theta_b, theta_c)


def pca(
    thetas, reference="final", n_components: int = 2, variant="li2018", ignore=("bias", "norm"), space=None
) -> torch.Tensor:
    """PCA directions ``(n_components, P)`` of a trajectory (orthonormal; centre them at the reference point).

    See ``trajectory.pca`` (``variant``: Li et al. 2018's centred PCA or ``"uncentred"``; ``ignore``
    needs ``space``), which also returns coordinates, explained variance and trustworthiness.
    """
    from .trajectory import pca as _pca

    result = _pca(thetas, reference=reference, n_components=n_components, variant=variant, ignore=ignore, space=space)
    return result.directions


def hessian(problem, which=("largest", "smallest"), **kwargs) -> torch.Tensor:
    """Unit Hessian eigenvectors ``(len(which), P)``, one per entry of ``which`` (``"largest"``/``"smallest"``).

    Slices along the extreme eigenvectors show the true curvature (and saddles), where random
    slices see about ``trace / P`` (Boettcher & Wheeler 2022). ``kwargs`` go to
    ``hessian.top_eigenvalues`` (``tol``, ``max_iter``, ``mask``, ``seed``, ``dtype``...).
    Each row is registered with its eigenvalue and residual.
    """
    from . import hessian as _hessian

    which = (which,) if isinstance(which, str) else tuple(which)
    bad = [w for w in which if w not in ("largest", "smallest")]
    if not which or bad:
        raise ValueError(f"which must hold 'largest' and/or 'smallest'; got {which!r}.")
    mode = "both" if len(set(which)) == 2 else which[0]
    spectrum = _hessian.top_eigenvalues(problem, k=1, which=mode, **kwargs)
    rows = []
    for w in which:
        i = list(spectrum.ends).index(w)
        vector = spectrum.vectors[i].to(problem.device, problem.dtype)
        settings = {
            "kind": "hessian",
            "which": w,
            "eigenvalue": float(spectrum.values[i]),
            "residual": float(spectrum.residuals[i]),
            "converged": bool(spectrum.converged[i]),
        }
        rows.append(register(vector, settings))
    return torch.stack(rows)
