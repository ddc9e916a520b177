"""Disk cache of results, keyed by content; whatever goes wrong with it, work goes on.

Key: sha256 over (kind of result, algorithm version, library version, settings), where the
settings hold the model's parameter hash, the data fingerprint, the identity of the loss
and metrics (``landscape_core.identity``) and the directions' hashes. A request whose loss
or metric cannot be identified gets a ``nocache:`` key: computed, never stored or served.

Values are raw bytes (``ResultIO.to_bytes``: npz, never pickles) in a sealed envelope:
``magic | sha256(key) | sha256(payload) | payload``. A read checks both digests, so bytes
copied under another key, a flipped byte or a truncated value are a miss, never a wrong
answer. Storage is ``diskcache`` with ``BytesDisk`` (raw bytes and string keys only; a row
in any other mode is a miss and never reaches ``pickle``). diskcache commits each entry
atomically: a cancelled or crashed run leaves a whole entry or none.

Unusable cache, work goes on (said once, as a logging warning; ``status()`` gives the
sentence for the CLI and the dashboard): a folder that cannot be written is read
(``ReadOnlyStore``) and nothing is stored; a folder that can be neither created nor read
(a file, ``/dev/null``, an unwritable parent) makes every read a miss; a damaged
``cache.db`` is moved aside and a fresh one started; an unreadable entry is a miss,
recomputed and replaced.

Location: ``$LANDSCAPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/landscape-dashboard``, else
``~/.cache/landscape-dashboard``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import diskcache

from . import __version__
from .cache_disk import BytesDisk, ReadOnlyStore, RefusedEntry, seal, unseal
from .identity import UNKNOWN_IDENTITY

log = logging.getLogger(__name__)

NOCACHE = "nocache:"  # prefix of keys whose request cannot be identified: never stored or served
SIZE_LIMIT = 4 * 2**30
_STORE_ERRORS = (sqlite3.Error, OSError, diskcache.Timeout)
T = TypeVar("T")


@dataclass
class _Handle:
    """The open cache of one folder: ``kind`` "rw" (diskcache), "ro" (read only) or "off"."""

    path: Path
    kind: str
    store: object | None
    inode: int | None = None
    note: str | None = None  # what is wrong with the folder, for people (None: all fine)


_handles: dict[Path, _Handle] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def cache_dir() -> Path:
    """Directory of the disk cache (see module docstring)."""
    env = os.environ.get("LANDSCAPE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landscape-dashboard"


def warn_once(tag: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``tag`` is seen in this process."""
    with _lock:
        if tag in _warned:
            return
        _warned.add(tag)
    log.warning("%s", message)


# -- opening ------------------------------------------------------------------------------------
def _handle() -> _Handle:
    path = cache_dir()
    with _lock:
        handle = _handles.get(path)
        if handle is None:
            handle = _handles[path] = _open(path)
    if handle.note:
        warn_once(f"folder:{path}:{handle.kind}", handle.note)
    return handle


def _inode(path: Path) -> int | None:
    try:
        return (path / "cache.db").stat().st_ino
    except OSError:
        return None


def _open_rw(path: Path) -> _Handle:
    store = diskcache.Cache(str(path), disk=BytesDisk, size_limit=SIZE_LIMIT, timeout=20)
    return _Handle(path, "rw", store, _inode(path))


