"""Background jobs: long computations in worker threads, shared by key, cancellable.

A job runs ``fn(progress, cancel)`` in a daemon thread, where ``progress(done, total)``
records how far it is and ``cancel`` is a ``threading.Event`` the computation checks
between chunks (the evaluator does: it raises ``landscape_core.Cancelled``). The worker
never touches the UI; a page polls ``Job.snapshot()``.

A computation that has a picture before it is done (a grid filling in coarse to fine) hands it
on with ``publish(partial)`` from inside the job: ``Job.partial`` is the latest one and
``Job.partials`` counts them, so a page redraws when a new one arrives.

The ``JobRegistry`` maps a computation key (a hash of its settings, see ``job_key``) to
one job, so two sessions asking for the same computation share one run: it is computed
once and both are served the result. At most ``max_running`` jobs compute at once (the
rest wait in state ``queued``), so a 2-core machine is not oversubscribed.

When the process ends (a SIGINT, a server's SIGTERM handler, the end of a script), every
live job is cancelled and its thread joined (up to ``SHUTDOWN_WAIT_S``) before the
interpreter shuts down: a worker thread still inside torch at that point would abort the
process ("terminate called without an active exception").

>>> job = registry().submit("demo", lambda progress, cancel: 42, label="answer")  # doctest: +SKIP
>>> job.wait(5); job.result                                                         # doctest: +SKIP
42
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .evaluate import Cancelled

log = logging.getLogger(__name__)

JobFn = Callable[[Callable[[int, int], None], threading.Event], Any]
SHUTDOWN_WAIT_S = 30.0  # how long the end of the process waits for cancelled jobs to stop


class State(str, Enum):
    """Life cycle of a job: queued -> running -> done | error | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.ERROR, State.CANCELLED)


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of a job at one moment (what a progress widget draws).

    ``done``/``total``: points evaluated / to evaluate (``total`` 0 until known).
    ``elapsed_s``: seconds since the job started running. ``eta_s``: estimated seconds left
    (linear in points done), ``None`` until something is done. ``note``: what a cancelled
    job kept, when its ``Cancelled`` says so (it has a ``kept`` count; its message, e.g.
    "kept 3,030 of 10,201 points; Run resumes from there"), else ``None``.
    """

    key: str
    label: str
    state: State
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None
    error: str | None
    note: str | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


class Job:
    """One computation in a worker thread. Create through ``JobRegistry.submit``."""

    def __init__(self, key: str, fn: JobFn, label: str = "", orphan_after: float | None = None):
        self.key = key
        self.orphan_after = orphan_after
        self.orphaned = False  # cancelled because nobody watched, not by a person
        self.last_seen = time.monotonic()
        self.label = label or key
        self.fn = fn
        self.cancel_event = threading.Event()
        self.state = State.QUEUED
        self.done = 0
        self.total = 0
        self.result: Any = None
        self.error: BaseException | None = None
        self.error_traceback: str | None = None
        self.note: str | None = None
        self.partial: Any = None  # the latest picture the computation published (``publish``)
        self.partials = 0
        self.created = time.monotonic()
        self.started: float | None = None
        self.finished_at: float | None = None
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None

    # -- called from the worker ---------------------------------------------------
    def progress(self, done: int, total: int) -> None:
        """Record progress; safe to call from any thread. Cancels an orphaned job (see ``touch``)."""
        with self._lock:
            self.done, self.total = int(done), int(total)
            orphaned = self.orphan_after is not None and time.monotonic() - self.last_seen > self.orphan_after
        if orphaned:
            self.orphaned = True
            log.info("job %s: nobody has looked for %.0f s, cancelling", self.label, self.orphan_after)
            self.cancel_event.set()

    def publish(self, partial: Any) -> None:
        """Hand on a picture of the unfinished result; safe to call from any thread."""
        with self._lock:
            self.partial = partial
            self.partials += 1

    def touch(self) -> None:
        """Someone is still waiting for this job (a page polls it); see ``orphan_after``."""
        with self._lock:
            self.last_seen = time.monotonic()

    def _run(self, gate: threading.Semaphore) -> None:
        with gate:
            if self.cancel_event.is_set():
                self._finish(State.CANCELLED)
                return
            with self._lock:
                self.state = State.RUNNING
                self.started = time.monotonic()
            _CURRENT.job = self
            try:
                result = self.fn(self.progress, self.cancel_event)
            except Cancelled as exc:
                self.note = str(exc) if getattr(exc, "kept", None) is not None else None
                self._finish(State.CANCELLED)
            except Exception as exc:  # a failed job is reported, never raised into the UI thread
                log.info("job %s failed: %s", self.label, exc)
                self.error = exc
                self.error_traceback = traceback.format_exc()
                self._finish(State.ERROR)
            else:
                if self.cancel_event.is_set() and result is None:
                    self._finish(State.CANCELLED)
                else:
                    self.result = result
                    self._finish(State.DONE)
            finally:
                _CURRENT.job = None

    def _finish(self, state: State) -> None:
        with self._lock:
            self.state = state
            self.finished_at = time.monotonic()
        self._finished.set()

    # -- called from pages --------------------------------------------------------
    def cancel(self) -> None:
        """Ask the job to stop at its next chunk boundary."""
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds; ``True`` when the job has finished."""
        return self._finished.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def snapshot(self) -> Snapshot:
        with self._lock:
            now = self.finished_at or time.monotonic()
            elapsed = 0.0 if self.started is None else now - self.started
            eta = None
            if self.state is State.RUNNING and self.total > 0 and self.done > 0:
                eta = elapsed * (self.total - self.done) / self.done
            error = None if self.error is None else f"{type(self.error).__name__}: {self.error}"
            return Snapshot(self.key, self.label, self.state, self.done, self.total, elapsed, eta, error, self.note)


