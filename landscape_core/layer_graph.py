"""Which layer reads a layer's units: the graph check behind ``embedding_principle.widen``.

``plan(problem, layer)`` traces the model with ``torch.fx`` and follows the layer's output
through elementwise steps (activations, scalar arithmetic, eval-mode dropout; after a
``Conv2d`` also per-channel pooling and one ``flatten``) to the one ``Linear`` or ``Conv2d`` that
reads it. Splitting a unit keeps the function only along such a path: anything else (a
BatchNorm, a softmax across units, a residual connection, a second reader, the model's output)
is refused by name in a sentence. ``widenable_layers(problem)`` runs the check on every layer.
"""

from __future__ import annotations

import dataclasses
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .problem import Mode, Problem

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
    nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Tanhshrink,
    nn.Softshrink, nn.Hardshrink, nn.LogSigmoid, nn.Identity,
)  # fmt: skip
DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)  # identity in eval mode
CHANNEL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)  # per channel
ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, torch.exp, torch.sin, torch.cos, torch.square, torch.abs,
    torch.mul, torch.add, torch.sub, torch.neg, torch.clamp,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.tanh, F.sigmoid,
    F.softplus, F.softsign, F.hardtanh, F.hardsigmoid, F.hardswish, F.logsigmoid,
    operator.mul, operator.add, operator.sub, operator.truediv, operator.neg, operator.pow,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "relu",
    "tanh",
    "sigmoid",
    "exp",
    "mul",
    "add",
    "sub",
    "div",
    "neg",
    "pow",
    "square",
    "clamp",
    "abs",
}
LAYER_TYPES = (nn.Linear, nn.Conv2d)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """A widenable layer: the module, the layer reading its units (name and module), its unit
    count and ``block``, the consumer's inputs per unit (the spatial size after a flatten)."""

    layer: nn.Module
    consumer_name: str
    consumer: nn.Module
    units: int
    block: int


