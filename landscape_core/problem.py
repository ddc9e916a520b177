"""``Problem``: a model, a loss and data, evaluated at any point of its parameter space."""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import Enum

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .metrics import BUILTIN_METRICS, Accuracy, accuracy, class_axis
from .private_model import PrivateModels
from .space import ParamSpace
from .weighting import Weighting, ignore_index_of, weighting_of

__all__ = ["BUILTIN_METRICS", "Mode", "Problem", "Split", "accuracy"]

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


class Split:
    """One data split held as tensors on the problem's device: ``X`` ``(n, ...)``, ``y`` ``(n, ...)``.

    ``batch_size``: samples per forward pass, at most ``n`` (a larger request is the whole split).
    """

    def __init__(self, name: str, X: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.name = name
        self.X = X
        self.y = y
        self.n = int(X.shape[0])
        self.batch_size = min(int(batch_size), self.n)
        self._fingerprint: str | None = None

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """Yield ``(X_b, y_b, n_b / n)``: the batches with their share of the samples.

        The share of the samples is the exact coefficient of a plain mean over samples only;
        ``Problem.weighted_batches`` gives each loss's own coefficients.
        """
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            yield self.X[start:stop], self.y[start:stop], (stop - start) / self.n

    @property
    def fingerprint(self) -> str:
        """sha256 of the split's bytes (inputs and labels)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for t in (self.X, self.y):
                h.update(str((tuple(t.shape), str(t.dtype))).encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def _to_tensors(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialize an ``(X, y)`` tuple, a ``Dataset`` or a ``DataLoader`` as two tensors."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset):
        X, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in data)
    elif isinstance(data, (DataLoader, Dataset)):
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=512, shuffle=False)
        xs, ys = [], []
        for item in loader:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"{what}: each batch must be an (inputs, labels) pair; got {type(item).__name__}.")
            xs.append(torch.as_tensor(item[0]))
            ys.append(torch.as_tensor(item[1]))
        if not xs:
            raise ValueError(f"{what} is empty (0 samples); a loss needs at least one sample.")
        X, y = torch.cat(xs), torch.cat(ys)
    else:
        raise ValueError(
            f"{what} must be an (X, y) tuple of tensors, a torch Dataset or a DataLoader; got {type(data).__name__}."
        )
    if X.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 samples); a loss needs at least one sample.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: inputs have {X.shape[0]} samples but labels have {y.shape[0]}.")
    return X.detach(), y.detach()


class Problem:
    """A model, a loss and data: the thing whose landscape is drawn.

    Parameters
    ----------
    model: the ``nn.Module``; it is deep-copied, the object passed in is never changed.
    loss: ``loss(output, target)``: the batch mean (e.g. ``F.cross_entropy``, ``nn.CrossEntropyLoss(weight=w)``),
        the batch sum (``reduction="sum"``) or one value per sample; values on a split are exact under
        batching for each (``landscape_core.weighting``: class weights and ``ignore_index`` included; a
        custom weighted mean declares ``batch_weight(output, target)``).
    train, val: ``(X, y)`` tensors, a ``Dataset`` or a ``DataLoader``; materialized once as tensors.
    metrics: extra quantities, ``{name: fn(output, target) -> batch mean}`` or names of built-ins
        (``"accuracy"``). ``None``: accuracy is added when the task is classification (logits
        ``(..., C)`` or ``(n, C, ...)`` vs integer labels; labels equal to the loss's ``ignore_index``,
        -100 by default, are accepted and skipped by accuracy).
    batch_size: samples per forward pass; ``None`` picks the whole split up to 4096.
        Values never depend on it (exact weighted means, ``landscape_core.weighting``) in eval mode.
    device: ``"cpu"``, ``"cuda"``... defaults to the model's device.
    mode: ``"eval"`` (default) or ``"train"``, see ``Mode``.

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
            X, y = _to_tensors(data, name)
            if X.is_floating_point():
                X = X.to(self.dtype)
            bs = batch_size or min(X.shape[0], 4096)
            self.splits[name] = Split(name, X.to(self.device), y.to(self.device), bs)
        if "train" not in self.splits:
            raise ValueError("train data is required.")
        self.batch_size = batch_size
        self.metrics = self._resolve_metrics(metrics)
        self.base = self._check_base()

    # -- set-up checks ---------------------------------------------------------
    def _probe(self, split_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        split = self.splits[split_name]
        X, y = split.X[: min(split.n, 16)], split.y[: min(split.n, 16)]
        with torch.no_grad():
            try:
                out = self.forward(self.theta0, X)
            except Exception as exc:  # the user's model failed on the user's data
                raise ValueError(
                    f"{split_name}: the model failed on a batch of inputs of shape {tuple(X.shape)}: {exc}"
                ) from exc
        if not isinstance(out, torch.Tensor) or out.dim() == 0:
            got = type(out).__name__ if not isinstance(out, torch.Tensor) else "a 0-dimensional tensor"
            raise ValueError(
                f"{split_name}: the model returned {got}; it must return one tensor with a batch axis (logits or "
                "predictions of shape (n, ...)). Wrap a model that returns a tuple or dict so that it returns that tensor."
            )
        return out, y

    def _resolve_metrics(self, metrics) -> dict[str, Callable]:
        out, y = self._probe("train")
        class_dim = class_axis(out, y)
        if class_dim is not None:
            classes = out.shape[class_dim]
            for split in self.splits.values():
                labelled = split.y[split.y != self.ignore_index]
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
                f"{tuple(y.shape)} ({y.dtype}); they must fit the loss: {exc}"
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

    def forward(self, theta: torch.Tensor, X: torch.Tensor, buffers: Mapping | None = None) -> torch.Tensor:
        """Model output at the flat parameters ``theta`` ``(P,)`` for inputs ``X``; differentiable."""
        params = self.space.unflatten(theta)
        if self.space.frozen:
            params = {**self.space.frozen, **params}
        buffers = self.buffers if buffers is None else buffers
        if self.mode is Mode.TRAIN:
            # train-mode BatchNorm updates running statistics in place: give it copies
            buffers = {k: v.clone() for k, v in buffers.items()}
        state = {**buffers, **params}
        return torch.func.functional_call(self.local_model(), state, (X,))

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
        data = self.splits[split]
        key = (split, quantity)
        coefficients = self._coefficients.get(key)
        if coefficients is None:
            fn = self.loss if quantity == "loss" else self.metrics[quantity]
            weighting = self.weightings[quantity]
            weights = []
            for X, y, _ in data.batches():

                def output_at(X=X):
                    with torch.no_grad():
                        return self.forward(self.theta0, X)

                weights.append(weighting.batch_weight(fn, y, output_at))
            try:
                coefficients = weighting.coefficients(weights)
            except ValueError as exc:
                raise ValueError(f"{split} {quantity}: {exc}") from None
            self._coefficients[key] = coefficients
        return [(X, y, c) for (X, y, _), c in zip(data.batches(), coefficients)]

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

    def model_hash(self, theta: torch.Tensor | None = None) -> str:
        """sha256 over the architecture, the parameters ``theta`` (default ``theta0``) and buffers."""
        theta = self.theta0 if theta is None else theta
        h = hashlib.sha256()
        h.update(repr(self.model).encode())
        h.update(json.dumps(self.space.signature()).encode())
        h.update(self.mode.value.encode())
        h.update(theta.detach().cpu().contiguous().numpy().tobytes())
        for name in sorted(self.buffers):
            h.update(name.encode())
            h.update(self.buffers[name].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-ready summary for result settings: sizes, model hash, data fingerprint."""
        return {
            "model": type(self.model).__name__,
            "parameters": self.space.size,
            "model_sha256": self.model_hash(),
            "data_sha256": self.data_fingerprint(),
            "samples": {k: s.n for k, s in self.splits.items()},
            "mode": self.mode.value,
            "metrics": sorted(self.metrics),
        }

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
            idx = torch.randperm(s.n, generator=gen)[:max_samples].to(s.X.device)
            clone.splits[name] = Split(name, s.X[idx], s.y[idx], min(s.batch_size, max_samples))
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
