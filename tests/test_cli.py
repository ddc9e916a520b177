"""The ``landscape`` CLI: results equal the library's, shared cache, JSON, exit codes, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from landscape_core import cli, directions, surface
from landscape_core.results import Surface
from landscape_core.spec import load_spec

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem
from landscape_core.workspace import Checkpoint, Workspace


def build():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.1 * torch.randn(40, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    problem = Problem(model, F.mse_loss, train=(X, y), val=(X[:10], y[:10]))
    t = problem.theta0
    wiggle = torch.sin(torch.arange(t.numel(), dtype=t.dtype))
    ckpts = [Checkpoint(f"epoch_{i}", t * (i / 4) + 0.1 * (i % 2) * wiggle, step=i) for i in (1, 2, 3, 4)]
    return Workspace("linear regression", problem, checkpoints=ckpts)


def explode():
    raise OSError("weights.pt not found next to the spec")
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "linreg_spec.py"
    path.write_text(SPEC)
    return str(path)


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_surface_matches_library_and_is_cached(spec, tmp_path, capsys, fresh_cache):
    out = tmp_path / "plane.npz"
    code, stdout, stderr = run(capsys, "surface", "--spec", spec, "--steps", 7, "--out", out, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["command"] == "surface" and report["cached"] is False
    assert "[####" in stderr and "49/49" in stderr  # progress bar on stderr
    saved = Surface.load(out)
    problem = load_spec(spec).problem
    d = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    direct = surface.plane(problem, d[0], d[1], span=(-1, 1), steps=7, use_cache=False)
    for q in direct.values:
        np.testing.assert_array_equal(saved.values[q], direct.values[q])
    assert report["summary"]["train_loss"]["center"] == pytest.approx(problem.base["train_loss"])
    code, stdout, _ = run(capsys, "surface", "--spec", spec, "--steps", 7, "--json", "--quiet")
    assert code == 0 and json.loads(stdout)["cached"] is True  # second run: from the shared cache


def test_surface_lines_and_human_output(spec, capsys, fresh_cache):
    code, stdout, _ = run(capsys, "surface", "--spec", spec, "--dims", 1, "--lines", 2, "--steps", 5, "--quiet")
    assert code == 0
    assert stdout.startswith("surface of linear regression: Surface in")
    assert "lines: 2" in stdout


def test_hessian_eigenvalues_equal_the_closed_form(spec, capsys, fresh_cache):
    """For mean squared error of a linear model, H = 2/n [X 1]^T [X 1] exactly."""
    argv = ["hessian", "--spec", spec, "--k", 2, "--which", "largest", "--tol", 1e-8]
    code, stdout, stderr = run(capsys, *argv, "--json", "--quiet")
    assert code == 0, stderr
    problem = load_spec(spec).problem
    X = problem.splits["train"].X
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1).numpy()
    exact = np.sort(np.linalg.eigvalsh(2 / len(A) * A.T @ A))[::-1][:2]
    got = json.loads(stdout)["summary"]["eigenvalues"]
    np.testing.assert_allclose(got, exact, rtol=1e-6)


def test_interpolate_midpoint_is_exact(spec, tmp_path, capsys, fresh_cache):
    pytest.importorskip("landscape_core.interpolation")
    from landscape_core.interpolation import Path as PathResult

    out = tmp_path / "path.npz"
    code, stdout, stderr = run(
        capsys, "interpolate", "--spec", spec, "--from", "epoch_2", "--to", "A:epoch_4", "--steps", 5, "--out", out
    )
    assert code == 0, stderr
    path = PathResult.load(out)
    ws = load_spec(spec)
    mid = 0.5 * (ws.checkpoint("epoch_2").theta + ws.checkpoint("epoch_4").theta)
    i = int(np.flatnonzero(np.isclose(path.alphas, 0.5))[0])
    assert path.values["train_loss"][i] == pytest.approx(ws.problem.evaluate(mid)["train_loss"][0], rel=1e-12)


def test_trajectory_pca_matches_svd(spec, capsys, fresh_cache):
    pytest.importorskip("landscape_core.trajectory")
    code, stdout, stderr = run(capsys, "trajectory", "--spec", spec, "--json", "--quiet")
    assert code == 0, stderr
    summary = json.loads(stdout)["summary"]
    assert summary["checkpoints"] == 4
    thetas = torch.stack([c.theta for c in load_spec(spec).checkpoints]).numpy()
    # default: Li et al. 2018, centred PCA of theta_i - theta_final without the bias (the last entry)
    D = (thetas - thetas[-1])[:, :3]
    s = np.linalg.svd(D - D.mean(axis=0), compute_uv=False) ** 2
    np.testing.assert_allclose(summary["explained_variance_ratio"], (s / s.sum())[:2], rtol=1e-6)
    assert summary["pca"].startswith("Li et al. 2018") and summary["ignored"] == ["bias", "norm"]
    code, stdout, stderr = run(capsys, "trajectory", "--spec", spec, "--pca", "uncentred", "--json", "--quiet")
    assert code == 0, stderr
    summary = json.loads(stdout)["summary"]
    s = np.linalg.svd(thetas - thetas[-1], compute_uv=False) ** 2  # the uncentred one, every parameter
    np.testing.assert_allclose(summary["explained_variance_ratio"], (s / s.sum())[:2], rtol=1e-6)
    assert summary["pca"].startswith("uncentred")


def test_average_sharpness_matches_half_sigma_squared_trace(spec, tmp_path, capsys):
    """Linear regression is quadratic: E[L(theta + sigma z) - L(theta)] = 0.5 sigma^2 tr(H)."""
    pytest.importorskip("landscape_core.sharpness")
    from landscape_core.sharpness import Sharpness

    out = tmp_path / "sharp.npz"
    argv = ["sharpness", "--spec", spec, "--kind", "average", "--radius", 0.05, "--samples", 400, "--out", out]
    code, _, stderr = run(capsys, *argv, "--quiet")
    assert code == 0, stderr
    result = Sharpness.load(out)
    X = load_spec(spec).problem.splits["train"].X
    A = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1).numpy()
    expected = 0.5 * 0.05**2 * np.trace(2 / len(A) * A.T @ A)
    assert result.value == pytest.approx(float(np.mean(result.samples)))
    assert abs(result.value - expected) < 4 * result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["surface", "--spec", "missing_spec.py"], "spec file 'missing_spec.py' does not exist"),
        (["surface", "--spec", "{spec}:explode"], "raised OSError: weights.pt not found next to the spec"),
        (["surface", "--spec", "{spec}:nothing"], "has no function 'nothing'"),
        (["surface", "--spec", "{spec}", "--demo", "digits-mlp"], "give exactly one of --spec"),
        (["surface"], "give exactly one of --spec"),
        (["surface", "--spec", "{spec}", "--steps", "500"], "over the steps limit of 401"),
        (["surface", "--spec", "{spec}", "--out", "result.txt"], "--out must name a .npz or .csv file"),
        (["surface", "--spec", "{spec}", "--splits", "test"], "unknown split(s) ['test']"),
        (["surface", "--spec", "{spec}", "--memory-budget", "0.001"], "over the memory budget of"),
        (["interpolate", "--spec", "{spec}", "--from", "epoch_9"], "no checkpoint 'epoch_9'; available: epoch_1"),
    ],
)
def test_user_errors_are_one_line(spec, capsys, fresh_cache, argv, message):
    code, stdout, stderr = run(capsys, *[a.replace("{spec}", spec) for a in argv], "--quiet")
    assert code == 1
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("landscape: error: "), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr


def test_sharpness_says_lower_bound_and_takes_starts_and_the_asam_convention(spec, capsys):
    pytest.importorskip("landscape_core.sharpness")
    argv = ["sharpness", "--spec", spec, "--kind", "epsilon", "--starts", 3, "--json", "--quiet", "--no-cache"]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    summary = json.loads(stdout)["summary"]
    assert summary["starts"] == 3 and summary["estimate"].startswith("lower bound: the best of 3")
    argv = ["sharpness", "--spec", spec, "--kind", "adaptive", "--convention", "asam", "--json", "--quiet"]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["convention"] == "asam"
    code, stdout, _ = run(capsys, "interpolate", "--spec", spec, "--steps", 5, "--json", "--quiet")
    definitions = json.loads(stdout)["summary"]["barrier_definitions"]
    assert definitions["loss"].startswith("Entezari et al. 2022") and definitions["error"].startswith("Frankle")


@pytest.mark.parametrize("radius", ["1e30", "inf", "-1", "1001"])
def test_an_absurd_sharpness_radius_is_a_usage_error(spec, capsys, radius):
    with pytest.raises(SystemExit) as info:
        cli.main(["sharpness", "--spec", spec, "--kind", "average", "--radius", radius, "--quiet"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --radius: must be a positive number" in err and "internal error" not in err


def test_spec_traceback_on_request(spec, capsys):
    code, _, stderr = run(capsys, "surface", "--spec", f"{spec}:explode", "--traceback")
    assert code == 1
    assert "Traceback" in stderr and 'raise OSError("weights.pt not found' in stderr


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["surface", "--steps", "many"])
    assert info.value.code == 2
    assert "invalid _positive_int value" in capsys.readouterr().err


def test_missing_engine_is_one_line(spec, capsys, monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name):
        if name == "landscape_core.sharpness":
            raise ImportError("No module named 'landscape_core.sharpness'")
        return real(name)

    monkeypatch.setattr(importlib, "import_module", fake)
    code, _, stderr = run(capsys, "sharpness", "--spec", spec, "--quiet")
    assert code == 1
    assert stderr.strip() == (
        "landscape: error: 'sharpness' needs landscape_core.sharpness, which is not available in this install "
        "(No module named 'landscape_core.sharpness')."
    )


def test_progress_bar_quarters_when_not_a_tty():
    import io

    stream = io.StringIO()
    bar = cli.ProgressBar("plane", stream=stream)
    for done in range(0, 101):
        bar(done, 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # 0%, 25%, 50%, 75%, 100%
    assert lines[-1].startswith("plane [" + "#" * 30 + "] 100/100 100%")
    assert bar.cached is False
    assert cli.ProgressBar("idle").cached is None  # an engine without progress: unknown


def test_console_module_exit_status(tmp_path):
    """A real process: non-zero status and one line on stderr, nothing on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "landscape_core.cli", "surface", "--spec", str(tmp_path / "none.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("landscape: error: spec file")
    assert "Traceback" not in proc.stderr


def test_demo_precomputes_what_the_dashboard_opens_first(spec, capsys, fresh_cache, monkeypatch):
    """`landscape demo` then `landscape surface --demo` is served from the cache (a fake demos module)."""
    import types

    ws = load_spec(spec)
    ws.compare = ws.problem.at(ws.problem.theta0 * 0.9)
    fake = types.SimpleNamespace(list_demos=lambda: ["tiny"], load=lambda name, progress=None: ws)
    monkeypatch.setitem(sys.modules, "landscape_core.demos", fake)
    code, stdout, stderr = run(capsys, "demo", "--list")
    assert code == 0 and stdout.strip() == "tiny"
    code, stdout, stderr = run(capsys, "demo", "--json", "--quiet")
    assert code == 0, stderr
    prepared = json.loads(stdout)["prepared"][0]
    assert prepared["demo"] == "tiny"
    code, stdout, _ = run(capsys, "surface", "--demo", "tiny", "--json", "--quiet")
    assert json.loads(stdout)["cached"] is True
    code, stdout, _ = run(capsys, "surface", "--demo", "tiny", "--model", "B", "--steps", 21, "--json", "--quiet")
    assert json.loads(stdout)["cached"] is True  # the Compare page's plane of B too
    assert "eigenvalues: 2k = 6 eigenvalues asked for" in prepared["pages_s"]["sharpness"]  # as the page says
    for argv in (["interpolate"], ["hessian", "--what", "trace"], ["sharpness", "--kind", "average"]):
        code, stdout, _ = run(capsys, *argv, "--demo", "tiny", "--json", "--quiet")
        assert json.loads(stdout)["cached"] is True, argv  # the other pages' first screens
    code, _, stderr = run(capsys, "demo", "nope", "--quiet")
    assert code == 1 and "unknown demo(s) ['nope']; available: tiny" in stderr
