"""Built-in demo problems: what the dashboard opens with no input at all.

``list_demos()`` names them, ``describe(name)`` says in a paragraph what each shows,
``load(name)`` returns a ``Workspace`` (model A, optional model B, their checkpoints).

Each demo is trained on first use (all four in a few seconds on two CPU cores), then kept
in the disk cache as npz arrays of the trained state dicts and per-epoch snapshots (no
pickles), keyed by demo name, ``DEMO_VERSION``, the training recipe (seeds included) and
the torch version; a cached load rebuilds bit-identical parameters. Within one process,
``load`` returns the same ``Workspace`` object every time: treat it as read-only (make
variants with ``Problem.at``).

>>> ws = load("digits-mlp")                       # doctest: +SKIP
>>> ws.labels, len(ws.checkpoints)                # doctest: +SKIP
(('small batch', 'large batch'), 21)
"""

from __future__ import annotations

import inspect
import io
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import archives, cache
from . import demo_models as dm
from .problem import Problem
from .threads import single_thread
from .workspace import Checkpoint, Workspace

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

DEMO_VERSION = 1
TEXT_DEMO = "text-sentiment"
CONTRASTIVE_DEMO = "text-contrastive"  # landscape_core.contrastive_demo, listed with the text demo

_SB = {"init_seed": 0, "order_seed": 0, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "epochs": 20, "every": 1}
_LB = {"init_seed": 0, "order_seed": 0, "batch_size": dm.DIGITS_TRAIN, "lr": 0.5, "momentum": 0.9, "epochs": 200}
_BN = {"batch_size": 32, "lr": 0.05, "momentum": 0.9, "epochs": 10, "every": 1}

RECIPES: dict[str, dict] = {
    "digits-mlp": {"data_seed": 0, "A": _SB, "B": {**_LB, "every": 10}},
    "digits-seeds": {
        "data_seed": 0,
        "A": {**_SB, "init_seed": 1, "order_seed": 1},
        "B": {**_SB, "init_seed": 2, "order_seed": 2},
    },
    "digits-bn-cnn": {
        "data_seed": 0,
        "A": {**_BN, "init_seed": 0, "order_seed": 0},
        "B": {**_BN, "init_seed": 1, "order_seed": 1},
    },
    "logistic-blobs": {"data_seed": 0, "A": {"init_seed": 0, "lr": 0.5, "steps": 60, "every": 3}},
}
"""Training recipe of each built-in demo: every seed and hyperparameter (part of the cache key).

digits-mlp: A = SGD with momentum 0.9 on batches of 32; B = the same optimizer on the full
batch (1347), trained to about the same train loss (~0.004) from the same initialization.
"""

