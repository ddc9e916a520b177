"""The Ray executor on a local 2-CPU Ray instance: equal values, killed actors, cancel, resume, HVP shards.

One Ray instance and one pool of two actors serve the whole module (starting Ray takes tens of
seconds on a busy machine). Skipped with a reason when Ray is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install -e '.[ray]')")

from landscape_core import Cancelled, Problem, cli, clusters, executors  # noqa: E402
from landscape_core.evaluate import DEFAULT_MEMORY_BUDGET, evaluate_points  # noqa: E402
from landscape_core.hessian import top_eigenvalues  # noqa: E402
from landscape_core.hvp import HessianOperator  # noqa: E402
from landscape_core.interpolation import linear  # noqa: E402
from landscape_core.ray_executor import RayExecutor  # noqa: E402
from landscape_core.ray_shards import ShardedLoss  # noqa: E402
from landscape_core.results import Surface  # noqa: E402
from landscape_core.spec import load_spec  # noqa: E402
from landscape_core.surface import line, plane  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class Rooted(nn.Module):
    """A root-level parameter in front of a BatchNorm MLP (eval mode: running statistics)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))  # 0-dim, at the root
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.scale * self.body(x)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test file


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def mlp_problem(batch_size=None, dtype=torch.float32):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    X, y = _data()
    return Problem(
        model, F.cross_entropy, (X[:30].to(dtype), y[:30]), (X[30:].to(dtype), y[30:]), batch_size=batch_size
    )


