"""The parameter space of a model: one flat 1-D vector per point or direction.

Every point (``theta``) and every direction in this library is a flat tensor of
length ``P = space.size``. ``ParamSpace`` records where each named parameter
lives in that vector, what kind of tensor it is (weight, bias, normalization
parameter) and which module owns it, and turns flat vectors back into the
``{name: tensor}`` dicts that ``torch.func.functional_call`` takes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = (*_NORM_TYPES, nn.RMSNorm)


class ParamKind(str, Enum):
    """What a parameter tensor is, for normalization and ignore rules."""

    WEIGHT = "weight"
    BIAS = "bias"
    NORM = "norm"


@dataclass(frozen=True)
class ParamInfo:
    """One named parameter tensor inside the flat vector.

    ``offset``/``numel`` locate it: ``theta[offset:offset + numel]``.
    ``module`` is the owning module's qualified name ("" for the root),
    ``module_type`` its class name.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int
    kind: ParamKind
    module: str
    module_type: str

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


class ParamSpace:
    """Layout of a model's parameters as one flat vector.

    Built from a module; only parameters with ``requires_grad`` take part
    (frozen parameters stay at their values and are passed as constants).
    Buffers (BatchNorm running statistics) are listed in ``buffer_names`` but
    are not part of the vector.

    >>> space = ParamSpace(nn.Linear(3, 2))
    >>> space.size, [p.kind.value for p in space.params]
    (8, ['weight', 'bias'])
    """

    def __init__(self, model: nn.Module):
        modules = dict(model.named_modules())
        params: list[ParamInfo] = []
        offset = 0
        self.frozen: dict[str, torch.Tensor] = {}
        for name, tensor in model.named_parameters():
            if not tensor.requires_grad:
                self.frozen[name] = tensor.detach()
                continue
            module_name, _, leaf = name.rpartition(".")
            module = modules.get(module_name, model)
            if isinstance(module, _NORM_TYPES):
                kind = ParamKind.NORM
            elif leaf == "bias" or leaf.endswith("_bias"):
                kind = ParamKind.BIAS
            else:
                kind = ParamKind.WEIGHT
            params.append(
                ParamInfo(
                    name=name,
                    shape=tuple(tensor.shape),
                    offset=offset,
                    numel=tensor.numel(),
                    kind=kind,
                    module=module_name,
                    module_type=type(module).__name__,
                )
            )
            offset += tensor.numel()
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True); nothing to analyse.")
        self.params: tuple[ParamInfo, ...] = tuple(params)
        self.size: int = offset
        self.buffer_names: tuple[str, ...] = tuple(name for name, _ in model.named_buffers())
        self._by_name = {p.name: p for p in self.params}

    # -- layout ---------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [p.shape for p in self.params]

    @property
    def offsets(self) -> list[int]:
        return [p.offset for p in self.params]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, name: str) -> ParamInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter named {name!r}; the space has: {', '.join(self.names)}") from None

    def signature(self) -> list[list]:
        """JSON-ready description of the layout (names, shapes, kinds); used in hashes."""
        return [[p.name, list(p.shape), p.kind.value] for p in self.params]

    # -- conversion -----------------------------------------------------------
    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``{name: tensor}`` (a state dict is fine) into a flat ``(P,)`` tensor."""
        missing = [p.name for p in self.params if p.name not in tensors]
        if missing:
            raise KeyError(f"missing parameters: {', '.join(missing)}")
        parts = []
        for p in self.params:
            t = tensors[p.name]
            if tuple(t.shape) != p.shape:
                raise ValueError(f"parameter {p.name!r} has shape {tuple(t.shape)}; the model expects {p.shape}.")
            parts.append(t.detach().reshape(-1))
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a flat ``(P,)`` (or batched ``(..., P)``) tensor as ``{name: tensor}``.

        Gradients flow through the views, so the result can be passed to
        ``torch.func.functional_call`` inside ``torch.func.grad``/``vmap``.
        """
        self.check(vector, "vector", batched=True)
        lead = vector.shape[:-1]
        return {p.name: vector[..., p.slice].reshape(tuple(lead) + p.shape) for p in self.params}  # 0-dim ok

    def check(self, vector: torch.Tensor, what: str = "direction", batched: bool = False) -> None:
        """Raise ``ValueError`` unless ``vector`` is a flat vector of this space."""
        if not isinstance(vector, torch.Tensor):
            raise ValueError(f"{what} must be a torch.Tensor; got {type(vector).__name__}.")
        ok = vector.shape[-1:] == (self.size,) and (batched or vector.dim() == 1)
        if not ok:
            want = f"(..., {self.size})" if batched else f"({self.size},)"
            raise ValueError(f"{what} has shape {tuple(vector.shape)}; this model's parameter space needs {want}.")

    # -- masks ----------------------------------------------------------------
    def mask(
        self,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        modules: str | Iterable[str] | None = None,
        kinds: Iterable[ParamKind | str] | None = None,
    ) -> torch.Tensor:
        """Boolean ``(P,)`` mask selecting a subset of parameters.

        ``include``/``exclude``: glob patterns on parameter names (``"fc1.*"``)
        or regular expressions prefixed with ``re:``. ``modules``: owning module
        names or their prefixes (``"layer1"`` selects ``layer1.0.conv.weight``).
        ``kinds``: any of ``"weight"``, ``"bias"``, ``"norm"``. Criteria combine
        with AND; ``exclude`` removes. A mask that selects nothing is an error.
        """
        selected = self.select(include=include, exclude=exclude, modules=modules, kinds=kinds)
        mask = torch.zeros(self.size, dtype=torch.bool)
        for p in selected:
            mask[p.slice] = True
        return mask

    def select(self, include=None, exclude=None, modules=None, kinds=None) -> list[ParamInfo]:
        """The ``ParamInfo`` entries that ``mask`` would select."""
        include = _as_list(include)
        exclude = _as_list(exclude)
        modules = _as_list(modules)
        kind_set = {ParamKind(k) for k in kinds} if kinds is not None else None
        chosen = []
        for p in self.params:
            if include and not any(_match(pat, p.name) for pat in include):
                continue
            if exclude and any(_match(pat, p.name) for pat in exclude):
                continue
            if modules and not any(p.module == m or p.module.startswith(m + ".") for m in modules):
                continue
            if kind_set is not None and p.kind not in kind_set:
                continue
            chosen.append(p)
        if not chosen:
            raise ValueError(
                f"mask selects no parameters (include={include}, exclude={exclude}, modules={modules}, "
                f"kinds={kinds}); parameter names are: {', '.join(self.names)}"
            )
        return chosen


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _match(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.search(pattern[3:], name) is not None
    return fnmatch.fnmatchcase(name, pattern) or name == pattern