DESCRIPTIONS: dict[str, str] = {
    "digits-mlp": (
        "The sharp-versus-flat experiment of Keskar et al. (2017) on sklearn's 8x8 digits (1347 train, 450 validation"
        " images) with a 64-128-10 ReLU MLP (9,610 parameters). Model A ('small batch') is trained with SGD (momentum"
        " 0.9) on batches of 32 for 20 epochs; model B ('large batch') with the same optimizer on the full batch for "
        "200 epochs, from the same initialization, to about the same train loss (~0.004). B sits in a sharper "
        "minimum: along filter-normalized random directions its loss rises about four times as fast, its top Hessian "
        "eigenvalue is about four times larger (1.2 vs 0.3), and its validation loss is higher (0.11 vs 0.08). Having"
        " started from the same point, the two are linearly connected (the loss at the midpoint is only 0.01). Try: a"
        " 1D line or 2D plane of A and B side by side on one colour scale, the Hessian's top eigenvalues of each, "
        "epsilon-sharpness, and the two trajectories (checkpoints every epoch for A, every 10 epochs for B)."
    ),
    "digits-seeds": (
        "One 64-128-10 ReLU MLP on the 8x8 digits trained twice with identical settings (SGD with momentum, batch 32,"
        " 20 epochs) from two different seeds (initialization and batch order). Both reach about the same accuracy, "
        "yet the straight line between them crosses a loss barrier (train loss ~0.15 at the midpoint vs 0.004-0.009 "
        "at the ends): hidden units are permuted between the two solutions. Try: linear interpolation A to B (the "
        "barrier height), the plane through A, B and an early checkpoint, and the PCA view of A's per-epoch "
        "trajectory."
    ),
    "digits-bn-cnn": (
        "A small CNN with BatchNorm (Conv-BN-ReLU-MaxPool-Conv-BN-ReLU-Linear, 3,866 parameters) on the 8x8 digit "
        "images, trained from two seeds (A, B) with SGD and momentum for 10 epochs. The model is evaluated in eval "
        "mode with its running statistics; every checkpoint carries the running mean and variance of its epoch. Try: "
        "interpolation A to B with and without recomputing BatchNorm statistics along the path (without, the barrier "
        "is exaggerated), and surfaces with normalization parameters ignored or included."
    ),
    "logistic-blobs": (
        "Logistic regression (nn.Linear(2, 2), softmax cross-entropy) on two overlapping Gaussian blobs (400 train, "
        "200 validation points), trained by gradient descent and then L-BFGS to the exact optimum. The loss is convex"
        " and its Hessian is known in closed form (landscape_core.demo_models.logistic_hessian): it depends only on "
        "the difference of the two rows, so it has a 3-dimensional null space of perfectly flat directions and its "
        "nonzero eigenvalues are twice those of the 3x3 binary logistic Hessian. Try: the raw-parameter bowl over two"
        " weights, the Hessian spectrum (three zeros), and the gradient-descent trajectory."
    ),
}

_memo: dict[str, Workspace] = {}
_lock = threading.Lock()


# -- registry ----------------------------------------------------------------------------
def _text_demo():
    """The text helper's module when it is importable and exposes ``load_workspace()``, else ``None``."""
    try:
        from . import text_demo
    except Exception as exc:  # missing module or a broken optional dependency: hide the demo
        log.debug("text demo unavailable: %s", exc)
        return None
    return text_demo if callable(getattr(text_demo, "load_workspace", None)) else None


def list_demos() -> list[str]:
    """Names of the built-in demos, in display order."""
    names = list(RECIPES)
    if _text_demo() is not None:
        names += [TEXT_DEMO, CONTRASTIVE_DEMO]
    return names


def _check_name(name) -> str:
    names = list_demos()
    if not isinstance(name, str) or name not in names:
        raise ValueError(f"name must be one of {names}; got {name!r}.")
    return name


def describe(name: str) -> str:
    """One paragraph for people: what the demo shows and what to try on it (trains nothing)."""
    name = _check_name(name)
    if name == CONTRASTIVE_DEMO:
        from . import contrastive_demo

        return contrastive_demo.DESCRIPTION
    if name == TEXT_DEMO:
        module = _text_demo()
        text = getattr(module, "DESCRIPTION", None) or getattr(module, "__doc__", None)
        return (text or "A text classifier whose embedding space can be perturbed input by input.").strip()
    return DESCRIPTIONS[name]


def cache_key(name: str) -> str:
    """Disk-cache key of a built-in demo's trained arrays."""
    settings = {"name": name, "demo_version": DEMO_VERSION, "recipe": RECIPES[name], "torch": torch.__version__}
    return cache.make_key("demo", DEMO_VERSION, settings)


# -- loading -----------------------------------------------------------------------------
def load(name: str, progress: Progress | None = None, *, use_cache: bool = True) -> Workspace:
    """The ``Workspace`` of demo ``name``, training it on first use.

    ``progress(done, total)`` is called after every training epoch (and once with
    ``done == total`` on a cached load). ``use_cache=False`` neither reads nor writes the
    in-process memo or the disk cache: it retrains (for determinism checks).
    Raises ``ValueError`` for an unknown name, listing the known ones.
    """
    name = _check_name(name)
    if name == TEXT_DEMO:
        return _load_text(progress, use_cache)
    if name == CONTRASTIVE_DEMO:
        return _load_contrastive(use_cache)
    with _lock:
        if use_cache and name in _memo:
            _finish(progress, RECIPES[name])
            return _memo[name]
        runs = data = None
        key = cache_key(name)
        if use_cache and (hit := cache.fetch(key, runs_from_bytes)) is not None:
            runs, data = hit  # an unreadable entry is a miss (warned once): retrained and replaced
        if runs is None:
            started = time.perf_counter()
            data = demo_data(name)
            runs = train(name, progress, data)
            log.info("demo %s trained in %.2f s", name, time.perf_counter() - started)
            if use_cache:
                cache.put(key, runs_to_bytes(runs, data))
        else:
            _finish(progress, RECIPES[name])
        with single_thread():  # tiny evaluations: one thread is faster than two contending ones
            workspace = _build(name, runs, data)
        if use_cache:
            _memo[name] = workspace
        return workspace


