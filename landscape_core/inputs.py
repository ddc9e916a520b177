"""Model inputs and outputs in the forms real models use.

Inputs of a batch are one of three forms, with the samples on the first axis of every tensor:

* a tensor ``X`` ``(n, ...)``: the model is called as ``model(X)``;
* a tuple of tensors ``(a, b, ...)``: ``model(a, b, ...)``;
* a mapping ``{name: tensor}`` (a tokenizer's ``BatchEncoding`` too): ``model(**X)``,
  e.g. ``{"input_ids": (n, T), "attention_mask": (n, T)}``.

Outputs may be a tensor, a tuple or list (its first element), a mapping or a Hugging Face
``ModelOutput`` (its ``logits``, else its first tensor value), or whatever a user's
``output(model_output) -> tensor`` callable picks. Every function here keeps the form of
the inputs it is given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping

import numpy as np
import torch

from .identity import raw_bytes

Inputs = torch.Tensor | tuple | dict


def as_inputs(value, what: str) -> Inputs:
    """``value`` as one of the three input forms, numpy arrays turned into tensors.

    Raises ``ValueError`` naming the form found when it is none of them.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(
                f"{what} is a numpy array of Python objects (dtype object, shape {value.shape}); give numbers: "
                "a numeric array, a tensor, a tuple of tensors or a dict {name: tensor}."
            )
        return torch.as_tensor(value)
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{what} is an empty mapping; give {{name: tensor}} with the model's keyword arguments.")
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{what}: mapping keys must be argument names (str); got {key!r}.")
            out[key] = _leaf(item, f"{what}[{key!r}]")
        return out
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValueError(f"{what} is an empty tuple; give the model's positional arguments as tensors.")
        return tuple(_leaf(item, f"{what}[{i}]") for i, item in enumerate(value))
    raise ValueError(
        f"{what} must be a tensor, a tuple of tensors (model(*X)) or a dict of tensors (model(**X)); "
        f"got {type(value).__name__}."
    )


def _leaf(value, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.as_tensor(value)
    raise ValueError(
        f"{what} must be a tensor (samples on the first axis); got {type(value).__name__}. "
        "Strings must be tokenized into tensors before they reach the Problem."
    )


def leaves(X: Inputs) -> list[tuple[str, torch.Tensor]]:
    """``[(name, tensor)]`` in a fixed order: ``""`` for a tensor, ``"0", "1"...`` or the keys (sorted)."""
    if isinstance(X, torch.Tensor):
        return [("", X)]
    if isinstance(X, dict):
        return [(k, X[k]) for k in sorted(X)]
    return [(str(i), t) for i, t in enumerate(X)]


def apply(X: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    """``fn`` applied to every tensor of ``X``, keeping its form."""
    if isinstance(X, torch.Tensor):
        return fn(X)
    if isinstance(X, dict):
        return {k: fn(v) for k, v in X.items()}
    return tuple(fn(t) for t in X)


def count(X: Inputs, what: str) -> int:
    """Number of samples: the first axis, the same for every tensor (``ValueError`` otherwise)."""
    sizes = {name: (int(t.shape[0]) if t.dim() else None) for name, t in leaves(X)}
    if None in sizes.values():
        scalar = [name for name, s in sizes.items() if s is None]
        raise ValueError(f"{what}: {scalar} are 0-dimensional; every input tensor needs the samples on its first axis.")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{what}: input tensors disagree on the number of samples {sizes}; they must all match.")
    return next(iter(sizes.values()))


def to(X: Inputs, device, dtype: torch.dtype | None = None, non_blocking: bool = False) -> Inputs:
    """``X`` on ``device``; floating tensors cast to ``dtype`` (integer ids and masks keep theirs)."""

    def move(t: torch.Tensor) -> torch.Tensor:
        target = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return t.to(device=device, dtype=target, non_blocking=non_blocking)

    return apply(X, move)


def concat(parts: list[Inputs]) -> Inputs:
    """Batches of one form joined along the samples."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))


def describe(X: Inputs) -> str:
    """Short text of the form and shapes: ``of shape (16, 4)`` for a tensor,
    ``dict(input_ids=(16, 12) int64, attention_mask=(16, 12) int64)``, ``tuple(...)``."""

    def one(t: torch.Tensor) -> str:
        return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"

    if isinstance(X, torch.Tensor):
        return f"of shape {tuple(X.shape)}"
    if isinstance(X, dict):
        return "dict(" + ", ".join(f"{k}={one(v)}" for k, v in X.items()) + ")"
    return "tuple(" + ", ".join(one(t) for t in X) + ")"


def call_args(X: Inputs) -> tuple[tuple, dict]:
    """``(args, kwargs)`` to call a model on ``X``: ``(X,)``, ``X`` as a tuple, or ``**X``."""
    if isinstance(X, torch.Tensor):
        return (X,), {}
    if isinstance(X, dict):
        return (), X
    return tuple(X), {}


class Fingerprint:
    """sha256 of inputs and labels fed in batches: the same digest however the samples are cut
    (one hash per tensor over its bytes in sample order, then one over the form, names, dtypes,
    per-sample shapes, sample count and those hashes)."""

    def __init__(self):
        self._parts: dict[str, hashlib._Hash] = {}
        self._header: list[str] = []
        self.n = 0

    def add(self, X: Inputs, y: torch.Tensor) -> None:
        """Feed the next batch (samples in order)."""
        named = [(f"X{name}", t) for name, t in leaves(X)] + [("y", y)]
        header = [type(X).__name__] + [f"{name}:{tuple(t.shape[1:])}:{t.dtype}" for name, t in named]
        if not self._parts:
            self._header = header
            self._parts = {name: hashlib.sha256() for name, _ in named}
        elif header != self._header:
            raise ValueError(f"batches change form or shape ({header} after {self._header}); pad samples to one shape.")
        for name, t in named:
            self._parts[name].update(raw_bytes(t))
        self.n += int(y.shape[0])

    def hexdigest(self) -> str:
        h = hashlib.sha256(json.dumps([self._header, self.n]).encode())
        for name in sorted(self._parts):
            h.update(f"{name}:{self._parts[name].hexdigest()}".encode())
        return h.hexdigest()


def output_tensor(out, what: str = "the model") -> torch.Tensor:
    """The tensor a loss is computed on, from what a model returned (see the module docstring)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)  # ModelOutput also allows attribute access
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        for value in out.values():
            if isinstance(value, torch.Tensor):
                return value
        found = ", ".join(f"{k}: {type(v).__name__}" for k, v in out.items()) or "nothing"
    elif isinstance(out, (tuple, list)) and out:
        if isinstance(out[0], torch.Tensor):
            return out[0]
        found = f"a {type(out).__name__} whose first element is {type(out[0]).__name__}"
    else:
        found = type(out).__name__
    raise ValueError(
        f"{what} returned no tensor to compute the loss on ({found}); pass output=callable to the Problem, "
        "e.g. output=lambda out: out['scores'], to pick the logits or predictions."
    )
