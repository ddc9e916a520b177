"""The embedding principle: a narrower network's critical points sit, embedded, in a wider one's landscape.

``widen(problem, layer, width)`` splits hidden units of ``layer`` (Zhang et al. 2021, "Embedding
principle of loss landscape of deep neural networks"; Fukumizu & Amari 2000): each new unit
copies the incoming weights and bias of a source unit, and the source's outgoing weights
(the columns of the next layer that read it) are divided between the source and its copies
in shares that sum to 1. Every output is unchanged, so the loss is; the gradient of a copy's
incoming weights is its share times the source's, and of its outgoing weights equal to the
source's, so a critical point stays critical.

The Hessian at the widened point, in coordinates that separate the copies (a congruence, so
the counts of positive, zero and negative eigenvalues are kept, Sylvester's law of inertia),
is the narrow Hessian plus, for each source ``k`` split once with shares ``a`` and ``1 - a``:

    [[a (1 - a) S_k, M_k^T], [M_k, 0]],  S_k = E[(g . v_k) s''(z_k) x x^T]  (p x p),
                                          M_k = E[g s'(z_k) x^T]            (q x p),

with ``x`` the layer's input (and a 1 for the bias, ``p`` entries), ``z_k`` the unit's
pre-activation, ``s`` the activation, ``v_k`` its outgoing weights (``q`` outputs of the next
layer) and ``g`` the gradient of the loss with respect to the next layer's output. So the
widened point gains ``q - r`` zero eigenvalues (shifting outgoing weight between the copies
leaves the function as it is), ``r`` positive and ``r`` negative ones (``r = rank M_k``; ``M_k``
vanishes for one output), and the inertia of ``S_k`` restricted to the null space of ``M_k``
(all zeros for ReLU, whose ``s'' = 0``). A minimum of the narrow net becomes a saddle of the
wide one as soon as ``M_k`` is not zero or ``S_k`` has a negative direction (shares in (0, 1)).
``tests/test_embedding_principle.py`` checks these counts on exact float64 Hessians.

Supported: a ``Linear`` or ``Conv2d`` layer whose output goes through elementwise operations
(activations, scalar arithmetic, eval-mode dropout; for ``Conv2d`` also per-channel pooling and
one ``flatten``) into exactly one ``Linear`` or ``Conv2d`` that reads nothing else; the graph is
read with ``torch.fx`` (``layer_graph.py``) and anything else is refused by name.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .layer_graph import plan, widenable_layers
from .problem import Problem
from .results import ResultIO

Split = str | float | Sequence[float]
MAX_WIDTH = 100_000
__all__ = [
    "SplitCurvature",
    "Widening",
    "most_active_copy",
    "split_curvature",
    "split_direction",
    "unit_activity",
    "widen",
    "widenable_layers",
]


@dataclasses.dataclass(frozen=True)
class Widening:
    """How a widened problem was made (``problem.widening``).

    ``layer``/``consumer``: module names of the split layer and of the layer reading its units.
    ``units``: units before; ``width``: after. ``sources``: int64 ``(width - units,)``, the unit
    each new unit copies (new unit ``units + e`` copies ``sources[e]``). ``shares``: float64
    ``(width,)``, each unit's share of its source's outgoing weights (1 for units not split;
    the shares of a source and its copies sum to 1). ``block``: inputs of the consumer per
    unit (the spatial size when a flatten sits between a ``Conv2d`` and a ``Linear``; else 1).
    """

    layer: str
    consumer: str
    units: int
    width: int
    sources: np.ndarray
    shares: np.ndarray
    block: int
    seed: int
    split: str | list[float]

    def settings(self) -> dict:
        """JSON-ready summary (for result settings)."""
        return {
            "layer": self.layer,
            "consumer": self.consumer,
            "units": self.units,
            "width": self.width,
            "sources": self.sources.tolist(),
            "shares": self.shares.tolist(),
            "seed": self.seed,
            "split": self.split,
        }


def _shares(units: int, width: int, seed: int, split: Split) -> tuple[np.ndarray, np.ndarray, str | list[float]]:
    """``(sources (width - units,), shares (width,), split as recorded)``; see ``Widening``."""
    extra = width - units
    gen = torch.Generator().manual_seed(seed)
    sources = torch.randperm(units, generator=gen)[torch.arange(extra) % units].numpy().astype(np.int64)
    shares = np.ones(width)
    groups = {int(k): [units + e for e in np.flatnonzero(sources == k)] for k in np.unique(sources)}
    if isinstance(split, str):
        if split not in ("random", "half"):
            raise ValueError(f"split must be 'random', 'half', a number or {extra} numbers; got {split!r}.")
        for k, copies in groups.items():
            if split == "half":
                parts = np.full(len(copies) + 1, 1.0 / (len(copies) + 1))
            else:  # uniform on the simplex: normalized Exp(1) draws
                draws = -torch.log(torch.rand(len(copies) + 1, generator=gen, dtype=torch.float64)).numpy()
                parts = draws / draws.sum()
            shares[k], shares[copies] = parts[0], parts[1:]
        return sources, shares, split
    try:
        given = np.broadcast_to(np.asarray(split, dtype=np.float64), (extra,)).copy()
    except (TypeError, ValueError):
        raise ValueError(
            f"split must be 'random', 'half', a number or {extra} numbers (one per new unit); got {split!r}."
        ) from None
    if not np.isfinite(given).all():
        raise ValueError(f"split shares must be finite numbers; got {given.tolist()}.")
    shares[units:] = given
    for k, copies in groups.items():
        shares[k] = 1.0 - given[np.asarray(copies) - units].sum()
    return sources, shares, given.tolist()


def widen(problem: Problem, layer: str, width: int, seed: int = 0, split: Split = "random") -> Problem:
    """The same network with hidden layer ``layer`` widened to ``width`` units, at the lifted point.

    ``layer``: module name (``"0"`` for the first Linear of a Sequential). ``width``: units after
    (more than now). ``seed``: which units are split (a seeded permutation, cycled) and the
    random shares. ``split``: ``"random"`` (uniform on the simplex for each source and its
    copies), ``"half"`` (equal shares), a number (each copy's share; the source keeps the rest)
    or one number per new unit. The new ``Problem`` keeps the loss, metrics, data, mode and
    batch size; ``.widening`` (``Widening``) says how it was made. Built from
    ``problem.theta0`` and ``problem.buffers``, not from the model's stored weights.
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a Problem; got {type(problem).__name__}.")
    found = plan(problem, layer)
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not found.units < width <= MAX_WIDTH:
        raise ValueError(f"width must be an integer from {found.units + 1} to {MAX_WIDTH}; got {width!r}.")
    width = int(width)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    sources, shares, recorded = _shares(found.units, width, int(seed), split)

    model = copy.deepcopy(problem.model)
    with torch.no_grad():
        for name, value in problem.space.unflatten(problem.theta0).items():
            model.get_parameter(name).copy_(value)
        for name, value in problem.buffers.items():
            model.get_buffer(name).copy_(value)
    modules = dict(model.named_modules())
    index = torch.cat([torch.arange(found.units), torch.from_numpy(sources)])
    _widen_layer(modules[layer], index, width)
    _widen_consumer(modules[found.consumer_name], index, torch.from_numpy(shares), found.block, width)

    splits = problem.splits
    wide = Problem(
        model,
        problem.loss,
        train=(splits["train"].X, splits["train"].y),
        val=(splits["val"].X, splits["val"].y) if "val" in splits else None,
        metrics=dict(problem.metrics),
        batch_size=problem.batch_size,
        device=problem.device,
        mode=problem.mode.value,
    )
    _check_same_outputs(problem, wide, layer)
    wide.widening = Widening(
        layer, found.consumer_name, found.units, width, sources, shares, found.block, int(seed), recorded
    )
    return wide


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.contiguous(), requires_grad=old.requires_grad))


