"""A wider MLP trained from scratch on a digits demo: the minimum a widened model is compared with.

``load(name, width)`` trains ``64 -> width (ReLU) -> 10`` with the demo's own recipe for model A
(same data split, initialization seed, batch order, optimizer and epochs; see
``demos.RECIPES``), deterministically on one thread, and keeps the trained arrays in the disk
cache as npz bytes (no pickles), keyed by demo, width, recipe and torch version, like the
demos themselves. A 64-256-10 net trains in about two seconds.

>>> wide = load("digits-mlp", width=256)          # doctest: +SKIP
>>> wide.space.size                                # doctest: +SKIP
19210
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cache, demos
from . import demo_models as dm
from .problem import Problem
from .threads import single_thread

log = logging.getLogger(__name__)

VERSION = 1
MLP_DEMOS = ("digits-mlp", "digits-seeds")
HIDDEN = 128  # the demos' hidden width
MAX_WIDTH = 2048
_memo: dict[tuple[str, int], Problem] = {}


def _check(name, width) -> tuple[str, int]:
    if name not in MLP_DEMOS:
        raise ValueError(f"name must be one of {list(MLP_DEMOS)} (the MLP demos); got {name!r}.")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"width must be an integer from 1 to {MAX_WIDTH}; got {width!r}.")
    return name, int(width)


def build(width: int, seed: int) -> nn.Sequential:
    """``64 -> width (ReLU) -> 10`` with the demos' seeded initialization."""
    return dm._seeded(lambda: nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)), seed)


def recipe(name: str) -> dict:
    """The training recipe (model A's of the demo): seeds and hyperparameters, part of the cache key."""
    return dict(demos.RECIPES[name]["A"])


def cache_key(name: str, width: int) -> str:
    settings = {"name": name, "width": width, "recipe": recipe(name), "torch": torch.__version__}
    return cache.make_key("demo-wide", VERSION, settings)


def load(name: str = "digits-mlp", width: int = 256, progress=None, use_cache: bool = True) -> Problem:
    """The trained wide model of demo ``name`` as a ``Problem`` (cross-entropy, the demo's data).

    ``progress(done, total)`` after each epoch. ``use_cache=False`` retrains and stores nothing.
    """
    name, width = _check(name, width)
    if use_cache and (name, width) in _memo:
        return _memo[(name, width)]
    spec = recipe(name)
    runs = data = None
    key = cache_key(name, width)
    if use_cache and (hit := cache.get(key)) is not None:
        try:
            runs, data = demos.runs_from_bytes(hit)
        except (ValueError, KeyError, OSError) as exc:  # another layout: retrain
            log.warning("wide demo %s/%d: unreadable cache entry (%s); retraining", name, width, exc)
            runs = None
    if runs is None:
        data = demos.demo_data(name)
        epochs = spec["epochs"]
        done = 0
        if progress is not None:
            progress(0, epochs)

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, epochs)

        with single_thread():
            model = build(width, spec.pop("init_seed"))
            spec["every"] = spec["epochs"]  # keep the start and the end only
            runs = {
                "A": dm.train_sgd(
                    model, (data["train_X"], data["train_y"]), seed=spec.pop("order_seed"), on_epoch=tick, **spec
                )
            }
        if use_cache:
            cache.put(key, demos.runs_to_bytes(runs, data))
    elif progress is not None:
        progress(spec["epochs"], spec["epochs"])
    model = build(width, 0)
    state = runs["A"].state
    expected = set(model.state_dict())
    if set(state) != expected or any(tuple(state[k].shape) != tuple(model.state_dict()[k].shape) for k in expected):
        raise ValueError(f"the cached wide demo {name}/{width} does not match a 64-{width}-10 MLP; clear the cache.")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    model.eval()
    with single_thread():
        problem = Problem(model, F.cross_entropy, (data["train_X"], data["train_y"]), (data["val_X"], data["val_y"]))
    if use_cache:
        _memo[(name, width)] = problem
    return problem