def _open(path: Path) -> _Handle:
    """Open ``path`` as well as it allows: read-write, else read-only, else off."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if not path.is_dir():
            return _Handle(
                path,
                "off",
                None,
                None,
                f"the cache folder {path} cannot be used ({_reason(exc)}): results are computed but not stored",
            )
    note = None
    try:
        try:
            return _open_rw(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            note = _quarantine(path, exc)
            handle = _open_rw(path)
            handle.note = note
            return handle
    except _STORE_ERRORS as exc:
        rw_error = exc
    try:
        store = ReadOnlyStore(str(path))
    except _STORE_ERRORS as exc:
        return _Handle(
            path,
            "off",
            None,
            None,
            f"the cache folder {path} can be neither written ({_reason(rw_error)}) nor read ({_reason(exc)}): "
            "results are computed but not stored",
        )
    return _Handle(
        path,
        "ro",
        store,
        _inode(path),
        f"the cache folder {path} cannot be written ({_reason(rw_error)}): results are read from it but new "
        "ones are not stored",
    )


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _quarantine(path: Path, exc: BaseException) -> str:
    """Move a damaged ``cache.db`` (and its journal) aside; returns the sentence saying so."""
    db = path / "cache.db"
    target = path / f"cache.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(db, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{db}{suffix}", f"{target}{suffix}")
    return (
        f"the cache database {db} was damaged ({_reason(exc)}); it was moved to {target.name} and a fresh one "
        "started (earlier results are recomputed)"
    )


def _failed(handle: _Handle, exc: BaseException, action: str) -> None:
    """A store operation failed: say so once; a damaged database is moved aside and reopened."""
    damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
    if damaged and handle.kind == "rw":
        note = None
        with _lock:
            if _handles.get(handle.path) is handle:
                del _handles[handle.path]
                with contextlib.suppress(Exception):
                    handle.store.close()
                if _inode(handle.path) == handle.inode:  # not already replaced by another process
                    with contextlib.suppress(OSError):
                        note = _quarantine(handle.path, exc)
        if note is not None:
            warn_once(f"damaged:{handle.path}:{handle.inode}", note)
        return
    warn_once(
        f"{action}:{handle.path}:{type(exc).__name__}",
        f"the cache in {handle.path} could not {action} an entry ({type(exc).__name__}: {_reason(exc)}); "
        "results are computed" + (" but not stored" if action == "store" else ""),
    )


def get_cache():
    """The open store of ``cache_dir()``: a ``diskcache.Cache`` when writable, a ``ReadOnlyStore``
    when only readable, ``None`` when unusable (see ``status()``)."""
    return _handle().store


def status() -> str | None:
    """One sentence on what is wrong with the cache folder (``None`` when it works fully)."""
    return _handle().note


def writable() -> bool:
    """Whether results can be stored in ``cache_dir()``."""
    return _handle().kind == "rw"


# -- keys and the envelope ----------------------------------------------------------------------
def make_key(kind: str, algorithm_version: int, settings: dict) -> str:
    """sha256 key for a result of ``kind`` made by ``algorithm_version`` with ``settings``.

    Settings that hold an ``identity_unknown`` entry (a loss or metric whose identity could
    not be established) give a ``nocache:`` key: the result is computed, never stored or served.
    """
    payload = json.dumps(
        {"kind": kind, "algorithm": algorithm_version, "library": __version__.split("+")[0], "settings": settings},
        sort_keys=True,
        default=str,
    )
    key = f"{kind}:{hashlib.sha256(payload.encode()).hexdigest()}"
    why = _unknown_identity(settings)
    if why is None:
        return key
    warn_once(f"identity:{why}", f"{why}: its results are computed but not cached")
    return NOCACHE + key


def _unknown_identity(value) -> str | None:
    if isinstance(value, dict):
        if isinstance(value.get(UNKNOWN_IDENTITY), str):
            return value[UNKNOWN_IDENTITY]
        value = value.values()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "dict_values":
        for item in value:
            if (why := _unknown_identity(item)) is not None:
                return why
    return None


def _unseal(key: str, blob: bytes) -> bytes | None:
    payload, problem = unseal(key, blob)
    if problem is not None:
        kind = key.split(":", 1)[0]
        warn_once(f"entry:{problem}", f"a cache entry ({kind}) {problem}; it is recomputed and replaced")
    return payload


# -- entries ------------------------------------------------------------------------------------
def _check_key(key) -> None:
    if type(key) is not str:
        raise TypeError(f"cache keys are plain strings; got {type(key).__name__}.")


def get(key: str) -> bytes | None:
    """Stored bytes for ``key``, or ``None`` (a miss: absent, unreadable, refused, or no cache)."""
    _check_key(key)
    if key.startswith(NOCACHE):
        return None
    handle = _handle()
    if handle.store is None:
        return None
    try:
        blob = handle.store.get(key)
    except RefusedEntry as exc:
        warn_once(f"refused:{handle.path}", f"a cache entry in {handle.path} was refused ({exc}); it is recomputed")
        return None
    except _STORE_ERRORS as exc:
        _failed(handle, exc, "read")
        return None
    if not isinstance(blob, bytes):
        return None
    return _unseal(key, blob)


def has(key: str) -> bool:
    """Whether an entry is stored under ``key`` (not read, so not checked: ``get`` may still miss)."""
    if key.startswith(NOCACHE):
        return False
    handle = _handle()
    if handle.kind != "rw":
        return handle.kind == "ro" and get(key) is not None
    try:
        return key in handle.store
    except _STORE_ERRORS as exc:
        _failed(handle, exc, "read")
        return False


def fetch(key: str, decode: Callable[[bytes], T]) -> T | None:
    """``decode(get(key))``, or ``None`` on a miss or when the bytes cannot be decoded (warned once)."""
    raw = get(key)
    if raw is None:
        return None
    try:
        return decode(raw)
    except Exception as exc:  # whatever the bytes are, they are not this result: recompute
        kind = key.split(":", 1)[0]
        warn_once(
            f"decode:{kind}:{type(exc).__name__}",
            f"a cache entry ({kind}) could not be read ({type(exc).__name__}: {_reason(exc)}); it is recomputed "
            "and replaced",
        )
        return None


def put(key: str, value: bytes) -> bool:
    """Store ``value`` (bytes) under ``key``, atomically. ``False`` when it could not be stored."""
    if not isinstance(value, bytes):
        raise TypeError("the cache stores bytes only (npz), not Python objects.")
    _check_key(key)
    if key.startswith(NOCACHE):
        return False
    handle = _handle()
    if handle.kind != "rw":
        return False
    try:
        handle.store.set(key, seal(key, value))
    except _STORE_ERRORS as exc:
        _failed(handle, exc, "store")
        return False
    return True


def delete(key: str) -> None:
    """Remove ``key`` if present (nothing happens when the cache cannot be written)."""
    handle = _handle()
    if handle.kind == "rw":
        try:
            handle.store.delete(key)
        except _STORE_ERRORS as exc:
            _failed(handle, exc, "delete")


def clear() -> int:
    """Remove every entry; returns the number removed."""
    handle = _handle()
    return handle.store.clear() if handle.kind == "rw" else 0


class Transaction:
    """Sealed reads and writes inside one SQLite transaction (``atomic()``)."""

    def __init__(self, store: diskcache.Cache):
        self._store = store

    def get(self, key: str) -> bytes | None:
        try:
            blob = self._store.get(key)
        except RefusedEntry:
            return None
        return _unseal(key, blob) if isinstance(blob, bytes) else None

    def has(self, key: str) -> bool:
        """Whether an entry is stored under ``key`` (not read, so not checked)."""
        return key in self._store

    def put(self, key: str, value: bytes) -> None:
        self._store.set(key, seal(key, value))

    def delete(self, key: str) -> None:
        self._store.delete(key)


@contextlib.contextmanager
def atomic() -> Iterator[Transaction | None]:
    """A ``Transaction`` whose operations commit together and exclude other processes
    (``None`` when the cache cannot be written). Store errors propagate to the caller."""
    handle = _handle()
    if handle.kind != "rw":
        yield None
        return
    with handle.store.transact(retry=True):
        yield Transaction(handle.store)


def reset() -> None:
    """Close every open cache and forget the warnings already given (tests, folder changes)."""
    with _lock:
        for handle in _handles.values():
            with contextlib.suppress(Exception):
                handle.store.close()
        _handles.clear()
        _warned.clear()
