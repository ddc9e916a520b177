"""How cache entries are laid out on disk: sealed raw bytes only, plain string keys only.

Each value is sealed: ``magic | sha256(key) | sha256(payload) | payload`` (``seal``).
``unseal`` gives the payload back only if it was sealed under that very key and is intact,
so bytes copied under another key, a flipped byte or a truncated value read as a miss.

``diskcache`` decides how to read a value from the ``mode`` stored next to it in
``cache.db``: a row whose mode says "pickle" goes through ``pickle.load``. Anyone who can
write a shared cache folder could then run code in every reader. ``BytesDisk`` stores and
reads ``bytes`` only: a row in any other mode (pickle, text, a key that is not a plain
string) raises ``RefusedEntry`` before anything is decoded, and the caller treats it as a
miss. File names of large values are checked against diskcache's own pattern, so a row
cannot make a reader open, or a cull delete, a file outside the cache folder.

``ReadOnlyStore`` reads the same layout from a folder that cannot be written (no locks, no
journal): a shared cache mounted read-only still serves its hits.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import threading
import time

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW

MAX_VALUE_BYTES = 2**31  # a value file larger than this is refused (nothing written here is near it)
_VALUE_FILE = re.compile(r"^[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val$")


_MAGIC = b"LSC\x01"
_HEADER = len(_MAGIC) + 64


def seal(key: str, payload: bytes) -> bytes:
    """The stored form of ``payload`` under ``key``: magic, key digest, payload digest, payload."""
    return _MAGIC + hashlib.sha256(key.encode()).digest() + hashlib.sha256(payload).digest() + payload


def unseal(key: str, blob: bytes) -> tuple[bytes | None, str | None]:
    """``(payload, None)`` if ``blob`` was sealed under ``key`` and is intact, else ``(None, what is wrong)``."""
    if len(blob) < _HEADER or blob[: len(_MAGIC)] != _MAGIC:
        return None, "is not in this library's sealed format (an older version's or a foreign one)"
    if blob[len(_MAGIC) : len(_MAGIC) + 32] != hashlib.sha256(key.encode()).digest():
        return None, "holds the bytes of another request (its key digest does not match)"
    if blob[len(_MAGIC) + 32 : _HEADER] != hashlib.sha256(blob[_HEADER:]).digest():
        return None, "is damaged (its checksum does not match: flipped or truncated bytes)"
    return blob[_HEADER:], None


class RefusedEntry(ValueError):
    """A cache row that is not raw bytes under a plain string key (never decoded)."""


class BytesDisk(diskcache.Disk):
    """A ``diskcache.Disk`` that stores and reads raw bytes only, under ``str`` keys only."""

    def put(self, key):
        if type(key) is not str:
            raise TypeError(f"cache keys are plain strings; got {type(key).__name__}.")
        return key, True

    def get(self, key, raw):
        if not raw or type(key) is not str:
            raise RefusedEntry("a cache row has a key that is not a plain string")
        return key

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if read or type(value) is not bytes:
            raise TypeError(f"the cache stores bytes only; got {type(value).__name__}.")
        return super().store(value, False, key)

    def fetch(self, mode, filename, value, read):
        if read:
            raise RefusedEntry("file handles are not served from this cache")
        if mode == MODE_RAW and isinstance(value, bytes):
            return bytes(value)
        if mode == MODE_BINARY and value is None and isinstance(filename, str):
            return read_value_file(self._directory, filename)
        raise RefusedEntry(f"a cache row is stored in mode {mode!r} (only raw bytes are read)")

    def remove(self, file_path):
        if isinstance(file_path, str) and _VALUE_FILE.match(file_path):
            super().remove(file_path)


def read_value_file(directory: str, filename: str) -> bytes:
    """Bytes of the value file ``filename`` (relative, diskcache's pattern) in ``directory``.

    Refuses other names, links and anything but a regular file under ``MAX_VALUE_BYTES``.
    A missing file raises ``OSError`` (diskcache reads that as "deleted meanwhile": a miss).
    """
    if not _VALUE_FILE.match(filename):
        raise RefusedEntry("a cache row names a value file outside the cache's layout")
    fd = os.open(os.path.join(directory, filename), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_VALUE_BYTES:
            raise RefusedEntry("a cache value file is not a regular file of a sensible size")
        return handle.read(MAX_VALUE_BYTES + 1)


class ReadOnlyStore:
    """Reads a diskcache folder that cannot be written (``immutable`` SQLite, no journal).

    ``get(key) -> bytes | None`` with ``BytesDisk``'s rules; raises ``sqlite3.Error`` when
    there is no readable ``cache.db``.
    """

    writable = False

    def __init__(self, directory: str):
        self.directory = directory
        path = os.path.join(directory, "cache.db")
        if not os.path.isfile(path):
            raise sqlite3.OperationalError(f"no cache database in {directory}")
        uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?immutable=1"
        self._con = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._disk = BytesDisk(directory)
        self._con.execute("SELECT count(*) FROM Cache WHERE 0").fetchall()  # a readable Cache table

    def get(self, key: str) -> bytes | None:
        with self._lock:
            rows = self._con.execute(
                "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (key, time.time()),
            ).fetchall()
        if not rows:
            return None
        mode, filename, value = rows[0]
        try:
            return self._disk.fetch(mode, filename, value, False)
        except FileNotFoundError:
            return None

    def iterkeys(self):
        with self._lock:
            keys = [k for (k,) in self._con.execute("SELECT key FROM Cache WHERE raw = 1 ORDER BY rowid")]
        return iter(k for k in keys if isinstance(k, str))

    def close(self) -> None:
        with self._lock:
            self._con.close()