def _units(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def plan(problem: Problem, layer: str) -> LayerPlan:
    """Check that ``layer`` can be widened; the consumer and block size, else a ``ValueError`` saying why."""
    model = problem.model
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        names = [n for n, m in modules.items() if isinstance(m, LAYER_TYPES)]
        raise ValueError(f"layer must name a Linear or Conv2d module of the model, one of {names}; got {layer!r}.")
    module = modules[layer]
    if not isinstance(module, LAYER_TYPES):
        raise ValueError(
            f"layer {layer!r} is a {type(module).__name__}; widen splits units of Linear and Conv2d layers."
        )
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise ValueError(f"layer {layer!r} is a grouped Conv2d (groups={module.groups}); only groups=1 can be widened.")
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # data-dependent control flow and the like
        raise ValueError(
            f"the model's forward could not be traced with torch.fx ({type(exc).__name__}: {exc}); widen needs the "
            f"graph to see which layer reads the units of layer {layer!r}."
        ) from exc
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        raise ValueError(f"layer {layer!r} is called {len(calls)} times in the forward; widen needs exactly one call.")
    conv = isinstance(module, nn.Conv2d)
    region = _downstream(calls[0], modules)  # every node the units reach before a Linear/Conv2d reads them
    consumer, flatten = None, False
    for user in (n for n in graph.nodes if n in region and n is not calls[0]):  # in graph order
        kind = _kind(user, modules, conv, problem.mode)
        if kind == "output":
            raise ValueError(
                f"layer {layer!r} reaches the model's output without another Linear or Conv2d: its units are "
                "outputs (the last layer), and only hidden layers can be widened."
            )
        if kind == "layer":
            if consumer is not None:
                raise ValueError(
                    f"the units of layer {layer!r} are read by two layers ({consumer.target!r} and {user.target!r}); "
                    "widen needs exactly one."
                )
            consumer = user
            continue
        if kind == "flatten":
            if flatten or not conv:
                raise ValueError(
                    f"layer {layer!r}: {_name(user, modules)} can only follow a Conv2d once, before a Linear."
                )
            flatten = True
        elif kind != "elementwise":
            raise ValueError(
                f"layer {layer!r} is followed by {_name(user, modules)}, {kind}; widen supports a Linear or Conv2d "
                "followed by elementwise activations and then a Linear or Conv2d."
            )
        others = [a for a in user.all_input_nodes if a not in region]
        if others:
            raise ValueError(
                f"layer {layer!r}: {_name(user, modules)} also reads {others[0].name!r}; elementwise steps after the "
                "layer may combine its units only with each other and with numbers."
            )
    if consumer is None:
        raise ValueError(f"no Linear or Conv2d reads the units of layer {layer!r}; nothing to divide them between.")
    reads = [a for a in consumer.all_input_nodes if a not in region]
    if reads or len([n for n in graph.nodes if n.op == "call_module" and n.target == consumer.target]) != 1:
        raise ValueError(
            f"layer {consumer.target!r} (reading {layer!r}) is called more than once or reads other inputs."
        )
    target = modules[consumer.target]
    units = _units(module)
    if isinstance(target, nn.Linear):
        if conv and not flatten:
            raise ValueError(f"a Linear ({consumer.target!r}) reads the Conv2d {layer!r} without a flatten in between.")
        if target.in_features % units:
            raise ValueError(f"{consumer.target!r} has {target.in_features} inputs, not a multiple of {units} units.")
        block = target.in_features // units
        if block != 1 and not flatten:
            raise ValueError(f"{consumer.target!r} has {target.in_features} inputs for {units} units of {layer!r}.")
    else:
        if flatten or not conv or target.groups != 1 or target.in_channels != units:
            raise ValueError(
                f"the Conv2d {consumer.target!r} cannot read the {units} units of {layer!r} channel by channel."
            )
        block = 1
    return LayerPlan(module, consumer.target, target, units, block)


def _downstream(start: fx.Node, modules: dict) -> set:
    """``start`` and every node reachable from it through users, stopping at (and including) the
    output and any Linear/Conv2d call: the region in which the layer's units travel on their own."""
    region, frontier = {start}, [start]
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user in region:
                continue
            region.add(user)
            stop = user.op == "output" or (user.op == "call_module" and isinstance(modules[user.target], LAYER_TYPES))
            if not stop:
                frontier.append(user)
    return region


def _name(node: fx.Node, modules: dict) -> str:
    """How a graph node reads in a message: ``BatchNorm1d '1'``, ``function 'softmax'``, ``method 'view'``."""
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} {node.target!r}"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op.removeprefix('call_')} {target!r}"


def _kind(node: fx.Node, modules: dict, conv: bool, mode: Mode) -> str:
    """What a node after the layer is: elementwise, flatten, layer, output, or a reason it is not allowed."""
    if node.op == "output":
        return "output"
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, LAYER_TYPES):
            return "layer"
        if isinstance(module, ELEMENTWISE_MODULES) or (isinstance(module, nn.PReLU) and module.num_parameters == 1):
            return "elementwise"
        if isinstance(module, DROPOUT_MODULES):
            return "elementwise" if mode is Mode.EVAL else "dropout in train mode (a different mask per copy)"
        if conv and isinstance(module, CHANNEL_MODULES):
            return "elementwise"
        if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
            return "flatten"
        return "not an elementwise activation"
    if node.op == "call_function":
        if node.target in ELEMENTWISE_FUNCTIONS:
            return "elementwise"
        if node.target is torch.flatten and (node.args[1:2] == (1,) or node.kwargs.get("start_dim") == 1):
            return "flatten"
    if node.op == "call_method":
        if node.target in ELEMENTWISE_METHODS:
            return "elementwise"
        if node.target == "flatten" and node.args[1:2] == (1,):
            return "flatten"
    return "not an elementwise operation"


def widenable_layers(problem: Problem) -> dict[str, str | None]:
    """``{name: None if it can be widened else the reason why not}`` over the Linear/Conv2d layers."""
    out = {}
    for name, module in problem.model.named_modules():
        if isinstance(module, LAYER_TYPES):
            try:
                plan(problem, name)
                out[name] = None
            except ValueError as exc:
                out[name] = str(exc)
    return out