def rooted_problem(batch_size=None):
    torch.manual_seed(1)
    model = Rooted()
    X, y = _data(seed=1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(X * 2 + 1)  # running statistics away from 0/1
    y = y.clone()
    y[::7] = -100  # ignored labels
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5]))
    return Problem(model, loss, (X[:30], y[:30]), (X[30:], y[30:]), batch_size=batch_size)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance (2 CPUs, no dashboard) and a pool of two one-CPU actors."""
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    executor = clusters.for_address("local")  # two one-CPU actors; the pool --ray local and the dashboard reuse
    yield executor
    executor.shutdown()
    ray.shutdown()


def _directions(problem, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(problem.space.size, generator=g).to(problem.dtype) for _ in range(2))


@pytest.mark.parametrize("build", [mlp_problem, rooted_problem], ids=["mlp", "rooted-bn-weighted-ignore"])
def test_plane_equals_in_process(cluster, build):
    problem = build(batch_size=7)
    d1, d2 = _directions(problem, 3)
    local = plane(problem, d1, d2, steps=7, steps_y=5, use_cache=False, rows_per_chunk=2)
    before = cluster.stats.chunks
    with executors.using(cluster):
        same_chunks = plane(problem, d1, d2, steps=7, steps_y=5, use_cache=False, rows_per_chunk=2)
        own_chunks = plane(problem, d1, d2, steps=7, steps_y=5, use_cache=False)
    assert cluster.stats.chunks - before >= 2 * 2  # both planes ran on the cluster, each in several chunks
    key, _ = cluster._source(problem)
    builds = ray.get([a.built.remote(key) for a in cluster.actors()])
    assert max(builds) == 1 and all(b in (0, 1) for b in builds)  # built at most once per actor, not per chunk
    for q in local.values:
        np.testing.assert_array_equal(same_chunks.values[q], local.values[q])  # same arithmetic: same bits
        np.testing.assert_allclose(own_chunks.values[q], local.values[q], rtol=1e-6, atol=1e-7)
    assert np.isfinite(local.values["train_loss"]).all()


def test_line_and_path_equal_in_process(cluster):
    problem = mlp_problem()
    d1, _ = _directions(problem, 4)
    theta_b = problem.theta0 + 0.3 * d1
    local_line = line(problem, d1, steps=11, use_cache=False)
    local_path = linear(problem, problem.theta0, theta_b, steps=9, bn="keep", use_cache=False)
    before = cluster.stats.chunks
    with executors.using(cluster):
        remote_line = line(problem, d1, steps=11, use_cache=False)
        remote_path = linear(problem, problem.theta0, theta_b, steps=9, bn="keep", use_cache=False)
    assert cluster.stats.chunks - before >= 4  # the points went out in pieces
    for q in local_line.values:
        np.testing.assert_allclose(remote_line.values[q], local_line.values[q], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(remote_path.values[q], local_path.values[q], rtol=1e-6, atol=1e-7)
    for name, found in local_path.barrier.items():
        assert remote_path.barrier[name] == pytest.approx(found, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize(
    ("build", "rtol"),
    [(lambda: mlp_problem(batch_size=10), 1e-5), (lambda: mlp_problem(batch_size=7, dtype=torch.float64), 1e-10),
     (lambda: rooted_problem(batch_size=8), 1e-5)],
    ids=["float32", "float64", "rooted-bn-weighted-ignore"],
)  # fmt: skip
def test_top_eigenvalues_from_data_shards(cluster, build, rtol):
    problem = build()
    local_op = HessianOperator(problem)
    v = torch.randn(problem.space.size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    local = top_eigenvalues(problem, k=3, which="both", use_cache=False)
    with executors.using(cluster):
        op = HessianOperator(problem)
        assert isinstance(op.function, ShardedLoss)
        assert len(op.function.shards) == 2 and sorted(sum(op.function.shards, [])) == list(range(
            sum(1 for c in problem.coefficients("train") if c != 0)))  # fmt: skip
        np.testing.assert_allclose(op.matvec(v), local_op.matvec(v), rtol=rtol, atol=rtol * 1e-2)
        remote = top_eigenvalues(problem, k=3, which="both", use_cache=False)
    np.testing.assert_allclose(remote.values, local.values, rtol=rtol, atol=rtol * 1e-2)


def test_killed_actor_has_its_chunk_redone(cluster):
    problem = mlp_problem()
    d1, d2 = _directions(problem, 6)
    local = plane(problem, d1, d2, steps=16, steps_y=5, use_cache=False, rows_per_chunk=1)
    victim = cluster.actors()[1]
    pid = ray.get(victim.pid.remote())
    redone, started = cluster.stats.redone, cluster.stats.actors_started
    killed = []

    def progress(done, total):
        if done > 0 and not killed:
            os.kill(pid, signal.SIGKILL)  # the worker process dies: its chunk in flight is lost
            killed.append(done)

    with executors.using(cluster):
        remote = plane(problem, d1, d2, steps=16, steps_y=5, use_cache=False, rows_per_chunk=1, progress=progress)
    assert killed
    assert cluster.stats.redone > redone  # a chunk sent to the dead worker was done again elsewhere
    assert cluster.stats.actors_started > started and victim not in cluster.actors()
    for q in local.values:
        np.testing.assert_array_equal(remote.values[q], local.values[q])


def test_cancel_reaches_the_actor(cluster):
    problem = mlp_problem()
    d1, _ = _directions(problem, 7)
    actor = cluster.actors()[0]
    key, how = cluster._source(problem)
    vectors = [ray.put((problem.theta0, d1[None]))]
    coeffs = np.linspace(-1, 1, 5)[:, None]
    args = (key, how, vectors, coeffs, ["train"], None, DEFAULT_MEMORY_BUDGET)
    values, _ = ray.get(actor.evaluate.remote("run-a", *args))
    np.testing.assert_array_equal(values["train_loss"], evaluate_points(problem, problem.theta0, d1[None], coeffs, ["train"])["train_loss"])  # fmt: skip
    actor.cancel.remote("run-b")
    with pytest.raises(Cancelled):
        ray.get(actor.evaluate.remote("run-b", *args))  # checked before each evaluator chunk on the worker
    actor.forget.remote("run-b")


def test_cancel_keeps_finished_chunks_and_resume_computes_only_the_rest(cluster, fresh_cache):
    problem = mlp_problem()
    d1, d2 = _directions(problem, 8)
    rows = 12
    cancel = threading.Event()

    def progress(done, total):
        if done > 0:
            cancel.set()

    first = cluster.stats.chunks
    with executors.using(cluster), pytest.raises(Cancelled, match="kept"):
        plane(problem, d1, d2, steps=rows, steps_y=5, rows_per_chunk=1, progress=progress, cancel=cancel)
    kept = cluster.stats.chunks - first
    assert 1 <= kept < rows
    second = cluster.stats.chunks
    with executors.using(cluster):
        resumed = plane(problem, d1, d2, steps=rows, steps_y=5, rows_per_chunk=1)
    assert cluster.stats.chunks - second == rows - kept  # every finished chunk was stored by the driver and reused
    local = plane(problem, d1, d2, steps=rows, steps_y=5, rows_per_chunk=1, use_cache=False)
    for q in local.values:
        np.testing.assert_array_equal(resumed.values[q], local.values[q])
    # a cluster-interrupted plane resumes locally too (same chunk keys)
    cancel.clear()
    with executors.using(cluster), pytest.raises(Cancelled):
        plane(problem, d2, d1, steps=rows, steps_y=5, rows_per_chunk=1, progress=progress, cancel=cancel)
    local_resumed = plane(problem, d2, d1, steps=rows, steps_y=5, rows_per_chunk=1)
    fresh = plane(problem, d2, d1, steps=rows, steps_y=5, rows_per_chunk=1, use_cache=False)
    np.testing.assert_array_equal(local_resumed.values["train_loss"], fresh.values["train_loss"])


def test_errors_on_the_worker_reach_the_driver(cluster):
    problem = mlp_problem()
    d1, _ = _directions(problem, 9)
    with executors.using(cluster), pytest.raises(ValueError, match="split 'test' is not available"):
        evaluate_points(problem, problem.theta0, d1[None], np.zeros((3, 1)), ["test"])
    with pytest.raises(ValueError, match=r"coeffs must have shape \(k, 1\)"):  # raised on the worker
        cluster.run_chunks(problem, problem.theta0, d1[None], [np.zeros((3, 2))], ["train"])
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        RayExecutor("local", workers=0)
    assert "2 workers" in cluster.describe() and cluster.cluster()["cpus"] == 2


SPEC = """
import torch
from torch import nn
from landscape_core import Problem


