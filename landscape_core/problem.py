"""``Problem``: a model, a loss and data, evaluated at any point of its parameter space."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum

import numpy as np
import torch
from torch import nn

from . import inputs as inp
from .identity import raw_bytes
from .metrics import BUILTIN_METRICS, IGNORE_INDEX, Accuracy, accuracy, class_axis
from .private_model import PrivateModels
from .space import ParamSpace
from .splits import Placement, Split, make_split
from .weighting import Weighting, ignore_index_of, weighting_of

__all__ = ["BUILTIN_METRICS", "Mode", "Placement", "Problem", "Split", "accuracy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Mode(str, Enum):
    """How the model runs while it is evaluated.

    ``EVAL``: ``model.eval()``; dropout off, BatchNorm uses its running statistics.
    ``TRAIN``: ``model.train()``; BatchNorm uses the statistics of each batch (so values
    depend on the batch size) and dropout is active. Only on explicit request.
    """

    EVAL = "eval"
    TRAIN = "train"


POINTS_PER_CALL = 64  # points per evaluator call in Problem.evaluate


def _call_hint(model: nn.Module, X) -> str:
    """A sentence naming the fix when the inputs' form does not fit ``model.forward``."""
    try:
        params = [
            p
            for p in inspect.signature(model.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    except (TypeError, ValueError):
        return ""
    names = [p.name for p in params]
    if isinstance(X, dict):
        unknown = [k for k in X if k not in names]
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(model.forward).parameters.values())
        if unknown and not has_var_kw:
            return f" The inputs carry {unknown}, which forward({', '.join(names)}) does not take; rename the keys."
        required = [p.name for p in params if p.default is p.empty and p.name not in X]
        if required:
            return f" forward needs {required}, which the inputs do not carry; add them to the dict."
        return ""
    given = 1 if isinstance(X, torch.Tensor) else len(X)
    required = [p.name for p in params if p.default is p.empty and p.kind is not p.KEYWORD_ONLY]
    if len(required) > given:
        return (
            f" forward({', '.join(names)}) needs {len(required)} arguments but the inputs give {given}; give them "
            f"as a tuple (model(*X)) or as a dict {{{', '.join(repr(n) + ': ...' for n in required)}}} (model(**X))."
        )
    return ""


def _token_hint(out: torch.Tensor, y: torch.Tensor) -> str:
    if out.dim() >= 3 and class_axis(out, y) == -1:
        return (
            f". For logits (n, T, C) against token labels (n, T) use loss=landscape_core.TokenCrossEntropy() "
            f"(labels {IGNORE_INDEX} skipped, exact over batches)"
        )
    return ""


class WeightedBatches:
    """``(X_b, y_b, c_b)`` of a split, read lazily each time it is iterated (a split held on the
    CPU or in a ``Dataset`` sends one batch at a time); ``len`` is the number of batches."""

    def __init__(self, split: Split, coefficients: list[float]):
        self.split = split
        self.coefficients = coefficients

    def __iter__(self) -> Iterator[tuple]:
        for (X, y, _), c in zip(self.split.batches(), self.coefficients):
            yield X, y, c

    def __len__(self) -> int:
        return len(self.coefficients)


def _tensor_stamps(tensors: Mapping[str, torch.Tensor]) -> dict:
    """``{name: (weak reference, _version)}``: which tensor objects, in which in-place state."""
    return {name: (weakref.ref(t), t._version) for name, t in tensors.items()}


def _same_tensors(stamps: dict, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``tensors`` are the very objects of ``stamps``, unchanged in place since."""
    if stamps.keys() != tensors.keys():
        return False
    return all(ref() is tensors[name] and tensors[name]._version == version for name, (ref, version) in stamps.items())


class Problem:
    """A model, a loss and data: the thing whose landscape is drawn.

    Parameters
    ----------
    model: the ``nn.Module``; it is deep-copied, the object passed in is never changed.
    loss: ``loss(output, target)``: the batch mean (e.g. ``F.cross_entropy``, ``nn.CrossEntropyLoss(weight=w)``),
        the batch sum (``reduction="sum"``) or one value per sample; values on a split are exact under
        batching for each (``landscape_core.weighting``: class weights and ``ignore_index`` included; a
        custom weighted mean declares ``batch_weight(output, target)``).
    train, val: ``(X, y)`` with ``X`` a tensor (``model(X)``), a tuple of tensors (``model(*X)``) or a dict
        of tensors (``model(**X)``, e.g. ``input_ids`` and ``attention_mask``); or a ``Dataset`` of
        ``(x, y)`` samples of those forms, or a ``DataLoader`` (its ``collate_fn`` is used, its order is not).
    metrics: extra quantities, ``{name: fn(output, target) -> batch mean}`` or names of built-ins
        (``"accuracy"``). ``None``: accuracy is added when the task is classification (logits
        ``(..., C)`` or ``(n, C, ...)`` vs integer labels; labels equal to the loss's ``ignore_index``,
        -100 by default, are accepted and skipped by accuracy).
    batch_size: samples per forward pass; ``None`` picks the whole split up to 4096.
        Values never depend on it (exact weighted means, ``landscape_core.weighting``) in eval mode.
    device: ``"cpu"``, ``"cuda"``... defaults to the model's device.
    mode: ``"eval"`` (default) or ``"train"``, see ``Mode``.
    output: ``output(model_output) -> tensor``, what the loss is computed on; ``None``: the output itself,
        the first element of a tuple, ``logits`` (else the first tensor) of a mapping or ``ModelOutput``.
    data_placement: where the samples are kept, ``"auto"``, ``"device"``, ``"cpu"`` (host memory, one batch
        at a time sent to the device) or ``"lazy"`` (a ``Dataset`` read a batch at a time); see ``splits``.

    Attributes: ``theta0`` (flat ``(P,)`` trained parameters), ``space`` (``ParamSpace``),
    ``buffers`` (running statistics), ``splits`` (``{"train": Split, "val": Split}``),
    ``base`` (the quantities at ``theta0``, floats), ``weightings`` (``{"loss" or metric name:
    Weighting}``, how each combines over batches), ``ignore_index`` (the label value skipped).
    ``model`` is only read; evaluation runs on each thread's private copy (``local_model()``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        train,
        val=None,
        metrics: Mapping[str, Callable] | Sequence[str] | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        mode: Mode | str = Mode.EVAL,
        output: Callable | None = None,
        data_placement: Placement | str = Placement.AUTO,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not callable(loss):
            raise ValueError(f"loss must be callable as loss(output, target); got {type(loss).__name__}.")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}.")
        if mode not in [m.value for m in Mode]:
            raise ValueError(f"mode must be one of {[m.value for m in Mode]}; got {mode!r}.")
        self.mode = Mode(mode)
        if output is not None and not callable(output):
            raise ValueError(f"output must be a callable output(model_output) -> tensor or None; got {output!r}.")
        self.output = output
        self.data_placement = data_placement
        first = next(iter(model.parameters()), None)
        if device is not None:
            try:
                torch.empty(0, device=device)
            except Exception as exc:
                raise ValueError(
                    f"device {str(device)!r} is not usable here ({exc}); use 'cpu' or an available one."
                ) from exc
        self.device = torch.device(device) if device is not None else (first.device if first is not None else "cpu")
        self.model = copy.deepcopy(model).to(self.device)
        self.model.train(self.mode is Mode.TRAIN)
        for p in self.model.parameters():
            p.grad = None
        self._models = PrivateModels(self.model)
        self._coefficients: dict[tuple[str, str], list[float]] = {}
        self.loss = loss
        self.ignore_index = ignore_index_of(loss)
        self.space = ParamSpace(self.model)
        self.dtype = next(self.model.parameters()).dtype
        params = dict(self.model.named_parameters())
        self.theta0 = self.space.flatten(params).detach().clone()
        self.buffers = {k: v.detach().clone() for k, v in self.model.named_buffers()}

        self.splits: dict[str, Split] = {}
        for name, data in (("train", train), ("val", val)):
            if data is None:
                continue
            self.splits[name] = make_split(name, data, batch_size, self.device, self.dtype, data_placement)
        if "train" not in self.splits:
            raise ValueError("train data is required.")
        self.batch_size = batch_size
        self.metrics = self._resolve_metrics(metrics)
        self.base = self._check_base()

    # -- set-up checks ---------------------------------------------------------
    def _probe(self, split_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = self.splits[split_name].head(16)
        with torch.no_grad():
            try:
                raw = self._call(self.local_model(), self._state(self.theta0), X)
            except Exception as exc:  # the user's model failed on the user's data
                raise ValueError(
                    f"{split_name}: the model failed on a batch of inputs {inp.describe(X)}: {exc}.{_call_hint(self.model, X)}"
                ) from exc
            try:
                out = self.output_of(raw)
            except ValueError as exc:
                raise ValueError(f"{split_name}: {exc}") from None
        if out.dim() == 0:
            raise ValueError(
                f"{split_name}: the model output is a 0-dimensional tensor; it must have a batch axis (logits or "
                "predictions of shape (n, ...)); give output=callable that picks such a tensor."
            )
        return out, y

    def _resolve_metrics(self, metrics) -> dict[str, Callable]:
        out, y = self._probe("train")
        class_dim = class_axis(out, y)
        if class_dim is not None:
            classes = out.shape[class_dim]
            for split in self.splits.values():
                labelled = torch.cat([y[y != self.ignore_index].reshape(-1) for y in split.labels()])
                if labelled.numel() == 0:
                    raise ValueError(
                        f"every {split.name} label equals the ignore_index {self.ignore_index}; "
                        "a loss and an accuracy need at least one labelled sample."
                    )
                low, high = int(labelled.min()), int(labelled.max())
                if low < 0 or high >= classes:
                    raise ValueError(
                        f"{split.name} labels range over [{low}, {high}] but the model outputs {classes} classes; "
                        f"labels must lie in [0, {classes - 1}] (or equal the ignore_index {self.ignore_index})."
                    )
        for name in self.splits:
            self._check_loss(name, *self._probe(name))
        if metrics is None:
            resolved = {"accuracy": Accuracy(self.ignore_index, class_dim)} if class_dim is not None else {}
        elif isinstance(metrics, Mapping):
            resolved = dict(metrics)
        elif isinstance(metrics, str):
            raise ValueError(f"metrics must be a list of names or a mapping; got the string {metrics!r}.")
        else:
            resolved = {}
            for name in metrics:
                if name not in BUILTIN_METRICS:
                    raise ValueError(f"unknown metric {name!r}; built-ins are {sorted(BUILTIN_METRICS)}.")
                if name == "accuracy" and class_dim is not None:
                    resolved[name] = Accuracy(self.ignore_index, class_dim)
                else:
                    resolved[name] = BUILTIN_METRICS[name]
        for name, fn in resolved.items():
            if not callable(fn):
                raise ValueError(f"metric {name!r} must be callable as fn(output, target).")
        self.weightings = {"loss": self._weighting("loss", self.loss, out, y)}
        for name, fn in resolved.items():
            self.weightings[name] = self._weighting(f"metric {name!r}", fn, out, y)
        return resolved

    @staticmethod
    def _weighting(what: str, fn: Callable, out: torch.Tensor, y: torch.Tensor) -> Weighting:
        try:
            with torch.no_grad():
                value = fn(out, y)
        except Exception as exc:
            raise ValueError(
                f"{what} failed on the model's output of shape {tuple(out.shape)} and labels of shape "
                f"{tuple(y.shape)}: {exc}"
            ) from exc
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        try:
            return weighting_of(fn, y, value)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None

    def _check_loss(self, split_name: str, out: torch.Tensor, y: torch.Tensor) -> None:
        """Refuse outputs and labels that do not fit together (before any landscape is drawn)."""
        if not isinstance(out, torch.Tensor) or out.dim() == 0:
            raise ValueError(
                f"{split_name}: the model must return a tensor with a batch axis; got {type(out).__name__}."
            )
        if out.shape[0] != y.shape[0]:
            raise ValueError(
                f"{split_name}: the model output has {out.shape[0]} rows for {y.shape[0]} labels; "
                "the output needs one row per sample."
            )
        # (n, 1) against (n,) broadcasts to (n, n) in an elementwise loss: a wrong value, no error
        if y.is_floating_point() and out.shape != y.shape and out.squeeze(-1).shape == y.squeeze(-1).shape:
            raise ValueError(
                f"{split_name}: the model output has shape {tuple(out.shape)} but the labels have shape "
                f"{tuple(y.shape)}; an elementwise loss would broadcast them to {out.shape[0]}x{y.shape[0]} pairs. "
                f"Give labels of shape {tuple(out.shape)}."
            )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("error", message=".*target size.*different to the input size.*")
                value = self.loss(out, y)
        except Exception as exc:
            raise ValueError(
                f"{split_name}: loss(output, target) failed for output shape {tuple(out.shape)} and label shape "
                f"{tuple(y.shape)} ({y.dtype}); they must fit the loss: {exc}{_token_hint(out, y)}"
            ) from exc
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"loss must return a tensor (the batch mean or sum); got {type(value).__name__}.")

    def _check_base(self) -> dict[str, float]:
        from .evaluate import evaluate_points

        values = evaluate_points(self, self.theta0, None, None)
        base = {k: float(v[0]) for k, v in values.items()}
        bad = {k: v for k, v in base.items() if k.endswith("loss") and not np.isfinite(v)}
        if bad:
            raise ValueError(
                f"the loss at the trained parameters is not finite ({bad}); it must be finite at theta0 "
                "(check the model's weights, the data and the loss)."
            )
        return base

    # -- evaluation --------------------------------------------------------------
    @property
    def quantities(self) -> list[str]:
        """Names of the values ``evaluate`` returns, e.g. ``["train_loss", "train_accuracy", ...]``."""
        return [f"{s}_{q}" for s in self.splits for q in ("loss", *self.metrics)]

    def forward(self, theta: torch.Tensor, X, buffers: Mapping | None = None) -> torch.Tensor:
        """Model output (``output_of``) at the flat parameters ``theta`` ``(P,)`` for inputs ``X``
        (a tensor, tuple or dict, ``landscape_core.inputs``); differentiable."""
        return self.output_of(self._call(self.local_model(), self._state(theta, buffers), X))

    def _state(self, theta: torch.Tensor, buffers: Mapping | None = None) -> dict:
        params = self.space.unflatten(theta)
        if self.space.frozen:
            params = {**self.space.frozen, **params}
        buffers = self.buffers if buffers is None else buffers
        if self.mode is Mode.TRAIN:
            # train-mode BatchNorm updates running statistics in place: give it copies
            buffers = {k: v.clone() for k, v in buffers.items()}
        return {**buffers, **params}

    @staticmethod
    def _call(module: nn.Module, state: Mapping, X):
        args, kwargs = inp.call_args(X)
        return torch.func.functional_call(module, dict(state), args, kwargs)

    def call(self, module: nn.Module, state: Mapping, X) -> torch.Tensor:
        """``output_of(module(X))`` with the parameters and buffers ``state`` (``functional_call``);
        ``X`` called as ``module(X)``, ``module(*X)`` or ``module(**X)`` by its form."""
        return self.output_of(self._call(module, state, X))

    def output_of(self, raw) -> torch.Tensor:
        """The tensor the loss is computed on, from what the model returned (``output=``, else
        the tensor, the first of a tuple, ``logits`` of a mapping or ``ModelOutput``)."""
        if self.output is not None:
            return inp.output_tensor(self.output(raw), "output(model_output)")
        return inp.output_tensor(raw)

    def local_model(self) -> nn.Module:
        """This thread's private copy of the model's structure (shares its tensors; see ``private_model``)."""
        return self._models.get()

    def loss_value(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one batch as a scalar: the loss's own value, or the mean of its per-sample values."""
        return self.weightings["loss"].batch_value(self.loss, output, target)

    def batch_loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, buffers=None) -> torch.Tensor:
        """Loss of one batch at ``theta`` (``loss_value``); differentiable w.r.t. ``theta`` (for HVPs and ascent)."""
        return self.loss_value(self.forward(theta, X, buffers), y)

    def weighted_batches(
        self, split: str = "train", quantity: str = "loss"
    ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """``[(X_b, y_b, c_b)]``: the batches of ``split`` with the coefficients of ``quantity``.

        ``quantity``: ``"loss"`` or a metric name. The value on the whole split is exactly
        ``sum_b c_b * value_b`` (``landscape_core.weighting``: ``c_b = W_b / W`` for a weighted mean,
        1 for a sum); a batch with ``c_b = 0`` (every label ignored) contributes nothing.
        """
        return WeightedBatches(self.splits[split], self.coefficients(split, quantity))

    def coefficients(self, split: str = "train", quantity: str = "loss") -> list[float]:
        """The per-batch coefficients ``c_b`` of ``quantity`` on ``split`` (see ``weighted_batches``);
        the weights of every quantity are read in one pass over the split."""
        key = (split, quantity)
        if key not in self._coefficients:
            quantities = ["loss", *self.metrics]
            functions = {q: self.loss if q == "loss" else self.metrics[q] for q in quantities}
            weights: dict[str, list[float]] = {q: [] for q in quantities}
            for X, y, _ in self.splits[split].batches():
                output = []

                def output_at(X=X, output=output):
                    if not output:
                        with torch.no_grad():
                            output.append(self.forward(self.theta0, X))
                    return output[0]

                for q in quantities:
                    weights[q].append(self.weightings[q].batch_weight(functions[q], y, output_at))
            for q in quantities:
                try:
                    self._coefficients[(split, q)] = self.weightings[q].coefficients(weights[q])
                except ValueError as exc:
                    raise ValueError(f"{split} {q}: {exc}") from None
        return self._coefficients[key]

    def full_loss(self, theta: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Exact full-split loss at ``theta`` as a differentiable scalar (``sum_b c_b L_b``, ``weighted_batches``)."""
        total = None
        for X, y, c in self.weighted_batches(split):
            if c == 0.0:
                continue
            term = c * self.batch_loss(theta, X, y)
            total = term if total is None else total + term
        return total

    def evaluate(self, thetas: torch.Tensor, splits=None, progress=None, cancel=None) -> dict[str, np.ndarray]:
        """Loss (and metrics) on the full split(s) for a stack of points.

        ``thetas``: ``(k, P)`` (or ``(P,)``). Returns ``{quantity: float64 array (k,)}``, e.g.
        ``train_loss``, ``train_accuracy``, ``val_loss``; each an exact sample-weighted mean.
        """
        from .evaluate import evaluate_points

        if not isinstance(thetas, torch.Tensor):
            raise ValueError(
                f"thetas must be a torch.Tensor of shape (k, {self.space.size}); got {type(thetas).__name__}."
            )
        if thetas.dim() == 1:
            thetas = thetas[None]
        if thetas.dim() != 2:
            raise ValueError(f"thetas must have shape (k, {self.space.size}); got {tuple(thetas.shape)}.")
        self.space.check(thetas, "thetas", batched=True)
        k = thetas.shape[0]
        zero = torch.zeros(self.space.size, dtype=self.dtype, device=self.device)
        # each point is a basis vector with coefficient 1 (exact: 0 + 1 * theta); groups of
        # POINTS_PER_CALL keep the (group, group) coefficient matrix small
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, k, POINTS_PER_CALL):
            group = thetas[start : start + POINTS_PER_CALL]
            report = None if progress is None else (lambda d, _t, base=start: progress(base + d, k))
            eye = torch.eye(group.shape[0], dtype=torch.float64)
            parts.append(evaluate_points(self, zero, group, eye, splits=splits, progress=report, cancel=cancel))
        values = {q: np.concatenate([p[q] for p in parts]) for q in parts[0]}
        bad = ~torch.isfinite(thetas).all(dim=1).cpu().numpy()
        if bad.any():  # 0 * nan in the coefficient product would spread to the other points
            finite = self.evaluate(thetas[torch.as_tensor(~bad)], splits=splits) if (~bad).any() else None
            for q in values:
                values[q][bad] = np.nan
                if finite is not None:
                    values[q][~bad] = finite[q]
        return values

    # -- identity ---------------------------------------------------------------
    def data_fingerprint(self) -> str:
        """sha256 over every split's bytes."""
        return hashlib.sha256("".join(f"{k}:{s.fingerprint}" for k, s in self.splits.items()).encode()).hexdigest()

    def on_device(self, device) -> Problem:
        """This problem with its model and data on ``device`` (the same values); ``self`` if already there."""
        if torch.device(device) == self.device:
            return self
        data = {name: s.source() for name, s in self.splits.items()}
        return Problem(
            self.model,
            self.loss,
            data["train"],
            data.get("val"),
            metrics=self.metrics,
            batch_size=self.batch_size,
            device=device,
            mode=self.mode,
            output=self.output,
            data_placement=self.data_placement,
        )

    def __getstate__(self) -> dict:
        """Pickled (Ray's object store) or copied without the ``model_hash`` memo: it holds weak
        references, which do not pickle, and a copy recomputes it on first use."""
        state = self.__dict__.copy()
        state.pop("_model_hash_memo", None)
        return state

    def model_hash(self, theta: torch.Tensor | None = None) -> str:
        """sha256 over the architecture, the parameters ``theta`` (default ``theta0``), the
        frozen parameters and the buffers.

        Memoised: the last digest is reused while ``theta``, the buffers and the frozen
        parameters are the same tensor objects with the same ``_version`` (any in-place change
        bumps it), so a page rerun does not rehash millions of parameters.
        """
        theta = self.theta0 if theta is None else theta
        tensors = {"theta": theta, **{f"buffer:{k}": v for k, v in self.buffers.items()}}
        tensors.update({f"frozen:{k}": v for k, v in self.space.frozen.items()})
        memo = getattr(self, "_model_hash_memo", None)
        if memo is not None and memo[0] == self.mode and _same_tensors(memo[1], tensors):
            return memo[2]
        h = hashlib.sha256()
        h.update(repr(self.model).encode())
        h.update(json.dumps(self.space.signature()).encode())
        h.update(self.mode.value.encode())
        h.update(str(theta.dtype).encode())
        h.update(raw_bytes(theta))
        for group in (self.buffers, self.space.frozen):
            for name in sorted(group):
                h.update(f"{name}:{group[name].dtype}:{tuple(group[name].shape)}".encode())
                h.update(raw_bytes(group[name]))
        digest = h.hexdigest()
        self._model_hash_memo = (self.mode, _tensor_stamps(tensors), digest)
        return digest

    def describe(self) -> dict:
        """JSON-ready summary for result settings and cache keys: sizes, model hash, data
        fingerprint, dtype, mode, the identity of the loss, of each metric and of ``output=``
        (``landscape_core.identity``), and in train mode the batch size of each split (train-mode
        BatchNorm values depend on it)."""
        from . import identity

        out = {
            "model": type(self.model).__name__,
            "parameters": self.space.size,
            "model_sha256": self.model_hash(),
            "data_sha256": self.data_fingerprint(),
            "samples": {k: s.n for k, s in self.splits.items()},
            "mode": self.mode.value,
            "dtype": str(self.dtype).replace("torch.", ""),
            "metrics": sorted(self.metrics),
            "loss": identity.describe(self.loss, "the loss"),
            "metric_identity": identity.describe_all(self.metrics),
        }
        if self.output is not None:  # which tensor of the model's output is scored changes every value
            out["output"] = identity.describe(self.output, "the output picker")
        if self.mode is Mode.TRAIN:
            out["batch_size"] = {k: s.batch_size for k, s in self.splits.items()}
        return out

    # -- variants -------------------------------------------------------------
    def subset(self, max_samples: int, seed: int = 0) -> Problem:
        """The same problem on a random subset of at most ``max_samples`` per split (noisier values)."""
        clone = copy.copy(self)
        gen = torch.Generator().manual_seed(seed)
        clone.splits = {}
        for name, s in self.splits.items():
            if s.n <= max_samples:
                clone.splits[name] = s
                continue
            idx = torch.randperm(s.n, generator=gen)[:max_samples]
            clone.splits[name] = s.subset(idx, min(s.batch_size, max_samples))
        clone._coefficients = {}
        clone.base = clone._check_base()
        return clone

    def at(self, theta: torch.Tensor, buffers: Mapping | None = None) -> Problem:
        """The same model and data with base point ``theta`` (and optionally other buffers)."""
        self.space.check(theta, "theta")
        clone = copy.copy(self)
        clone.theta0 = theta.detach().to(self.device, self.dtype).clone()
        if buffers is not None:
            clone.buffers = {k: v.detach().to(self.device) for k, v in buffers.items()}
        clone.base = clone._check_base()
        return clone

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={s.n}" for k, s in self.splits.items())
        return f"Problem({type(self.model).__name__}, P={self.space.size}, {sizes}, device={self.device})"
