"""Where evaluation runs: the executor seam under the evaluator and the HVP operator.

Every long computation goes through ``evaluate.evaluate_points`` / ``evaluate.evaluate_chunks``
(values at points) or ``hvp.HessianOperator`` (Hessian-vector products). Both ask
``current()`` which executor runs them; the algorithms on top (planes, paths, Lanczos,
Hutch++, SLQ) never know which one it is.

* ``InProcess`` (the default): this process, chunk after chunk, as always.
* ``landscape_core.ray_executor.RayExecutor`` (optional extra ``ray``): chunks of points on
  Ray actors, Hessian-vector products summed over actors that each hold a shard of the data.

Choose one for a block of code with ``using(executor)`` (a context variable: threads started
inside do not inherit it, so a job's function enters it itself) or for the whole process
with ``set_default(executor)`` (the CLI's ``--ray``). ``clusters.for_address("local" | "auto" |
"host:6379")`` makes a Ray executor, or says why it cannot. This module imports nothing of the
library (the evaluator and the HVP operator import it).

>>> current().name
'in-process'
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

__all__ = ["Executor", "InProcess", "current", "set_default", "using"]

OnChunk = Callable[[int, dict], None]


class Executor:
    """What a remote executor provides (``InProcess`` is the default: work stays in the evaluator).

    ``remote``: ``True`` when work leaves this process (the evaluator then hands whole
    requests to ``run_chunks`` instead of looping itself).
    """

    name = "executor"
    remote = False

    def run_chunks(
        self,
        problem,
        center,
        basis,
        chunks: Sequence,
        splits: list[str],
        *,
        buffers=None,
        memory_budget: int | None = None,
        progress=None,
        cancel=None,
        on_chunk: OnChunk | None = None,
    ) -> list[dict]:
        """Values at ``center + chunks[i] @ basis`` for every chunk ``i`` (``(k_i, m)`` coefficients).

        Returns one ``{"<split>_<quantity>": float64 (k_i,)}`` per chunk, in order. ``on_chunk(i,
        values)`` is called in the calling thread as each chunk finishes (a remote executor: in
        the order they finish), so the caller can store it at once. ``progress(done, total)``
        counts points; ``cancel`` stops the work (``evaluate.Cancelled``) with every finished
        chunk already handed to ``on_chunk``.
        """
        raise NotImplementedError

    def loss_function(self, problem, split: str = "train", dtype=None, method="auto"):
        """The full-split loss with ``hvp(theta, v)`` and ``gradient(theta)`` (``hvp.LossFunction``'s interface)."""
        raise NotImplementedError

    def points_per_piece(self, k: int, chunk: int) -> int:
        """Points per piece when one request of ``k`` points (evaluator chunks of ``chunk``) is split."""
        return k

    def rows_per_chunk(self, steps: int, steps_y: int) -> int:
        """Rows of a ``steps x steps_y`` plane per stored chunk."""
        return max(1, min(steps, 4096 // steps_y))

    def describe(self) -> str:
        """One line for people: where the work runs."""
        return self.name


class InProcess(Executor):
    """This process, one chunk after another (the default): the evaluator and the HVP operator
    run the work themselves (``remote`` is ``False``), exactly as without any executor."""

    name = "in-process"


_IN_PROCESS = InProcess()
_default: Executor = _IN_PROCESS
_current: contextvars.ContextVar[Executor | None] = contextvars.ContextVar("landscape_executor", default=None)


def current() -> Executor:
    """The executor of this context (``using``), else the process default (``set_default``)."""
    chosen = _current.get()
    return _default if chosen is None else chosen


def set_default(executor: Executor | None) -> None:
    """Make ``executor`` the process-wide default (``None``: back to in-process)."""
    global _default
    if executor is not None and not isinstance(executor, Executor):
        raise ValueError(f"executor must be an Executor or None; got {type(executor).__name__}.")
    _default = _IN_PROCESS if executor is None else executor


@contextlib.contextmanager
def using(executor: Executor | None) -> Iterator[Executor]:
    """Run the block with ``executor`` (``None``: the process default)."""
    if executor is not None and not isinstance(executor, Executor):
        raise ValueError(f"executor must be an Executor or None; got {type(executor).__name__}.")
    token = _current.set(executor)
    try:
        yield current()
    finally:
        _current.reset(token)
