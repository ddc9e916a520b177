"""What the side-by-side benchmarks share: interleaved timing and the check against the plain loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timed(fn: Callable) -> tuple[float, object]:
    """``(wall seconds, result)`` of ``fn()``."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(ways: dict[str, Callable], repeats: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Each way once per round, in the given order, so that all of them see the same load:
    ``({way: [seconds per round]}, {way: its last result})``."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    last: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in ways.items():
            seconds, last[name] = timed(fn)
            times[name].append(seconds)
    return times, last


def checked_against_loop(ours, loop: np.ndarray, problem) -> float:
    """Largest relative difference of our plane's training loss to the plain loop's (asserted at
    most 1e-5), after asserting that the centre cell equals the base loss exactly."""
    assert ours.center_value() == problem.base["train_loss"], "centre cell must equal the base loss"
    values = ours.values["train_loss"]
    rel = float(np.max(np.abs(values - loop) / np.abs(loop)))
    assert rel <= 1e-5, f"ours vs loop: {rel:.2e} relative"
    return rel
