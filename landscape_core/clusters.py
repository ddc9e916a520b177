"""Choosing where to compute from a Ray address: ``for_address("local" | "auto" | ADDRESS)``.

The factory in front of the executors (``landscape_core.executors``): ``None`` or ``""`` is this
process; anything else is a ``ray_executor.RayExecutor`` (optional extra ``ray``), one per
address and options in a process, so the CLI, the dashboard and notebooks share a pool of actors.
"""

from __future__ import annotations

import importlib.util
import os
import threading

from .executors import Executor, InProcess

__all__ = ["for_address", "ray_available"]

_POOLS: dict[tuple, Executor] = {}  # one executor (one pool of actors) per address and options
_POOLS_LOCK = threading.Lock()


def ray_available() -> bool:
    """Whether the optional ``ray`` package is installed here (found, not imported: importing Ray
    takes seconds, and the dashboard asks on every run of its sidebar)."""
    return importlib.util.find_spec("ray") is not None


def for_address(address: str | None, **options) -> Executor:
    """An executor for a ``--ray`` value: ``None``/``""``: in-process; ``"local"``: a Ray instance
    started on this machine with its cores; ``"auto"``: the cluster named by ``RAY_ADDRESS``;
    else a Ray address (``host:6379`` or ``ray://host:10001``). ``options`` go to ``RayExecutor``.
    The same address and options give the same executor (one pool of actors per process).

    >>> for_address(None).name
    'in-process'
    """
    if address is None or address == "":
        return InProcess()
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
