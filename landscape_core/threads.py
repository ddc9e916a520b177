"""One intra-op torch thread for a block of tiny tensor work (``single_thread``).

Why: the models and tensors here are small (a few thousand parameters, batches of a few
hundred rows). On a busy two-core machine two intra-op threads contend and spin, and were
measured 10-36x slower than one (training a demo, the trajectory autoencoder, per-input
embedding probes). One thread also fixes the floating-point reduction order, so a seeded
training run gives the same bits whatever the core count.

``torch.set_num_threads`` is process-wide in part: with the OpenMP backend it sets the
count of the calling OS thread *and* the default that threads started later inherit, while
other running threads keep theirs. So ``single_thread`` sets 1 in the calling thread and
restores that thread's own previous count on leaving, and a process-wide, lock-protected
reference count decides the inherited default: the first user to enter saves it, the last
one to leave restores it (overlapping jobs on several threads, and nested blocks, restore
correctly in any order).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_lock = threading.Lock()
_users = 0
_saved = 1  # the count before the first current user entered


@contextlib.contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; counts come back when users leave.

    The calling thread gets its previous count back when it leaves; the process default
    comes back when the last user in any thread leaves. ``enabled=False`` runs the block
    unchanged (for callers that decide by problem size). Usable as ``with single_thread():``
    or as a decorator ``@single_thread()``.
    """
    global _users, _saved
    if not enabled:
        yield
        return
    with _lock:
        previous = torch.get_num_threads()
        if _users == 0:
            _saved = previous
        _users += 1
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            torch.set_num_threads(_saved if _users == 0 else previous)