class JobRegistry:
    """Process-wide map ``key -> Job``; identical requests share one job.

    ``submit`` returns the existing job for ``key`` while it is queued, running or done;
    a job that failed or was cancelled is replaced by a fresh one on the next submit.
    Finished jobs are kept (most recent ``keep`` of them) so a revisit is instant.
    """

    def __init__(self, max_running: int = 2, keep: int = 64):
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1; got {max_running!r}.")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(max_running)
        self.keep = keep

    def submit(self, key: str, fn: JobFn, label: str = "", orphan_after: float | None = None) -> Job:
        """The job computing ``key``: the existing one if it is live or done, else a new one.

        ``orphan_after``: seconds without a ``touch`` after which the job cancels itself at its
        next progress report (a page that moved on stops paying for work nobody will see;
        finished chunks stay cached). ``None``: run to the end regardless.
        """
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string; got {key!r}.")
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state not in (State.ERROR, State.CANCELLED):
                self._jobs.move_to_end(key)
                job.touch()
                return job
            job = Job(key, fn, label, orphan_after)
            self._jobs[key] = job
            self._trim()
        job.thread = threading.Thread(target=job._run, args=(self._gate,), name=f"job:{job.label}", daemon=True)
        _LIVE.add(job)
        job.thread.start()
        return job

    def get(self, key: str) -> Job | None:
        """The job for ``key`` if one was submitted (any state), else ``None``."""
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: str) -> None:
        """Drop a finished job (its next submit starts afresh); a live job is cancelled first."""
        with self._lock:
            job = self._jobs.pop(key, None)
        if job is not None and not job.finished:
            job.cancel()

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.finished]
        while len(self._jobs) > self.keep and finished:
            self._jobs.pop(finished.pop(0))


_LIVE: weakref.WeakSet[Job] = weakref.WeakSet()  # every job whose thread was started
_CURRENT = threading.local()  # the job a worker thread is running


def publish(partial: Any) -> None:
    """From inside a job's ``fn``: hand on a picture of its unfinished result (``Job.partial``).
    Outside a job (a script, a test calling ``fn`` itself) nothing happens."""
    job = getattr(_CURRENT, "job", None)
    if job is not None:
        job.publish(partial)


def shutdown(wait_s: float = SHUTDOWN_WAIT_S) -> int:
    """Cancel every live job and join its thread (up to ``wait_s`` seconds in all).

    Runs by itself when the process ends; returns how many threads were still running after
    the wait (0 when every job stopped at its next chunk).
    """
    live = [job for job in list(_LIVE) if job.thread is not None and job.thread.is_alive()]
    for job in live:
        job.cancel_event.set()
    deadline = time.monotonic() + wait_s
    for job in live:
        job.thread.join(max(0.0, deadline - time.monotonic()))
    left = sum(job.thread.is_alive() for job in live)
    if left:
        log.warning("%d job(s) still running at exit after %.0f s", left, wait_s)
    return left


def _at_exit() -> None:
    shutdown()


# threading's own exit hooks run before the interpreter waits for threads and shuts down,
# while worker threads can still finish their chunk (atexit hooks run later)
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_at_exit)
else:  # pragma: no cover - Pythons without the hook
    import atexit

    atexit.register(_at_exit)

_REGISTRY: JobRegistry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> JobRegistry:
    """The process-wide registry shared by every dashboard session."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = JobRegistry()
        return _REGISTRY


def job_key(kind: str, settings: dict) -> str:
    """Stable key ``"<kind>:<sha256 of settings>"`` for a computation (settings JSON-ready)."""
    payload = json.dumps(settings, sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(payload.encode()).hexdigest()[:32]}"
