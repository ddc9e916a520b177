"""The executor seam without Ray: in-process default, a remote executor's contract, refusals."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_core import Cancelled, Problem, clusters, executors
from landscape_core.evaluate import evaluate_chunks, evaluate_points
from landscape_core.executors import Executor
from landscape_core.hessian import top_eigenvalues
from landscape_core.hvp import LossFunction
from landscape_core.surface import line, plane

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(batch_size=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    X, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    return Problem(model, F.cross_entropy, (X[:30], y[:30]), (X[30:], y[30:]), batch_size=batch_size)


class Reversed(Executor):
    """A stand-in remote executor: runs chunks in this process, last first, in other pieces."""

    name = "reversed"
    remote = True

    def __init__(self):
        self.calls = 0

    def points_per_piece(self, k, chunk):
        return 3

    def rows_per_chunk(self, steps, steps_y):
        return 1

    def run_chunks(self, problem, center, basis, chunks, splits, *, buffers=None, memory_budget=None, progress=None,
                   cancel=None, on_chunk=None):  # fmt: skip
        self.calls += 1
        results = [None] * len(chunks)
        with executors.using(None):
            for i in reversed(range(len(chunks))):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                results[i] = evaluate_points(problem, center, basis, chunks[i], splits, None, None, buffers)
                if on_chunk is not None:
                    on_chunk(i, results[i])
        return results

    def loss_function(self, problem, split="train", dtype=None, method="auto"):
        return LossFunction(problem, split=split, dtype=dtype, method=method)


def test_default_is_in_process_and_using_restores():
    assert executors.current().name == "in-process"
    fake = Reversed()
    with executors.using(fake) as chosen:
        assert chosen is fake and executors.current() is fake
    assert executors.current().name == "in-process"


def test_using_is_per_thread_context():
    fake = Reversed()
    seen = []
    with executors.using(fake):
        t = threading.Thread(target=lambda: seen.append(executors.current().name))
        t.start()
        t.join()
    assert seen == ["in-process"]  # a job's thread enters the executor itself


def test_evaluate_chunks_in_process_calls_on_chunk_in_order():
    problem = _problem()
    d = torch.randn(problem.space.size)
    chunks = [np.array([[0.0], [0.5]]), np.array([[1.0]]), np.array([[-0.25], [0.25], [0.75]])]
    seen, progress = [], []
    parts = evaluate_chunks(problem, problem.theta0, d[None], chunks, None, lambda a, b: progress.append((a, b)),
                            None, lambda i, v: seen.append(i))  # fmt: skip
    assert seen == [0, 1, 2]
    assert progress[-1] == (6, 6)
    whole = evaluate_points(problem, problem.theta0, d[None], np.concatenate(chunks))
    for q in whole:
        np.testing.assert_array_equal(np.concatenate([p[q] for p in parts]), whole[q])


def test_remote_executor_gets_whole_requests_and_plane_equals(fresh_cache):
    problem = _problem()
    torch.manual_seed(1)
    d1, d2 = torch.randn(problem.space.size), torch.randn(problem.space.size)
    local = plane(problem, d1, d2, steps=5, steps_y=4, use_cache=False, rows_per_chunk=1)
    fake = Reversed()
    with executors.using(fake):
        remote = plane(problem, d1, d2, steps=5, steps_y=4, use_cache=False)
        assert fake.calls == 1  # one request for all rows: the executor decides what runs side by side
        path = line(problem, d1, steps=7, use_cache=False)
    for q in local.values:
        np.testing.assert_array_equal(remote.values[q], local.values[q])
    np.testing.assert_array_equal(path.values["train_loss"], line(problem, d1, steps=7, use_cache=False).values["train_loss"])  # fmt: skip


def test_a_plane_cancelled_on_a_remote_executor_resumes_and_equals_the_local_one(fresh_cache):
    # the cache's tiles are the unit of resumption (tests/test_tiles.py); here: through a remote
    # executor that answers out of order, a cancelled plane keeps what it stored and the rerun
    # equals the in-process plane bit for bit (pieces are whole evaluator chunks)
    problem = _problem()
    torch.manual_seed(2)
    d1, d2 = torch.randn(problem.space.size), torch.randn(problem.space.size)
    fake = Reversed()
    cancel = threading.Event()
    original = fake.run_chunks

    def cancel_after_first_call(*args, **kwargs):
        out = original(*args, **kwargs)
        cancel.set()
        return out

    fake.run_chunks = cancel_after_first_call
    with executors.using(fake), pytest.raises(Cancelled):
        plane(problem, d1, d2, steps=41, steps_y=41, cancel=cancel)
    assert fake.calls >= 1
    cancel.clear()
    fake.run_chunks = original
    with executors.using(fake):
        resumed = plane(problem, d1, d2, steps=41, steps_y=41)
    expected = plane(problem, d1, d2, steps=41, steps_y=41, use_cache=False)
    for q in expected.values:
        np.testing.assert_array_equal(resumed.values[q], expected.values[q])


def test_hvp_goes_through_the_executor(fresh_cache):
    problem = _problem(batch_size=10)
    asked = []

    class Counting(Reversed):
        def loss_function(self, problem, split="train", dtype=None, method="auto"):
            asked.append(split)
            return super().loss_function(problem, split, dtype, method)

    with executors.using(Counting()):
        spectrum = top_eigenvalues(problem, k=2, use_cache=False)
    assert asked == ["train"]
    np.testing.assert_allclose(spectrum.values, top_eigenvalues(problem, k=2, use_cache=False).values, rtol=1e-6)


def test_refusals(monkeypatch):
    assert clusters.for_address(None).name == "in-process"
    with pytest.raises(ValueError, match="Executor"):
        executors.set_default("ray")
    with pytest.raises(ValueError, match="Executor"), executors.using(42):
        pass
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="RAY_ADDRESS"):
        clusters.for_address("auto")
    monkeypatch.setattr(clusters, "ray_available", lambda: False)
    with pytest.raises(ValueError, match=r"not installed.*\[ray\]"):
        clusters.for_address("local")


def test_cli_ray_flag_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    from landscape_core import cli

    spec = tmp_path / "spec.py"
    spec.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom landscape_core import Problem\n\n"
        "def build():\n    torch.manual_seed(0)\n    X = torch.randn(12, 2)\n"
        "    return Problem(torch.nn.Linear(2, 1), F.mse_loss, (X, X.sum(1, keepdim=True)))\n"
    )
    monkeypatch.setattr(clusters, "ray_available", lambda: False)
    assert cli.main(["surface", "--spec", str(spec), "--steps", "3", "--quiet", "--ray", "local"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("landscape: error: Ray address 'local' given but Ray is not installed") and err.count("\n") == 1
    )
    assert cli.main(["surface", "--spec", str(spec), "--steps", "3", "--quiet", "--ray-workers", "2"]) == 1
    assert "need --ray ADDRESS" in capsys.readouterr().err