class Net(nn.Module):  # defined in the spec: workers get it by value or by loading the spec
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2))

    def forward(self, x):
        return self.body(x)


def smooth_ce(out, y):
    return torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1)


def build():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=gen)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    return Problem(Net(), smooth_ce, train=(X, y), val=(X[:8], y[:8]))
"""


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "ray_spec.py"
    path.write_text(SPEC)
    return str(path.resolve())


def test_workers_build_from_a_spec_reference_and_refuse_another_build(cluster, spec_file):
    problem = load_spec(spec_file).problem
    d1, d2 = _directions(problem, 10)
    local = plane(problem, d1, d2, steps=5, steps_y=4, use_cache=False, rows_per_chunk=1)
    cluster.remember(problem, f"spec:{spec_file}")
    with executors.using(cluster):
        remote = plane(problem, d1, d2, steps=5, steps_y=4, use_cache=False, rows_per_chunk=1)
    np.testing.assert_array_equal(remote.values["train_loss"], local.values["train_loss"])
    other = problem.at(problem.theta0 * 1.01)  # not what the spec builds
    cluster.remember(other, f"spec:{spec_file}")
    with executors.using(cluster), pytest.raises(ValueError, match="differs from the driver's"):
        plane(other, d1, d2, steps=5, steps_y=4, use_cache=False)
    with pytest.raises(ValueError, match="reference must look like"):
        cluster.remember(problem, "file.py")


def test_cli_ray_flag_computes_on_the_cluster(cluster, spec_file, tmp_path, capsys):
    here, there = tmp_path / "here.npz", tmp_path / "there.npz"
    common = ["surface", "--spec", spec_file, "--steps", "5", "--json", "--quiet", "--no-cache"]
    assert cli.main([*common, "--out", str(here)]) == 0
    assert "in-process" in capsys.readouterr().out
    before = cluster.stats.chunks
    assert cli.main([*common, "--out", str(there), "--ray", "local"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["executor"].startswith("Ray cluster") and cluster.stats.chunks > before
    assert executors.current().name == "in-process"  # --ray does not outlive the command
    a, b = Surface.load(here), Surface.load(there)
    for q in a.values:
        np.testing.assert_allclose(b.values[q], a.values[q], rtol=1e-6, atol=1e-7)
    assert cli.main(["surface", "--spec", spec_file, "--ray-workers", "2"]) == 1
    assert "need --ray" in capsys.readouterr().err


def _dashboard_script():
    import streamlit as st
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dashboard_ui import frame, ui
    from landscape_core import Problem, executors
    from landscape_core.surface import plane

    frame.device_selector()

    def job(progress, cancel):
        torch.manual_seed(0)
        X, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
        problem = Problem(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), F.cross_entropy, (X, y))
        d1, d2 = torch.randn(2, problem.space.size)
        result = plane(problem, d1, d2, steps=6, steps_y=3, use_cache=False, progress=progress, cancel=cancel)
        return executors.current().name, float(result.values["train_loss"].sum())

    done = ui.run_job(f"ray-dashboard-test:{st.session_state.get('ui_device')}", job, "test plane")
    if done is not None:
        st.markdown(f"ran {done[0]}: {done[1]:.6f}")


def test_dashboard_device_offers_the_cluster_and_jobs_run_there(cluster, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    at = AppTest.from_function(_dashboard_script, default_timeout=600)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="ui_device").options == ["CPU"] or "cuda" in str(at.selectbox(key="ui_device").options)
    local = next(m.value for m in at.markdown if m.value.startswith("ran "))
    assert local.startswith("ran in-process")
    at.text_input(key="ui_ray_address").input("local")
    at.run()
    device = at.selectbox(key="ui_device")
    assert "Ray cluster: 1 node(s), 0 GPU(s), 2 CPUs" in device.options
    before = cluster.stats.chunks
    device.select("ray")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    remote = next(m.value for m in at.markdown if m.value.startswith("ran "))
    assert remote.startswith("ran ray") and cluster.stats.chunks > before
    assert float(remote.split(": ")[1]) == pytest.approx(float(local.split(": ")[1]), rel=1e-6)


def test_cancel_is_heard_while_another_job_holds_the_pool(cluster):
    problem = mlp_problem()
    d1, _ = _directions(problem, 11)
    cancel = threading.Event()
    cancel.set()
    caught = []
    with cluster._lock:  # another job is using the pool

        def request():
            try:
                cluster.run_chunks(problem, problem.theta0, d1[None], [np.zeros((2, 1))], ["train"], cancel=cancel)
            except Cancelled as exc:
                caught.append(str(exc))

        worker = threading.Thread(target=request)
        worker.start()
        worker.join(timeout=120)
    assert caught and "cluster was busy" in caught[0]
