"""Eval-mode BatchNorm folded into the preceding convolution, channels-last, per point.

In eval mode a BatchNorm after a convolution is an affine map per channel with fixed
statistics, so ``bn(conv(x; W, b))`` is the convolution with

    ``s = gamma / sqrt(running_var + eps)``,  ``W' = s W``,  ``b' = s (b - running_mean) + beta``

(Ioffe and Szegedy 2015, Sec. 3.1; the fold every inference engine applies). Per point of a
landscape this is one scale and shift of the weights, and the BatchNorm pass over the
activations disappears. Convolution nets also run channels-last (NHWC) here, which oneDNN
convolves without reordering to its blocked layout on every call. Both change only the
rounding: values agree with the plain ``functional_call`` to float32 rounding (tests: 1e-5
relative), never bit for bit, so the evaluator keeps the centre point on the plain path.

``FoldedForward.build(problem)`` traces the model with ``torch.fx``; a model that does not
trace, a BatchNorm in train mode or without running statistics, a convolution that feeds
anything besides its BatchNorm, inputs that are not one tensor or outputs that are not one
tensor leave that part unfolded or the fast path off (``None``). Before use the folded
forward is checked against ``problem.forward`` on a probe batch at ``theta0``.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from . import inputs as inp
from .private_model import structure_copy

logger = logging.getLogger(__name__)

_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
PROBE_SAMPLES = 4
PROBE_RTOL = 1e-4  # float32 rounding of a fold is ~1e-6 relative; a wrong fold is O(1)

# one folded graph per thread's private model (``Problem.local_model``), dropped with it
_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class FoldedPair:
    """A convolution ``conv`` whose only consumer is the eval-mode BatchNorm ``bn`` (module names)."""

    conv: str
    bn: str
    eps: float
    conv_has_bias: bool
    bn_affine: bool


class FoldedForward:
    """The model as an fx graph with BatchNorms folded into their convolutions.

    ``forward(params, X)``: the output at the parameters ``params`` (``{name: tensor}``, the
    names of the original model, as from ``space.unflatten``) on inputs ``X`` ``(n, ...)``.
    ``channels_last``: whether 4-D inputs and weights are laid out NHWC.
    """

    def __init__(self, graph: fx.GraphModule, pairs: list[FoldedPair], buffers: dict, frozen: dict, channels_last):
        self.graph = graph
        self.pairs = pairs
        self.buffers = buffers
        self.frozen = frozen
        self.channels_last = channels_last
        self._names = {n for n, _ in graph.named_parameters()} | {n for n, _ in graph.named_buffers()}
        self._folded_bn = {p.bn for p in pairs}

    # -- construction -------------------------------------------------------------
    @classmethod
    def build(cls, problem) -> FoldedForward | None:
        """The checked folded forward of ``problem`` in this thread, or ``None`` if it does not apply."""
        model = problem.local_model()
        if model in _FOLDED:
            return _FOLDED[model]
        folded = None
        try:
            folded = cls._trace(problem, model)
        except Exception as exc:  # the user's model does not trace: the plain path serves it
            logger.info("no folded forward for %s (%s)", type(model).__name__, exc)
        _FOLDED[model] = folded
        return folded

    @classmethod
    def _trace(cls, problem, model: nn.Module) -> FoldedForward | None:
        if problem.mode.value != "eval":
            return None
        modules = dict(model.named_modules())
        has_conv = any(type(m) in _CONV_BN for m in modules.values())
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values())
        if not (has_conv or has_bn):
            return None
        graph = fx.symbolic_trace(structure_copy(model))
        sub = dict(graph.named_modules())
        calls: dict[str, int] = {}
        for node in graph.graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        pairs = []
        for node in list(graph.graph.nodes):
            pair = _foldable(node, sub, calls, problem)
            if pair is None:
                continue
            conv_node = node.args[0]
            node.replace_all_uses_with(conv_node)
            graph.graph.erase_node(node)
            pairs.append(pair)
        for pair in pairs:
            conv = sub[pair.conv]
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
        graph.delete_all_unused_submodules()
        graph.recompile()
        X = problem.splits["train"].head(PROBE_SAMPLES)[0]
        four_d = any(t.dim() == 4 and t.is_floating_point() for _, t in inp.leaves(X))
        wants_cl = four_d and any(type(m) is nn.Conv2d for m in modules.values())
        buffers = {n: b for n, b in problem.buffers.items()}
        for layout in (True, False) if wants_cl else (False,):
            candidate = cls(graph, pairs, buffers, dict(problem.space.frozen), layout)
            if not pairs and not layout:
                return None  # nothing folded and plain layout: the plain path is the same work
            if candidate._agrees(problem):
                return candidate
        return None

    def _agrees(self, problem) -> bool:
        """Whether the folded output equals ``problem.forward`` at ``theta0`` on a probe batch."""
        X = problem.splits["train"].head(PROBE_SAMPLES)[0]
        try:
            with torch.no_grad():
                expected = problem.forward(problem.theta0, X)
                got = self.forward(problem.space.unflatten(problem.theta0), X, call=problem.call)
        except Exception as exc:
            logger.info("folded forward refused (channels_last=%s): %s", self.channels_last, exc)
            return False
        if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return False
        scale = expected.abs().max().clamp_min(1e-30)
        return bool(((got - expected).abs().max() <= PROBE_RTOL * scale).item())

    # -- per point ------------------------------------------------------------------
    def state(self, params: dict, buffers: dict | None = None, channels_last: bool | None = None) -> dict:
        """The folded graph's parameters and buffers at the model parameters ``params``
        (``{name: tensor}``, the original model's names) with the running statistics ``buffers``
        (default: the problem's)."""
        full = {**(self.buffers if buffers is None else buffers), **self.frozen, **params}
        state = {n: v for n, v in full.items() if n in self._names}
        for p in self.pairs:
            var, mean = full[f"{p.bn}.running_var"], full[f"{p.bn}.running_mean"]
            scale = torch.rsqrt(var + p.eps)
            shift = -mean * scale
            if p.bn_affine:
                scale = full[f"{p.bn}.weight"] * scale
                shift = full[f"{p.bn}.bias"] + full[f"{p.bn}.weight"] * shift
            weight = full[f"{p.conv}.weight"]
            state[f"{p.conv}.weight"] = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
            state[f"{p.conv}.bias"] = shift if not p.conv_has_bias else shift + scale * full[f"{p.conv}.bias"]
        if self.channels_last if channels_last is None else channels_last:
            state = {n: _nhwc(v) for n, v in state.items()}
        return state

    def forward(self, params: dict, X, buffers: dict | None = None, call=None) -> torch.Tensor:
        """Output at ``params`` on inputs ``X`` (a tensor, tuple or dict, ``landscape_core.inputs``).
        ``call``: ``problem.call`` (how the model takes its inputs and which output is the output)."""
        return call(self.graph, self.state(params, buffers), self.prepare(X))

    def forward_batched(self, params: dict, X, buffers: dict | None = None, call=None) -> torch.Tensor:
        """Outputs ``(k, n, ...)`` of ``k`` points at once (``params[name]``: ``(k, *shape)``),
        vmapped over points: one grouped convolution per layer, the GPU path. Plain layout
        (vmap does not carry memory formats)."""

        def one(p):
            return call(self.graph, self.state(p, buffers, channels_last=False), X)

        return torch.func.vmap(one)(params)

    def prepare(self, X):
        """``X`` in the layout the folded graph runs in (4-D float tensors channels-last)."""
        if not self.channels_last:
            return X
        return inp.apply(X, lambda t: _nhwc(t) if t.is_floating_point() else t)


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _foldable(node: fx.Node, modules: dict, calls: dict, problem) -> FoldedPair | None:
    """The ``FoldedPair`` if ``node`` is an eval-mode BatchNorm fed only by a convolution."""
    if node.op != "call_module":
        return None
    bn = modules.get(node.target)
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.training or not bn.track_running_stats:
        return None
    source = node.args[0] if node.args else None
    if len(node.args) != 1 or node.kwargs or not isinstance(source, fx.Node) or source.op != "call_module":
        return None
    conv = modules.get(source.target)
    if type(conv) not in _CONV_BN or type(bn) is not _CONV_BN[type(conv)] or len(source.users) != 1:
        return None
    if calls.get(node.target) != 1 or calls.get(source.target) != 1:
        return None  # a module called twice would be folded for both calls
    if f"{node.target}.running_var" not in problem.buffers or f"{node.target}.running_mean" not in problem.buffers:
        return None
    names = [f"{source.target}.{n}" for n, _ in conv.named_parameters()]
    names += [f"{node.target}.{n}" for n, _ in bn.named_parameters()]
    if not all(n in problem.space._by_name or n in problem.space.frozen for n in names):
        return None  # a tied or unusual parameter: leave it to the plain path
    return FoldedPair(
        conv=source.target,
        bn=node.target,
        eps=float(bn.eps),
        conv_has_bias=conv.bias is not None,
        bn_affine=bn.affine,
    )
