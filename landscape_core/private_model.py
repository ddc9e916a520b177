"""A private copy of a model's module structure for every thread that evaluates it.

``torch.func.functional_call`` runs a module at given parameters by swapping them into the
module's ``_parameters``/``_buffers`` dicts for the duration of the call. Two threads calling it
on the same module overwrite each other's swap: one computes with the other's parameters (a
wrong value, no error), and a deep copy taken meanwhile holds plain tensors instead of its
``nn.Parameter``s. So the model a ``Problem`` keeps (``problem.model``) is never swapped; every
thread evaluates on its own copy of the structure (``PrivateModels.get``). The copy shares the
parameter and buffer tensors (nothing big is copied, and nothing writes into them: swaps replace
dict entries, they do not write into tensors), and is made once per thread.
"""

from __future__ import annotations

import copy
import threading

from torch import nn


def structure_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are the same tensor objects."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


class PrivateModels:
    """One structure copy of ``module`` per thread; ``module`` itself is only read (copied, hashed).

    ``get()``: this thread's copy, made on first use. Copying a ``PrivateModels`` (``copy.copy`` of a
    Problem) shares the copies; a deep copy or a pickle carries only ``module``.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self._local = threading.local()

    def get(self) -> nn.Module:
        private = getattr(self._local, "module", None)
        if private is None:
            private = self._local.module = structure_copy(self.module)
        return private

    def __getstate__(self) -> dict:
        return {"module": self.module}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["module"])

    def __deepcopy__(self, memo) -> PrivateModels:
        return PrivateModels(copy.deepcopy(self.module, memo))
