"""The two real-model examples through the ``landscape`` CLI, at a size that fits a test.

``examples/minilm_sentiment_spec.py`` (all-MiniLM-L6-v2, packaged offline; runs when the extra
"text" is installed) on 16 training sentences, and ``examples/resnet_spec.py`` (ResNet-20 with
and without shortcuts, BatchNorm, checkpoints per epoch) on 16 generated images, 3 epochs.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_core import cli, minilm
from landscape_core.interpolation import Path as PathResult
from landscape_core.results import Surface
from landscape_core.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
MINILM_SPEC = f"{ROOT / 'examples' / 'minilm_sentiment_spec.py'}:build"
RESNET_SPEC = f"{ROOT / 'examples' / 'resnet_spec.py'}:build"

pytestmark = pytest.mark.slow


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- MiniLM ------------------------------------------------------------------------------------------
needs_minilm = pytest.mark.skipif(not minilm.minilm_available()[0], reason=minilm.minilm_available()[1])


@pytest.fixture
def small_minilm(monkeypatch, fresh_cache):
    monkeypatch.setenv("LANDSCAPE_MINILM_TRAIN", "16")  # 16 training, 8 validation sentences
    return load_spec(MINILM_SPEC)  # trained once per process (minilm_workspace is cached)


def head_eigenvalue(problem) -> float:
    """Exact top eigenvalue of the head's block of the train-loss Hessian (a logistic regression on fixed
    features), float64."""
    captured = {}
    handle = problem.model.head.register_forward_hook(lambda m, i, o: captured.setdefault("f", i[0]))
    with torch.no_grad():
        problem.model(**problem.splits["train"].X)
        handle.remove()
        f = captured["f"].double()
        feats = torch.cat([f, torch.ones(len(f), 1, dtype=torch.float64)], 1)
        W = torch.cat([problem.model.head.weight.double(), problem.model.head.bias.double()[:, None]], 1)
        p = torch.softmax(feats @ W.T, dim=1)
        H = sum(torch.kron(torch.diag(q) - torch.outer(q, q), torch.outer(x, x)) for q, x in zip(p, feats)) / len(f)
        return float(torch.linalg.eigvalsh(H)[-1])


@needs_minilm
def test_minilm_spec_surface_interpolation_and_hessian_from_the_cli(small_minilm, tmp_path, capsys):
    ws = small_minilm
    assert ws.problem.splits["train"].n == 16 and ws.problem.splits["val"].n == 8
    out = tmp_path / "plane.npz"
    code, stdout, stderr = run(
        capsys, "surface", "--spec", MINILM_SPEC, "--steps", 3, "--out", out, "--json", "--quiet"
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["workspace"] == "MiniLM sentiment" and report["summary"]["shape"] == [3, 3]
    plane = Surface.load(out)
    for q in ("train_loss", "val_loss", "train_accuracy"):
        assert np.isfinite(plane.values[q]).all()
    assert plane.values["train_loss"][1, 1] == ws.problem.base["train_loss"]  # the centre is the trained model
    assert plane.settings["problem"]["parameters"] == 1_775_234  # last block and head

    out = tmp_path / "path.npz"
    code, stdout, stderr = run(capsys, "interpolate", "--spec", MINILM_SPEC, "--steps", 3, "--out", out, "--quiet")
    assert code == 0, stderr
    assert "barrier" in stdout
    path = PathResult.load(out)
    assert path.values["train_loss"][0] == pytest.approx(ws.problem.base["train_loss"], rel=1e-6)
    assert path.values["train_loss"][-1] == pytest.approx(ws.compare.base["train_loss"], rel=1e-4)

    argv = ["hessian", "--spec", MINILM_SPEC, "--k", 1, "--which", "largest", "--tol", 1e-3, "--max-iter", 40]
    code, stdout, stderr = run(capsys, *argv, "--json", "--quiet", "--splits", "train")
    assert code == 0, stderr
    summary = json.loads(stdout)["summary"]
    top = summary["eigenvalues"][0]
    # Cauchy interlacing: the largest eigenvalue of the Hessian is at least that of any principal block, here the
    # head's, known exactly; the block of a transformer layer adds curvature of its own
    assert top >= head_eigenvalue(ws.problem) * (1 - 1e-3)
    assert 0 <= summary["residuals"][0] < 0.05  # its own error, reported (40 products need not reach --tol)


# -- ResNet-20 ---------------------------------------------------------------------------------------
@pytest.fixture
def small_resnet(monkeypatch, fresh_cache, tmp_path):
    monkeypatch.setenv("LANDSCAPE_RESNET_TRAIN", "16")  # 4 validation images
    monkeypatch.setenv("LANDSCAPE_RESNET_EPOCHS", "3")
    monkeypatch.setenv("LANDSCAPE_EXAMPLES_DIR", str(tmp_path / "examples"))
    return tmp_path / "examples" / "resnet20_n16_e3"


def test_resnet_spec_trains_once_writes_checkpoints_and_runs_from_the_cli(small_resnet, tmp_path, capsys):
    ws = load_spec(RESNET_SPEC)
    for name, problem, ckpts in (("skip", ws.problem, ws.checkpoints), ("noskip", ws.compare, ws.compare_checkpoints)):
        files = sorted(p.name for p in (small_resnet / name).iterdir())
        assert files == ["epoch_1.pt", "epoch_2.pt", "epoch_3.pt"]
        assert [c.name for c in ckpts] == ["epoch_1", "epoch_2", "epoch_3"]
        assert problem.space.size == 269_722  # He et al.'s "0.27M"; option-A shortcuts have no parameters
        # the base point is the last epoch with its BatchNorm running statistics, evaluated in eval mode
        saved = torch.load(small_resnet / name / "epoch_3.pt", weights_only=True)["model"]
        assert torch.equal(problem.buffers["bn.running_mean"], saved["bn.running_mean"])
        assert not torch.equal(saved["bn.running_mean"], torch.zeros_like(saved["bn.running_mean"]))
        assert torch.equal(problem.theta0, ckpts[-1].theta)
    assert ws.problem.model.layer1[0].skip and not ws.compare.model.layer1[0].skip
    stamp = (small_resnet / "skip" / "epoch_3.pt").stat().st_mtime_ns
    load_spec(RESNET_SPEC)  # a second use reads the checkpoints, it does not train again
    assert (small_resnet / "skip" / "epoch_3.pt").stat().st_mtime_ns == stamp

    out = tmp_path / "plane.npz"
    argv = ["surface", "--spec", RESNET_SPEC, "--steps", 3, "--subset", 8, "--out", out, "--json", "--quiet"]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    plane = Surface.load(out)
    assert np.isfinite(plane.values["train_loss"]).all() and plane.settings["problem"]["samples"]["train"] == 8
    code, stdout, stderr = run(capsys, *argv[:-4], "--model", "B", "--json", "--quiet")
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["shape"] == [3, 3]

    out = tmp_path / "path.npz"
    argv = ["interpolate", "--spec", RESNET_SPEC, "--from", "A:epoch_1", "--to", "A", "--steps", 3, "--out", out]
    code, stdout, stderr = run(capsys, *argv, "--quiet")
    assert code == 0, stderr
    path = PathResult.load(out)
    assert path.settings["bn"] == "recompute" and np.isfinite(path.values["train_loss"]).all()
    code, stdout, stderr = run(capsys, "trajectory", "--spec", RESNET_SPEC, "--json", "--quiet")
    assert code == 0, stderr
    assert json.loads(stdout)["summary"]["checkpoints"] == 3
