"""Uploaded workspaces kept in server memory, each owned by the browser session that uploaded it.

A team server is shared: one visitor's uploads must not show in another's sidebar, be opened
by them, or be pushed out by them. So every upload is registered under an ``owner`` (an
unguessable per-session token that the dashboard keeps in its session state) and every
lookup names the owner:

* ``register(workspace, owner)`` gives each upload a fresh random id (``"upload:<12 hex>"``)
  and a label that tells uploads apart: a number, the workspace name (which holds the file
  names) and the time of upload. Uploading the same files twice gives two entries.
* ``registered(id, owner)``, ``registered_ids(owner)`` and ``label(id, owner)`` see only that
  owner's uploads; anyone else gets ``KeyError`` and learns nothing about other ids.

How long uploads are kept (``KEEP_SECONDS``, ``MAX_PER_SESSION``, ``MAX_REGISTERED``): for the
session that made them, at most ``MAX_PER_SESSION`` at a time (a further upload replaces that
session's own oldest), and each is dropped ``KEEP_SECONDS`` after it was last opened (a browser
tab that reloads is a new session, so its old uploads expire this way) or when the server
stops. When ``MAX_REGISTERED`` uploads of all sessions together are held, a new upload replaces
the session's own oldest, or is refused if it has none: nobody pushes out anyone else's.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .workspace import Workspace

PREFIX = "upload:"
MAX_PER_SESSION = 4
MAX_REGISTERED = 32
KEEP_SECONDS = 2 * 3600
_LABEL_CHARS = 90


class RegistryFull(ValueError):
    """The server holds ``MAX_REGISTERED`` uploads already; the message says when room frees up."""


@dataclass
class _Kept:
    workspace: Workspace
    owner: str
    label: str
    last_used: float


_KEPT: OrderedDict[str, _Kept] = OrderedDict()  # oldest registration first
_LOCK = threading.Lock()
_COUNTER = [0]


def _check_owner(owner) -> str:
    if not isinstance(owner, str) or len(owner) < 8:
        raise ValueError(f"owner must be a session token of at least 8 characters; got {owner!r}.")
    return owner


def _expire(now: float) -> None:
    for wid in [w for w, kept in _KEPT.items() if now - kept.last_used > KEEP_SECONDS]:
        del _KEPT[wid]


def _label(number: int, name: str, when: float) -> str:
    short = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 3] + "..."
    return f"#{number} {short} ({time.strftime('%H:%M:%S', time.localtime(when))})"


def register(workspace: Workspace, owner: str, now: float | None = None) -> str:
    """Keep ``workspace`` for the session ``owner``; returns its new id ``"upload:<12 hex>"``.

    A session at ``MAX_PER_SESSION`` uploads (or with uploads on a full server) gives up its own
    oldest. ``now``: seconds since the epoch (default: the clock). Raises ``RegistryFull`` when
    the server already holds ``MAX_REGISTERED`` uploads and none of them is this session's.
    """
    if not isinstance(workspace, Workspace):
        raise TypeError(f"register needs a Workspace; got {type(workspace).__name__}.")
    _check_owner(owner)
    now = time.time() if now is None else float(now)
    with _LOCK:
        _expire(now)
        own = [wid for wid, kept in _KEPT.items() if kept.owner == owner]
        while own and (len(own) >= MAX_PER_SESSION or len(_KEPT) >= MAX_REGISTERED):
            del _KEPT[own.pop(0)]  # only ever this session's own oldest
        if len(_KEPT) >= MAX_REGISTERED:
            wait = min(KEEP_SECONDS - (now - kept.last_used) for kept in _KEPT.values())
            raise RegistryFull(
                f"this server already keeps {len(_KEPT)} uploads of other sessions, its limit of {MAX_REGISTERED}; "
                f"the next one expires in about {max(round(wait / 60), 1)} min. Try again then, or run the "
                "dashboard yourself."
            )
        _COUNTER[0] += 1
        wid = PREFIX + secrets.token_hex(6)
        _KEPT[wid] = _Kept(workspace, owner, _label(_COUNTER[0], workspace.name, now), now)
    return wid


def _own(workspace_id: str, owner: str, now: float | None) -> _Kept:
    _check_owner(owner)
    now = time.time() if now is None else float(now)
    _expire(now)
    kept = _KEPT.get(workspace_id)
    if kept is None or kept.owner != owner:
        raise KeyError(
            f"no uploaded workspace {workspace_id!r} in this session (uploads are kept for the browser session that "
            f"made them, for {KEEP_SECONDS // 3600} hours after last use); this session has "
            f"{', '.join(w for w, k in _KEPT.items() if k.owner == owner) or 'none'}."
        )
    return kept


def registered(workspace_id: str, owner: str, now: float | None = None) -> Workspace:
    """The workspace ``owner`` registered under ``workspace_id`` (and mark it used); ``KeyError`` otherwise."""
    with _LOCK:
        kept = _own(workspace_id, owner, now)
        kept.last_used = time.time() if now is None else float(now)
        return kept.workspace


def label(workspace_id: str, owner: str, now: float | None = None) -> str:
    """The display label of ``owner``'s upload ``workspace_id``: ``"#3 <name> (14:02:11)"``."""
    with _LOCK:
        return _own(workspace_id, owner, now).label


def registered_ids(owner: str, now: float | None = None) -> list[str]:
    """Ids of ``owner``'s uploads still kept, oldest first (nobody else's)."""
    _check_owner(owner)
    with _LOCK:
        _expire(time.time() if now is None else float(now))
        return [wid for wid, kept in _KEPT.items() if kept.owner == owner]


def new_owner() -> str:
    """A fresh unguessable session token (32 hex characters) to own uploads."""
    return secrets.token_hex(16)
