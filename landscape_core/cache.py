"""Disk cache of results, keyed by content.

Key: sha256 over (kind of result, algorithm version, settings), where the settings already
hold the model's parameter hash, the data fingerprint and the directions' hashes. Values
are raw npz bytes (``ResultIO.to_bytes``), never pickles of arbitrary objects; diskcache
stores ``bytes`` as they are and commits each entry atomically, so a cancelled or crashed
run leaves either a whole entry or none. Long grids store finished chunks under
``<key>:chunk:<i>`` so an interrupted run resumes.

Location: ``$LANDSCAPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/landscape-dashboard``, else
``~/.cache/landscape-dashboard``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import diskcache

from . import __version__

_caches: dict[Path, diskcache.Cache] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Directory of the disk cache (see module docstring)."""
    env = os.environ.get("LANDSCAPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landscape-dashboard"


def get_cache() -> diskcache.Cache:
    """The process-wide ``diskcache.Cache`` for ``cache_dir()`` (created on first use)."""
    path = cache_dir()
    with _lock:
        if path not in _caches:
            path.mkdir(parents=True, exist_ok=True)
            _caches[path] = diskcache.Cache(str(path), size_limit=4 * 2**30)
        return _caches[path]


def make_key(kind: str, algorithm_version: int, settings: dict) -> str:
    """sha256 key for a result of ``kind`` made by ``algorithm_version`` with ``settings``."""
    payload = json.dumps(
        {"kind": kind, "algorithm": algorithm_version, "library": __version__.split("+")[0], "settings": settings},
        sort_keys=True,
        default=str,
    )
    return f"{kind}:{hashlib.sha256(payload.encode()).hexdigest()}"


def get(key: str) -> bytes | None:
    """Stored bytes for ``key`` or ``None``."""
    value = get_cache().get(key)
    return value if isinstance(value, bytes) else None


def put(key: str, value: bytes) -> None:
    """Store ``value`` (bytes) under ``key``; atomic."""
    if not isinstance(value, bytes):
        raise TypeError("the cache stores bytes only (npz), not Python objects.")
    get_cache().set(key, value)


def delete(key: str) -> None:
    get_cache().delete(key)


def clear() -> int:
    """Remove every entry; returns the number removed."""
    return get_cache().clear()
