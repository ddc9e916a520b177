"""Time left for a running job, estimated so that the number a person reads does not jump.

The estimate uses the rate over the whole job so far, ``elapsed * (total - done) / done``,
never the last chunk's rate; it is withheld until ``min_elapsed`` seconds and ``min_fraction``
of the work have passed (the first chunk carries warm-up: compilation, loading). The shown value
then counts down with the clock and moves toward each new estimate with a time constant of
``tau`` seconds, so a burst of progress or a stall moves it gradually instead of making it
leap from 12 to 19 to 3 minutes.

>>> eta = EtaSmoother()
>>> eta.update(done=0, total=100, elapsed=0.5) is None
True
>>> round(eta.update(done=50, total=100, elapsed=10.0))
10
"""

from __future__ import annotations

import math


class EtaSmoother:
    """Smoothed seconds left; feed it ``update(done, total, elapsed)`` at every poll."""

    def __init__(self, tau: float = 15.0, min_elapsed: float = 2.0, min_fraction: float = 0.02):
        if not (tau > 0 and min_elapsed >= 0 and 0 <= min_fraction < 1):
            raise ValueError(
                f"need tau > 0, min_elapsed >= 0 and 0 <= min_fraction < 1; got {tau}, {min_elapsed}, {min_fraction}."
            )
        self.tau, self.min_elapsed, self.min_fraction = tau, min_elapsed, min_fraction
        self.shown: float | None = None
        self.last_elapsed: float | None = None
        self.total: int | None = None

    @staticmethod
    def raw(done: int, total: int, elapsed: float) -> float | None:
        """``elapsed * (total - done) / done`` (the whole job's rate), ``None`` before any progress."""
        if total <= 0 or done <= 0:
            return None
        return max(0.0, elapsed * (total - done) / done)

    def update(self, done: int, total: int, elapsed: float) -> float | None:
        """Seconds left to show now, or ``None`` while there is too little to go on."""
        if total != self.total:  # a new or resized job: start over
            self.shown, self.last_elapsed, self.total = None, None, total
        if total > 0 and done >= total:
            self.shown, self.last_elapsed = 0.0, elapsed
            return 0.0
        estimate = self.raw(done, total, elapsed)
        if estimate is None or elapsed < self.min_elapsed or done < self.min_fraction * total:
            return self.shown
        if self.shown is None or self.last_elapsed is None:
            self.shown, self.last_elapsed = estimate, elapsed
            return self.shown
        dt = max(0.0, elapsed - self.last_elapsed)
        counted_down = max(0.0, self.shown - dt)
        weight = 1.0 - math.exp(-dt / self.tau)
        self.shown = counted_down + weight * (estimate - counted_down)
        self.last_elapsed = elapsed
        return self.shown
