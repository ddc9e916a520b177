"""Background jobs: progress, ETA, cancel, errors, sharing by key.

Workers are held by events the test sets, never by a time: ``HOLD`` only bounds a wait so a
failing test cannot hang the run (it is far longer than any step takes on a loaded machine).
"""

import threading

import pytest
import torch

from landscape_core import Cancelled, jobs
from landscape_core.jobs import JobRegistry, State

HOLD = 600.0  # seconds: a hang guard for events, never a schedule


def test_result_progress_and_eta():
    reg = JobRegistry()
    release = threading.Event()

    def fn(progress, cancel):
        progress(1, 4)
        release.wait(HOLD)
        progress(4, 4)
        return "value"

    job = reg.submit("k", fn, "test")
    while job.snapshot().done < 1:
        pass
    snap = job.snapshot()
    assert snap.state is State.RUNNING and (snap.done, snap.total) == (1, 4) and snap.fraction == 0.25
    assert snap.eta_s is not None and snap.eta_s == pytest.approx(3 * snap.elapsed_s, rel=0.5, abs=0.05)
    release.set()
    assert job.wait(HOLD)
    assert job.state is State.DONE and job.result == "value" and job.snapshot().fraction == 1.0


def test_same_key_shares_one_computation():
    reg = JobRegistry()
    calls = []
    gate = threading.Event()

    def fn(progress, cancel):
        calls.append(1)
        gate.wait(HOLD)
        return len(calls)

    first = reg.submit("same", fn)
    second = reg.submit("same", fn)
    assert first is second
    gate.set()
    assert first.wait(HOLD)
    assert reg.submit("same", fn).result == 1 and calls == [1]


def test_cancel_between_chunks_with_the_evaluator():
    from landscape_core.evaluate import evaluate_points
    from landscape_core.problem import Problem

    torch.manual_seed(0)
    X, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    problem = Problem(torch.nn.Linear(4, 3), torch.nn.functional.cross_entropy, (X, y))
    basis = torch.randn(1, problem.space.size)
    started = threading.Event()

    def fn(progress, cancel):
        def report(done, total):
            progress(done, total)
            if done > 0:
                started.set()
                cancel.wait(HOLD)  # hold the chunk boundary until the test cancels

        return evaluate_points(
            problem, problem.theta0, basis, torch.zeros(50, 1), progress=report, cancel=cancel, chunk_size=5
        )

    reg = JobRegistry()
    job = reg.submit("cancel-me", fn)
    assert started.wait(HOLD)
    job.cancel()
    assert job.wait(HOLD)
    assert job.state is State.CANCELLED and job.result is None
    assert 0 < job.snapshot().done < 50
    # a cancelled job is replaced by a fresh run on the next submit
    again = reg.submit("cancel-me", lambda p, c: 7)
    assert again is not job and again.wait(HOLD) and again.result == 7


def test_error_is_captured_not_raised():
    reg = JobRegistry()
    job = reg.submit("bad", lambda p, c: (_ for _ in ()).throw(ValueError("span must be positive")))
    assert job.wait(HOLD)
    assert job.state is State.ERROR
    assert job.snapshot().error == "ValueError: span must be positive"
    assert "ValueError" in job.error_traceback
    assert isinstance(Cancelled("x"), RuntimeError)


def test_queue_limits_concurrency():
    reg = JobRegistry(max_running=1)
    gate = threading.Event()
    first = reg.submit("one", lambda p, c: gate.wait(HOLD))
    second = reg.submit("two", lambda p, c: 2)
    while first.state is not State.RUNNING:
        pass
    assert second.state is State.QUEUED
    second.cancel()
    gate.set()
    assert second.wait(HOLD) and second.state is State.CANCELLED
    assert first.wait(HOLD) and first.state is State.DONE


def test_keys_and_bad_input():
    assert jobs.job_key("surface", {"b": 1, "a": [1, 2]}) == jobs.job_key("surface", {"a": [1, 2], "b": 1})
    assert jobs.job_key("surface", {"a": 1}) != jobs.job_key("surface", {"a": 2})
    with pytest.raises(ValueError, match="key must be a non-empty string"):
        JobRegistry().submit("", lambda p, c: 1)
    with pytest.raises(ValueError, match="max_running"):
        JobRegistry(max_running=0)
    assert jobs.registry() is jobs.registry()


def test_orphaned_job_cancels_itself_and_a_watched_one_does_not():
    """The watched job is touched just before each of its progress reports, as a page polling it
    would; the unwatched one waits longer than ``orphan_after`` between reports. The outcome does not
    depend on how fast the threads run: only on the order touch -> report."""
    reg = JobRegistry()
    both_submitted = threading.Event()
    handles = {}

    def orphan_fn(progress, cancel):
        for i in range(1000):
            if cancel.wait(0.5):  # longer than orphan_after without anybody looking
                raise Cancelled("stopped")
            progress(i, 1000)
        return "done"

    def watched_fn(progress, cancel):
        both_submitted.wait(HOLD)
        i = 0
        while not handles["orphan"].finished:
            handles["watched"].touch()  # a page looked at it a moment ago
            progress(i, 1000)
            i += 1
            handles["orphan"].wait(0.01)
        return "watched until the other one stopped"

    handles["orphan"] = reg.submit("orphan", orphan_fn, orphan_after=0.3)
    handles["watched"] = reg.submit("watched", watched_fn, orphan_after=0.3)
    both_submitted.set()
    assert handles["orphan"].wait(HOLD) and handles["watched"].wait(HOLD)
    assert handles["orphan"].state is State.CANCELLED and handles["orphan"].orphaned
    assert handles["watched"].state is State.DONE, handles["watched"].error
    assert not handles["watched"].orphaned
    # without orphan_after a job runs on unwatched
    assert reg.submit("free", lambda p, c: (p(1, 1), "ok")[1]).wait(HOLD)


def test_a_job_publishes_pictures_of_its_unfinished_result():
    reg = JobRegistry()
    published, go_on = threading.Event(), threading.Event()

    def fn(progress, cancel):
        jobs.publish("coarse")
        jobs.publish("finer")
        published.set()
        assert go_on.wait(HOLD)
        return "exact"

    job = reg.submit("partial", fn, "filling in")
    assert published.wait(HOLD)
    assert job.partials == 2 and job.partial == "finer" and not job.finished
    go_on.set()
    assert job.wait(HOLD) and job.result == "exact"
    jobs.publish("outside a job")  # nothing happens, nothing raises
    assert job.partial == "finer"