def _load_text(progress: Progress | None, use_cache: bool) -> Workspace:
    if use_cache and TEXT_DEMO in _memo:
        return _memo[TEXT_DEMO]
    loader = _text_demo().load_workspace
    try:
        takes_progress = "progress" in inspect.signature(loader).parameters
    except (TypeError, ValueError):
        takes_progress = False
    workspace = loader(progress=progress) if takes_progress else loader()
    if use_cache:
        _memo[TEXT_DEMO] = workspace
    return workspace


def _load_contrastive(use_cache: bool) -> Workspace:
    from . import contrastive_demo

    if use_cache and CONTRASTIVE_DEMO in _memo:
        return _memo[CONTRASTIVE_DEMO]
    workspace = contrastive_demo.load_workspace()
    if use_cache:
        _memo[CONTRASTIVE_DEMO] = workspace
    return workspace


def _total_epochs(recipe: dict) -> int:
    return sum(r.get("epochs", r.get("steps", 0)) for label, r in recipe.items() if label in ("A", "B"))


def _finish(progress: Progress | None, recipe: dict) -> None:
    if progress is not None:
        total = _total_epochs(recipe)
        progress(total, total)


def demo_data(name: str) -> dict[str, torch.Tensor]:
    """The data of a built-in demo: ``{"train_X", "train_y", "val_X", "val_y"}`` tensors."""
    seed = RECIPES[name]["data_seed"]
    if name == "logistic-blobs":
        train_data, val_data = dm.blobs(seed)
    else:
        train_data, val_data = dm.digits(seed, images=name == "digits-bn-cnn")
    return {"train_X": train_data[0], "train_y": train_data[1], "val_X": val_data[0], "val_y": val_data[1]}


def train(name: str, progress: Progress | None = None, data: dict | None = None) -> dict[str, dm.Run]:
    """Train demo ``name`` from scratch (no cache): ``{"A": Run, "B": Run}`` (logistic-blobs: A only).

    ``data``: ``demo_data(name)``, made here when not given.
    """
    if name not in RECIPES:
        raise ValueError(f"name must be one of {list(RECIPES)} (trainable built-ins); got {name!r}.")
    recipe = RECIPES[name]
    data = demo_data(name) if data is None else data
    train_data = (data["train_X"], data["train_y"])
    total, done = _total_epochs(recipe), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    runs: dict[str, dm.Run] = {}
    with single_thread():
        if name == "logistic-blobs":
            spec = recipe["A"]
            model = dm.logistic(spec["init_seed"])
            runs["A"] = dm.train_logistic(
                model, train_data, lr=spec["lr"], steps=spec["steps"], every=spec["every"], on_epoch=tick
            )
            return runs
        images = name == "digits-bn-cnn"
        build = dm.digits_bn_cnn if images else dm.digits_mlp
        for label in ("A", "B"):
            spec = dict(recipe[label])
            model = build(spec.pop("init_seed"))
            runs[label] = dm.train_sgd(model, train_data, seed=spec.pop("order_seed"), on_epoch=tick, **spec)
    return runs


