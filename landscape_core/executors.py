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
with ``set_default(executor)`` (the CLI's ``--ray``). ``for_address("local" | "auto" |
"ray://host:10001" | "host:6379")`` makes a Ray executor, or says why it cannot.

>>> current().name
'in-process'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Callable, Iterator, Sequence

__all__ = ["Executor", "InProcess", "current", "for_address", "set_default", "using"]

OnChunk = Callable[[int, dict], None]


class Executor:
    """What an executor provides; ``InProcess`` is the reference implementation.

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
    """This process, one chunk after another (the default)."""

    name = "in-process"

    def run_chunks(
        self,
        problem,
        center,
        basis,
        chunks,
        splits,
        *,
        buffers=None,
        memory_budget=None,
        progress=None,
        cancel=None,
        on_chunk=None,
    ):
        from .evaluate import DEFAULT_MEMORY_BUDGET, evaluate_points

        total = sum(len(c) for c in chunks)
        done, parts = 0, []
        for index, coeffs in enumerate(chunks):
            report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
            values = evaluate_points(
                problem, center, basis, coeffs, splits, report, cancel, buffers, memory_budget or DEFAULT_MEMORY_BUDGET
            )
            parts.append(values)
            done += len(coeffs)
            if on_chunk is not None:
                on_chunk(index, values)
        return parts

    def loss_function(self, problem, split="train", dtype=None, method="auto"):
        from .hvp import LossFunction

        return LossFunction(problem, split=split, dtype=dtype, method=method)


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


_POOLS: dict[tuple, Executor] = {}  # one executor (one pool of actors) per address and options
_POOLS_LOCK = threading.Lock()


def ray_available() -> bool:
    """Whether the optional ``ray`` package can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def for_address(address: str | None, **options) -> Executor:
    """An executor for a ``--ray`` value: ``None``/``""``: in-process; ``"local"``: a Ray instance
    started on this machine with its cores; ``"auto"``: the cluster named by ``RAY_ADDRESS``;
    else a Ray address (``host:6379`` or ``ray://host:10001``). ``options`` go to ``RayExecutor``.
    The same address and options give the same executor (one pool of actors per process)."""
    if address is None or address == "":
        return _IN_PROCESS
    if not isinstance(address, str):
        raise ValueError(f"the Ray address must be a string such as 'local', 'auto' or 'host:6379'; got {address!r}.")
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        raise ValueError("--ray auto uses the RAY_ADDRESS environment variable, which is not set; give an address.")
    if not ray_available():
        raise ValueError(
            f"Ray address {address!r} given but Ray is not installed; install the extra: pip install -e '.[ray]'."
        )
    from .ray_executor import RayExecutor

    key = (address, tuple(sorted(options.items())))
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = RayExecutor(address, **options)
        return _POOLS[key]
