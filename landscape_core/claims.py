"""Claims on pieces of a shared computation, kept in the cache so processes see each other.

A claim is a small record (owner's process id, host, a random token, the time of its last
heartbeat) stored next to the piece it covers. Whoever holds a live claim computes the
piece; others compute something else or wait for it. A claim is abandoned (anyone may take
it over) when its heartbeat is older than ``STALE_S`` seconds, or at once when its process
is gone from this host. ``Heartbeat`` refreshes the claims of a computation in progress
from a helper thread that is joined when the computation ends.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

HEARTBEAT_S = 2.0  # how often a holder refreshes its claims
STALE_S = 30.0  # a claim not refreshed for this long is abandoned (its holder died or hangs)
HOST = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    """Who holds a piece: ``pid`` and ``host`` of the process, ``token`` of the holder, ``beat``
    (wall-clock seconds of the last heartbeat)."""

    pid: int
    host: str
    token: str
    beat: float

    @classmethod
    def mine(cls, token: str, now: float) -> Claim:
        return cls(os.getpid(), HOST, token, now)

    def to_bytes(self) -> bytes:
        return json.dumps({"pid": self.pid, "host": self.host, "token": self.token, "beat": self.beat}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> Claim | None:
        """The claim in ``blob``; ``None`` for no claim or an unreadable one (then it counts as abandoned)."""
        if blob is None:
            return None
        try:
            record = json.loads(blob.decode())
            return cls(int(record["pid"]), str(record["host"]), str(record["token"]), float(record["beat"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None

    def live(self, now: float) -> bool:
        """Held by a running process that refreshed it within ``STALE_S`` seconds."""
        if not now - self.beat < STALE_S:
            return False
        if self.host == HOST and self.pid != os.getpid():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:  # someone else's process: it exists
                return True
        return True


def new_token() -> str:
    """A token naming one holder (one computation in one thread)."""
    return uuid.uuid4().hex


class Heartbeat:
    """Calls ``refresh()`` every ``every`` seconds from a helper thread while the block runs.

    The thread is a daemon (it never keeps a process alive) and is joined on leaving the
    block; an exception in ``refresh`` is ignored (the next beat tries again).
    """

    def __init__(self, refresh: Callable[[], None], every: float = HEARTBEAT_S):
        self.refresh = refresh
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.refresh()
            except Exception:  # a busy or failing cache: the claim may go stale, never the computation
                pass

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