def _widen_layer(module: nn.Module, index: torch.Tensor, width: int) -> None:
    """Rows (output units) ``index`` of the layer's weight and bias: each new unit copies its source."""
    _replace(module, "weight", module.weight.detach()[index.to(module.weight.device)])
    if module.bias is not None:
        _replace(module, "bias", module.bias.detach()[index.to(module.bias.device)])
    if isinstance(module, nn.Linear):
        module.out_features = width
    else:
        module.out_channels = width


def _widen_consumer(module: nn.Module, index: torch.Tensor, shares: torch.Tensor, block: int, width: int) -> None:
    """Columns of the consumer: unit ``j`` reads with its source's weights times ``shares[j]``."""
    weight = module.weight.detach()
    out = weight.shape[0]
    grouped = weight.reshape(out, -1, block, *weight.shape[2:])  # (out, units, block, ...)
    scale = shares.to(weight.device, weight.dtype).reshape(1, -1, *([1] * (grouped.dim() - 2)))
    new = (grouped[:, index.to(weight.device)] * scale).reshape(out, width * block, *weight.shape[2:])
    _replace(module, "weight", new)
    if isinstance(module, nn.Linear):
        module.in_features = width * block
    else:
        module.in_channels = width


def _check_same_outputs(narrow: Problem, wide: Problem, layer: str) -> None:
    """Refuse a widening that changed the outputs (a use of the units the graph did not show)."""
    split = narrow.splits["train"]
    X = split.X[: min(split.n, 64)]
    with torch.no_grad():
        before, after = narrow.forward(narrow.theta0, X), wide.forward(wide.theta0, X)
    if before.shape != after.shape:
        raise ValueError(
            f"widening {layer!r} changed the output shape from {tuple(before.shape)} to {tuple(after.shape)}."
        )
    eps = torch.finfo(before.dtype).eps
    gap = float((before - after).abs().max())
    if gap > 1e4 * eps * (1.0 + float(before.abs().max())):
        raise ValueError(
            f"widening {layer!r} changed the outputs by up to {gap:.3g}; the model uses the layer's units in a way "
            "widen does not see, so it is refused."
        )