# -- cache format ------------------------------------------------------------------------
def runs_to_bytes(runs: dict[str, dm.Run], data: dict[str, torch.Tensor]) -> bytes:
    """npz bytes: ``<label>/state/<name>``, ``<label>/snap/<name>`` (k, ...), ``<label>/steps`` (k,)
    and ``data/<train_X|train_y|val_X|val_y>`` (kept so a cached load needs no sklearn import)."""
    arrays: dict[str, np.ndarray] = {f"data/{k}": v.numpy() for k, v in data.items()}
    for label, run in runs.items():
        arrays.update({f"{label}/state/{k}": v for k, v in run.state.items()})
        arrays.update({f"{label}/snap/{k}": v for k, v in run.snapshots.items()})
        arrays[f"{label}/steps"] = run.steps
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def runs_from_bytes(blob: bytes) -> tuple[dict[str, dm.Run], dict[str, torch.Tensor]]:
    """Inverse of ``runs_to_bytes`` (``allow_pickle=False``): ``(runs, data)``."""
    runs: dict[str, dm.Run] = {}
    data: dict[str, torch.Tensor] = {}
    with archives.open_npz(blob, "demo runs") as archive:
        for key in archive.files:
            label, part, *rest = key.split("/", 2)
            if label == "data":
                data[part] = torch.from_numpy(archive[key])
                continue
            run = runs.setdefault(label, dm.Run(state={}))
            if part == "state":
                run.state[rest[0]] = archive[key]
            elif part == "snap":
                run.snapshots[rest[0]] = archive[key]
            elif part == "steps":
                run.steps = archive[key]
            else:
                raise ValueError(f"unexpected array {key!r} in a demo cache entry")
    if sorted(data) != ["train_X", "train_y", "val_X", "val_y"] or not runs:
        raise ValueError(f"incomplete demo cache entry: data {sorted(data)}, runs {sorted(runs)}")
    return runs, data


# -- workspaces --------------------------------------------------------------------------
def _problem(model: torch.nn.Module, run: dm.Run, train_data, val_data) -> Problem:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in run.state.items()})
    model.eval()
    return Problem(model, F.cross_entropy, train_data, val_data)


def _checkpoints(problem: Problem, run: dm.Run, prefix: str, step_word: str = "epoch") -> list[Checkpoint]:
    """One ``Checkpoint`` per snapshot; each carries its own buffers when the model has any."""
    out = []
    for i, step in enumerate(run.steps.tolist()):
        frame = {k: torch.from_numpy(np.array(v[i])) for k, v in run.snapshots.items()}
        buffers = {k: frame[k] for k in problem.buffers} or None
        out.append(Checkpoint(f"{prefix} {step_word} {step:03d}", problem.space.flatten(frame), buffers, int(step)))
    return out


def _build(name: str, runs: dict[str, dm.Run], data: dict[str, torch.Tensor]) -> Workspace:
    recipe = RECIPES[name]
    description = DESCRIPTIONS[name]
    train_data, val_data = (data["train_X"], data["train_y"]), (data["val_X"], data["val_y"])
    if name == "logistic-blobs":
        run = runs["A"]
        problem = _problem(dm.logistic(0), run, train_data, val_data)
        checkpoints = _checkpoints(problem, run, "GD", "step")
        last = checkpoints[-1]
        checkpoints[-1] = Checkpoint("optimum (L-BFGS)", last.theta, last.buffers, last.step)
        return Workspace(name, problem, checkpoints, labels=("logistic regression", "B"), description=description)

    images = name == "digits-bn-cnn"
    build = dm.digits_bn_cnn if images else dm.digits_mlp
    labels = {
        "digits-mlp": ("small batch", "large batch"),
        "digits-seeds": (f"seed {recipe['A']['init_seed']}", f"seed {recipe['B']['init_seed']}"),
        "digits-bn-cnn": (f"seed {recipe['A']['init_seed']}", f"seed {recipe['B']['init_seed']}"),
    }[name]
    problems = {label: _problem(build(0), runs[label], train_data, val_data) for label in ("A", "B")}
    return Workspace(
        name,
        problems["A"],
        _checkpoints(problems["A"], runs["A"], labels[0]),
        compare=problems["B"],
        compare_checkpoints=_checkpoints(problems["B"], runs["B"], labels[1]),
        labels=labels,
        description=description,
    )


def clear_memo(name: str | None = None) -> None:
    """Forget the in-process workspace of ``name`` (default: all); the disk cache is kept."""
    with _lock:
        if name is None:
            _memo.clear()
        else:
            _memo.pop(name, None)
