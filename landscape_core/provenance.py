"""How each direction was made: a registry from a direction's bytes to its settings.

Every maker of directions (``directions``, ``hessian``, ``trajectory``, ``checkpoint_plane``)
calls ``register``; ``surface`` and the results call ``provenance`` to say how a plane was
drawn, and ``digest`` names a vector in cache keys. A leaf module: it imports nothing of this
package, so the makers and the collector (``directions``) can all build on it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from .identity import raw_bytes

_PROVENANCE: OrderedDict[str, dict] = OrderedDict()
_PROVENANCE_MAX = 1024


def digest(vector: torch.Tensor) -> str:
    """sha256 of a direction's float32 bytes (identity for provenance and cache keys)."""
    return hashlib.sha256(raw_bytes(vector.detach().to("cpu", torch.float32))).hexdigest()


def register(vectors: torch.Tensor, settings: dict) -> torch.Tensor:
    """Remember how each row of ``vectors`` was made; returns ``vectors`` unchanged."""
    rows = vectors if vectors.dim() == 2 else vectors[None]
    for i, row in enumerate(rows):
        _PROVENANCE[digest(row)] = {**settings, "index": i}
        _PROVENANCE.move_to_end(digest(row))
    while len(_PROVENANCE) > _PROVENANCE_MAX:
        _PROVENANCE.popitem(last=False)
    return vectors


def provenance(vector: torch.Tensor) -> dict:
    """How ``vector`` was made, if a function of this library made it; else ``{"kind": "user"}``."""
    return dict(_PROVENANCE.get(digest(vector), {"kind": "user"}))
