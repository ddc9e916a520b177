"""Every ``landscape`` command on every kind of workspace: exit 0, or exit 1 with one line saying why.

The kinds are those of the page matrix (tests/workspace_kinds.py); uploads and the ``.pt2``
program reach the CLI through specs that open the files (the CLI has no upload flags). Small
settings (a 32-sample subset, 5 steps, one eigenvalue, 50 Hessian-vector products, a 5-iteration
sharpness ascent) keep each cell to about a second. A cell fails on an internal error (exit 3), a traceback, or a refusal nobody expects (a refusal is expected only
where the workspace lacks what the command needs: a model B, two or three checkpoints).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import workspace_kinds as wk

from landscape_core import cli

SMALL = ["--subset", "32", "--quiet", "--json"]
COMMANDS = {
    "surface": ["surface", "--steps", "5"],
    "surface-1d": ["surface", "--dims", "1", "--lines", "2", "--steps", "5"],
    "surface-B": ["surface", "--model", "B", "--steps", "5"],
    "interpolate": ["interpolate", "--steps", "5"],
    "hessian-eigenvalues": ["hessian", "--what", "eigenvalues", "--k", "1", "--max-iter", "50"],
    "hessian-trace": ["hessian", "--what", "trace", "--budget", "12"],
    "hessian-density": ["hessian", "--what", "density", "--iters", "10"],
    "sharpness-epsilon": ["sharpness", "--kind", "epsilon"],
    "sharpness-adaptive": ["sharpness", "--kind", "adaptive"],
    "sharpness-average": ["sharpness", "--kind", "average", "--samples", "4"],
    "trajectory-pca": ["trajectory", "--method", "pca"],
    "trajectory-umap": ["trajectory", "--method", "umap"],
}
# what each kind has: (checkpoints of A, a model B)
HAS = {
    "digits-mlp": (21, True),
    "digits-seeds": (21, True),
    "digits-bn-cnn": (11, True),
    "logistic-blobs": (22, False),
    "text-sentiment": (8, True),
    "spec-checkpoints": (8, False),
    "spec-custom-loss": (4, False),
    "uploads": (3, False),
    "program": (0, False),
    "single-model": (0, False),
}


def refusal_expected(kind: str, command: str) -> str | None:
    """The words of the one-line refusal a cell must give, or None when it must succeed."""
    checkpoints, has_b = HAS[kind]
    if command == "surface-B" and not has_b:
        return "has no model B"
    if command == "interpolate" and checkpoints < 2 and not has_b:
        return "no checkpoints and no model B"
    if command.startswith("trajectory") and checkpoints < 3:
        return "at least 3 checkpoints"
    return None


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, list[str]]:
    files = wk.make_files(tmp_path_factory.mktemp("cli_kinds"))
    out = {name: ["--demo", name] for name in wk.DEMOS}
    out.update({kind: ["--spec", target] for kind, target in wk.spec_targets(files).items()})
    return out


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_outcome(code: int, out: str, err: str, expected: str | None) -> None:
    assert "Traceback" not in out + err, err
    if expected is None:
        assert code == 0, err
        report = json.loads(out)
        assert report["result"] and report["summary"] is not None
        values = [v for v in json.dumps(report["summary"]).split(",") if "NaN" in v]
        assert not values, values
    else:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, (code, err)
        assert lines[0].startswith("landscape: error: ") and expected in lines[0], lines[0]


def _cells():
    for kind in wk.KINDS:
        for command in COMMANDS:
            yield pytest.param(kind, command, id=f"{kind}-{command}")


@pytest.fixture
def short_ascent(monkeypatch):
    """Epsilon and adaptive sharpness with 5 L-BFGS-B iterations instead of 100 (the CLI has no flag
    for it): a cell checks how the command ends on a workspace, not the maximum it finds."""
    import functools

    from landscape_core import sharpness

    for name in ("epsilon", "adaptive"):
        monkeypatch.setattr(sharpness, name, functools.partial(getattr(sharpness, name), iters=5))


@pytest.mark.parametrize(("kind", "command"), list(_cells()))
def test_command_on_workspace(capsys, short_ascent, sources, kind, command):
    code, out, err = run(capsys, [*COMMANDS[command], *sources[kind], *SMALL])
    check_outcome(code, out, err, refusal_expected(kind, command))


@pytest.mark.parametrize("name", wk.DEMOS)
def test_demo_command_on_each_demo(capsys, monkeypatch, name):
    """``landscape demo NAME`` for the Surface page, its plane at 5 x 5 (the full first screen of
    every demo is test_first_screen.py's)."""
    import dataclasses

    from landscape_core import first_screen

    monkeypatch.setattr(first_screen, "SURFACE", dataclasses.replace(first_screen.SURFACE, steps=5, coarse_steps=5))
    code, out, err = run(capsys, ["demo", name, "--surface-only", "--quiet", "--json"])
    assert code == 0 and "Traceback" not in err, err
    (row,) = json.loads(out)["prepared"]
    assert row["demo"] == name and row["parameters"] > 0


def test_demo_command_refuses_a_workspace_that_is_not_a_demo(capsys, sources):
    code, out, err = run(capsys, ["demo", "spec-checkpoints", "--quiet"])
    check_outcome(code, out, err, "unknown demo")


def test_one_line_refusal_from_a_real_process(sources):
    """The console entry point itself (a fresh process): exit 1 and one line, no traceback."""
    argv = [sys.executable, "-m", "landscape_core.cli", "trajectory", *sources["single-model"], "--quiet"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    check_outcome(done.returncode, done.stdout, done.stderr, "at least 3 checkpoints")


def test_results_are_finite_where_the_model_is(capsys, sources):
    """A spot check that the cells compute real numbers: the single model's base loss is its own."""
    from landscape_core.spec import load_spec

    problem = load_spec(sources["single-model"][1]).problem
    code, out, err = run(capsys, [*COMMANDS["surface"], *sources["single-model"], "--quiet", "--json"])
    assert code == 0, err
    center = json.loads(out)["summary"]["train_loss"]["center"]
    assert np.isclose(center, problem.base["train_loss"], rtol=1e-6)