def split_direction(wide: Problem, kind: str = "outgoing", copy: int = 0, seed: int = 0) -> torch.Tensor:
    """A unit direction ``(P,)`` of the widened space that moves new unit ``copy`` against its source.

    ``"outgoing"``: shift outgoing weight (along the source's own outgoing weights) from the
    source to the copy; the function does not change, so the loss is exactly flat along it
    and it stays critical (a line of critical points). ``"incoming"``: move the two units'
    incoming weights (and biases) apart along a random direction ``u`` (Gaussian, from ``seed``),
    ``+a u`` on the source and ``-c u`` on the copy (``a``, ``c``: the copy's and the source's
    shares), keeping their share-weighted mean: the first-order change cancels and the
    curvature is ``a c (a + c) u^T S u / ((a^2 + c^2) |u|^2)``. (Not along the weights
    themselves: for a positively homogeneous activation such as ReLU that is exactly flat.)
    """
    info = _widening(wide)
    if kind not in ("outgoing", "incoming"):
        raise ValueError(f"kind must be 'outgoing' or 'incoming'; got {kind!r}.")
    extra = info.width - info.units
    if isinstance(copy, bool) or not isinstance(copy, (int, np.integer)) or not 0 <= copy < extra:
        raise ValueError(f"copy must be an integer from 0 to {extra - 1} (one per new unit); got {copy!r}.")
    source, new = int(info.sources[copy]), info.units + int(copy)
    params = wide.space.unflatten(wide.theta0)
    step = {name: torch.zeros_like(t) for name, t in params.items()}
    if kind == "outgoing":
        name = f"{info.consumer}.weight"
        if name not in step:
            raise ValueError(f"{name} is frozen (requires_grad=False); the outgoing direction lives there.")
        grouped = params[name].reshape(params[name].shape[0], info.width, info.block, -1)
        along = grouped[:, source] / info.shares[source] if info.shares[source] else grouped[:, new]
        view = step[name].reshape(grouped.shape)
        view[:, source], view[:, new] = along, -along
    else:
        share_source, share_new = float(info.shares[source]), float(info.shares[new])
        gen = torch.Generator().manual_seed(int(seed))
        for leaf in ("weight", "bias"):
            name = f"{info.layer}.{leaf}"
            if name in step:
                u = torch.randn(params[name][source].shape, generator=gen, dtype=torch.float64)
                u = u.to(step[name].device, step[name].dtype)
                step[name][source], step[name][new] = share_new * u, -share_source * u
    vector = wide.space.flatten(step)
    norm = vector.double().norm()
    if not norm > 0:
        raise ValueError(f"the {kind} direction of copy {copy} is zero (the source's weights are zero there).")
    from .directions import register

    vector = (vector.double() / norm).to(wide.dtype)
    info_ = {"kind": f"split-{kind}", "layer": info.layer, "copy": int(copy)}
    return register(vector, {**info_, "seed": int(seed)} if kind == "incoming" else info_)


