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

``FoldedForward.build(problem)`` finds the pairs on a probe forward with hooks on a private
copy of the model (a BatchNorm whose input is the tensor a convolution just returned; not
``torch.fx``, whose tracing patches ``Module.__call__`` for every thread while it runs), and
builds a copy with each BatchNorm replaced by ``Identity``. A BatchNorm in train mode or
without running statistics, a module called twice or a tied parameter is left alone. Before
use the folded copy is checked against ``problem.forward`` on the probe batch at ``theta0`` and
at a nearby point that moves every parameter; a convolution whose output is also used elsewhere
fails that check, and the fast path falls back to fewer changes or none (``None``).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from . import inputs as inp
from .private_model import structure_copy

logger = logging.getLogger(__name__)

_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
PROBE_SAMPLES = 4
PROBE_RTOL = 1e-4  # float32 rounding of a fold is ~1e-6 relative; a wrong fold is O(1)
# samples per forward on CPU: the largest layer output of one slice stays within this many bytes.
# Measured (bench/README.md): a 2,000-image batch of the BatchNorm CNN ran 2-2.7x slower per point
# than slices of 64-256 images (16 MiB of the largest activation): large activations miss the
# caches and are page-faulted in afresh by every forward.
SLICE_BYTES = 16 * 2**20

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
    """A copy of the model with BatchNorms folded into their convolutions (``graph``).

    ``forward(params, X)``: the output at the parameters ``params`` (``{name: tensor}``, the
    names of the original model, as from ``space.unflatten``) on inputs ``X`` ``(n, ...)``.
    ``channels_last``: whether 4-D inputs and weights are laid out NHWC.
    """

    def __init__(
        self,
        graph: nn.Module,
        pairs: list[FoldedPair],
        buffers: dict,
        frozen: dict,
        channels_last,
        slice_samples: int | None = None,
    ):
        self.graph = graph
        self.slice_samples = slice_samples  # samples per forward in ``forward_slices`` (None: whole batch)
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
        except Exception as exc:  # the probe failed on the user's model: the plain path serves it
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
        X = problem.splits["train"].head(PROBE_SAMPLES)[0]
        pairs = _pairs_called(problem, X)
        four_d = any(t.dim() == 4 and t.is_floating_point() for _, t in inp.leaves(X))
        wants_cl = four_d and any(type(m) is nn.Conv2d for m in modules.values())
        buffers = dict(problem.buffers)
        largest = _largest_output_bytes(problem, X)
        slice_samples = max(1, SLICE_BYTES // largest) if largest else None
        attempts = [(pairs, True), (pairs, False), ([], True)] if wants_cl else [(pairs, False)]
        for chosen, layout in attempts:
            if not chosen and not layout:
                continue  # nothing folded and plain layout: the plain path is the same work
            candidate = cls(
                _folded_copy(model, chosen), chosen, buffers, dict(problem.space.frozen), layout, slice_samples
            )
            if candidate._agrees(problem, X):
                return candidate
        return None

    def _agrees(self, problem, X) -> bool:
        """Whether the folded output equals ``problem.forward`` on the probe batch ``X`` at
        ``theta0`` and at a nearby point that moves every parameter (so a BatchNorm that is the
        identity at ``theta0`` still shows a wrong fold), also when the batch runs in two
        slices (a model that mixes samples in eval mode cannot be sliced)."""
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(problem.space.size, generator=gen, dtype=torch.float64).to(problem.device, problem.dtype)
        nearby = problem.theta0 + 0.1 * noise * (problem.theta0.abs() + 0.1)
        for theta in (problem.theta0, nearby):
            try:
                with torch.no_grad():
                    expected = problem.forward(theta, X)
                    got = self.forward(problem.space.unflatten(theta), X, call=problem.call)
                    halves = [self.prepare(part) for part in _slices(X, max(1, inp.count(X, "inputs") // 2))]
                    sliced = self.forward_slices(problem.space.unflatten(theta), halves, call=problem.call)
            except Exception as exc:
                logger.info("folded forward refused (channels_last=%s): %s", self.channels_last, exc)
                return False
            if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
                return False
            scale = expected.abs().max().clamp_min(1e-30)
            for candidate in (got, sliced):
                if candidate.shape != expected.shape:
                    return False
                if not bool(((candidate - expected).abs().max() <= PROBE_RTOL * scale).item()):
                    return False
        return True

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

    def slices(self, X) -> list:
        """``X`` cut along the samples into slices of ``slice_samples``, each in the graph's layout."""
        size = self.slice_samples or inp.count(X, "inputs")
        return [self.prepare(part) for part in _slices(X, size)]

    def forward_slices(self, params: dict, slices: list, buffers: dict | None = None, call=None) -> torch.Tensor:
        """Output ``(n, ...)`` at ``params`` on a batch given as prepared slices (``slices``): the
        weights are folded once, each slice runs on its own, the outputs are joined."""
        state = self.state(params, buffers)
        outs = [call(self.graph, state, part) for part in slices]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

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


def _slices(X, size: int) -> list:
    """``X`` (a tensor, tuple or dict of tensors, samples first) cut into runs of ``size`` samples."""
    n = inp.count(X, "inputs")
    return [inp.apply(X, lambda t, a=a: t[a : a + size]) for a in range(0, n, size)]


def _largest_output_bytes(problem, X) -> int:
    """Bytes per sample of the largest tensor a leaf module returns on the probe batch ``X``
    (0 if none is seen): what sets the slice size of a forward."""
    copy = structure_copy(problem.local_model())
    n = inp.count(X, "inputs")
    largest = 0

    def hook(_module, _args, output):
        nonlocal largest
        if isinstance(output, torch.Tensor) and output.dim() and output.shape[0] == n:
            largest = max(largest, output[0].numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in copy.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            problem.call(
                copy, {**problem.buffers, **problem.space.frozen, **problem.space.unflatten(problem.theta0)}, X
            )
    finally:
        for h in handles:
            h.remove()
    return largest


def _pairs_called(problem, X) -> list[FoldedPair]:
    """Convolution -> eval-mode BatchNorm pairs seen on a probe forward: the BatchNorm's input is
    the very tensor the convolution returned, and each module runs once. (Forward hooks on a
    private copy; whether the convolution's output is also used elsewhere is what the probe of
    ``_agrees`` checks.)"""
    copy = structure_copy(problem.local_model())
    calls: list[tuple[str, nn.Module, int, int]] = []
    handles = []
    for name, module in copy.named_modules():
        if type(module) in _CONV_BN or isinstance(module, nn.modules.batchnorm._BatchNorm):

            def hook(module, args, output, name=name):
                first = args[0] if args else None
                calls.append((name, module, id(first), id(output)))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            output = problem.call(
                copy, {**problem.buffers, **problem.space.frozen, **problem.space.unflatten(problem.theta0)}, X
            )
    finally:
        for h in handles:
            h.remove()
    del output
    counts: dict[str, int] = {}
    for name, *_ in calls:
        counts[name] = counts.get(name, 0) + 1
    pairs = []
    for (conv_name, conv, _, conv_out), (bn_name, bn, bn_in, _) in zip(calls, calls[1:]):
        if type(conv) not in _CONV_BN or type(bn) is not _CONV_BN[type(conv)] or bn_in != conv_out:
            continue
        if counts[conv_name] != 1 or counts[bn_name] != 1 or bn.training or not bn.track_running_stats:
            continue
        if f"{bn_name}.running_var" not in problem.buffers or f"{bn_name}.running_mean" not in problem.buffers:
            continue
        names = [f"{conv_name}.{n}" for n, _ in conv.named_parameters()]
        names += [f"{bn_name}.{n}" for n, _ in bn.named_parameters()]
        if not all(n in problem.space._by_name or n in problem.space.frozen for n in names):
            continue  # a tied or unusual parameter: leave it to the plain path
        pairs.append(FoldedPair(conv_name, bn_name, float(bn.eps), conv.bias is not None, bn.affine))
    return pairs


def _folded_copy(model: nn.Module, pairs: list[FoldedPair]) -> nn.Module:
    """A structure copy of ``model`` with each pair's BatchNorm an ``Identity`` and its
    convolution given a bias (the folded shift)."""
    copy = structure_copy(model)
    for pair in pairs:
        conv = copy.get_submodule(pair.conv)
        conv = structure_copy(conv)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device))
        _set_submodule(copy, pair.conv, conv)
        _set_submodule(copy, pair.bn, nn.Identity())
    return copy


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
