"""One intra-op torch thread for a block of tiny tensor work, shared by the whole process.

Why: the models and tensors here are small (a few thousand parameters, batches of a few
hundred rows). On a busy two-core machine two intra-op threads contend and spin, and were
measured 10-36x slower than one (training a demo, the trajectory autoencoder, per-input
embedding probes). One thread also fixes the floating-point reduction order, so a seeded
training run gives the same bits whatever the core count.

``torch.set_num_threads`` is process-global, so overlapping users (two jobs on two Python
threads, or a nested block) would restore each other's value out of order. ``single_thread``
is therefore reference-counted: the first user saves the current count and sets 1, the last
user to leave restores the saved count.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_lock = threading.Lock()
_users = 0
_saved = 1


@contextlib.contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; the previous count returns when the last user leaves.

    ``enabled=False`` runs the block unchanged (for callers that decide by problem size).
    Usable as ``with single_thread():`` or as a decorator ``@single_thread()``.
    """
    global _users, _saved
    if not enabled:
        yield
        return
    with _lock:
        if _users == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                torch.set_num_threads(_saved)