def unit_activity(wide: Problem, max_samples: int = 1024) -> np.ndarray:
    """float64 ``(width,)``: how much each unit of the widened layer varies over the data.

    The standard deviation, over the first ``max_samples`` training inputs, of what the consumer
    reads from the unit (its activation; for a ``Conv2d``, over samples and positions). 0 for a
    unit whose output is constant (a dead ReLU): splitting it changes nothing the loss can see.
    """
    info = _widening(wide)
    consumer = wide.local_model().get_submodule(info.consumer)  # the copy this thread's forward runs
    seen: list[torch.Tensor] = []
    handle = consumer.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    try:
        split = wide.splits["train"]
        with torch.no_grad():
            wide.forward(wide.theta0, split.X[:max_samples])
    finally:
        handle.remove()
    inputs = seen[0].double()
    if isinstance(consumer, nn.Linear):  # (..., width * block): unit j owns columns j*block .. (j+1)*block
        per_unit = inputs.reshape(-1, info.width, info.block).transpose(0, 1).reshape(info.width, -1)
    else:  # Conv2d reads (N, width, H, W)
        per_unit = inputs.transpose(0, 1).reshape(info.width, -1)
    return per_unit.std(dim=1, correction=0).cpu().numpy()


def most_active_copy(wide: Problem) -> int:
    """The new unit whose source varies most over the data (a copy of a dead unit shows nothing)."""
    info = _widening(wide)
    return int(np.argmax(unit_activity(wide)[info.sources]))


def _widening(wide: Problem) -> Widening:
    info = getattr(wide, "widening", None)
    if not isinstance(info, Widening):
        raise ValueError("this needs a Problem made by widen() (it has no .widening).")
    return info


@dataclasses.dataclass(frozen=True)
class SplitCurvature(ResultIO):
    """The Hessian along the split directions of one new unit, at the widened point.

    ``kinds``: ``["outgoing", "incoming"]``. ``curvatures``: float64 ``(2,)``, ``d^T H d`` for the
    unit directions of ``split_direction``. ``residuals``: float64 ``(2,)``, ``||H d - (d^T H d) d||``:
    0 when ``d`` is an eigenvector; the outgoing direction has curvature 0 everywhere (the loss
    is constant along it) and residual 0 at a critical point (a zero eigenvalue: a line of
    critical points). ``gradient_norm``: ``||grad L||`` at the widened point, how far it is from
    critical (the residual grows with it). ``settings``: how it was made.
    """

    kinds: list
    curvatures: np.ndarray
    residuals: np.ndarray
    gradient_norm: float
    settings: dict

    def to_csv(self) -> str:
        lines = ["direction,curvature,residual"]
        lines += [f"{k},{float(c)!r},{float(r)!r}" for k, c, r in zip(self.kinds, self.curvatures, self.residuals)]
        return "\n".join(lines) + "\n"


def split_curvature(
    wide: Problem, copy: int = 0, seed: int = 0, dtype=None, progress=None, cancel=None
) -> SplitCurvature:
    """Curvature and eigen-residual of the Hessian along both split directions of new unit ``copy``
    (``seed``: the incoming direction's draw).

    Two exact Hessian-vector products (``hvp.HessianOperator``; ``dtype="float64"`` for a float64
    copy of model and data).
    """
    from .directions import digest
    from .hvp import HessianOperator, curvature_settings

    kinds = ["outgoing", "incoming"]
    vectors = [split_direction(wide, kind, copy, seed) for kind in kinds]
    op = HessianOperator(wide, dtype=dtype, progress=progress, cancel=cancel, expected=2)
    curvatures, residuals = [], []
    for d in vectors:
        u = d.to("cpu", torch.float64)
        hu = op.matvec(u)
        curvature = float(u @ hu)
        curvatures.append(curvature)
        residuals.append(float((hu - curvature * u).norm()))
    settings = {
        "kind": "split_curvature",
        "copy": int(copy),
        "seed": int(seed),
        "widening": wide.widening.settings(),
        "direction_sha256": [digest(d) for d in vectors],
        **curvature_settings(wide, None, dtype, "auto"),
    }
    theta = wide.theta0.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(wide.full_loss(theta), theta)
    return SplitCurvature(kinds, np.array(curvatures), np.array(residuals), float(gradient.double().norm()), settings)
