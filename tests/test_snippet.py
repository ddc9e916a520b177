""" "Copy as Python" snippets: exec the code and compare with the result it claims to rebuild."""

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_core import directions, snippet, surface
from landscape_core.problem import Problem
from landscape_core.results import Surface
from landscape_core.workspace import Workspace


@pytest.fixture(scope="module")
def demo_ws():
    """A tiny workspace served by a stand-in ``landscape_core.demos`` module."""
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(80, 5, generator=g), torch.randint(0, 3, (80,), generator=g)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    ws = Workspace("tiny", Problem(model, F.cross_entropy, (X[:60], y[:60]), (X[60:], y[60:])))
    fake = types.ModuleType("landscape_core.demos")
    fake.load = lambda name: ws if name == "tiny" else (_ for _ in ()).throw(KeyError(name))
    fake.list_demos = lambda: ["tiny"]
    saved = sys.modules.get("landscape_core.demos")
    sys.modules["landscape_core.demos"] = fake
    import landscape_core

    had = hasattr(landscape_core, "demos")
    old = getattr(landscape_core, "demos", None)
    landscape_core.demos = fake
    yield ws
    if saved is None:
        sys.modules.pop("landscape_core.demos", None)
    else:
        sys.modules["landscape_core.demos"] = saved
    if had:
        landscape_core.demos = old
    else:
        del landscape_core.demos


def _run(code: str):
    scope: dict = {}
    exec(compile(code, "<snippet>", "exec"), scope)
    return scope["result"]


def test_plane_snippet_recomputes_values(demo_ws):
    problem = demo_ws.problem
    d = directions.random(problem, count=2, norm="filter", ignore=("bias",), seed=3)
    result = surface.plane(problem, d[0], d[1], span=(-0.5, 0.5), steps=5, splits=["train"], use_cache=False)
    code = snippet.surface_code(result, {"workspace": "tiny", "model": "A", "subset": None})
    assert "demos.load('tiny')" in code and "seed=3" in code
    again = _run(code)
    assert again.settings == result.settings
    np.testing.assert_array_equal(again.values["train_loss"], result.values["train_loss"])


def test_line_snippet_with_subset(demo_ws):
    problem = demo_ws.problem.subset(40, seed=0)
    d = directions.random(problem, count=1, norm="layer", seed=5)
    result = surface.line(problem, d[0], span=(-1, 1), steps=7, use_cache=False)
    code = snippet.surface_code(result, {"workspace": "tiny", "model": "A", "subset": 40})
    assert "problem.subset(40, seed=0)" in code
    np.testing.assert_array_equal(_run(code).values["val_loss"], result.values["val_loss"])


def test_lines_bundle_snippet(demo_ws):
    problem = demo_ws.problem
    d = directions.random(problem, count=3, seed=0)
    lines = [surface.line(problem, d[i], span=(-1, 1), steps=5, splits=["train"]) for i in range(3)]
    bundle = Surface(
        alphas=lines[0].alphas,
        values={"x": lines[0].alphas},
        settings={"kind": "lines", "lines": [s.settings for s in lines]},
    )
    again = _run(snippet.surface_code(bundle, {"workspace": "tiny"}))
    for old, new in zip(lines, again):
        np.testing.assert_array_equal(old.values["train_loss"], new.values["train_loss"])


def test_unreproducible_directions_are_refused(demo_ws):
    problem = demo_ws.problem
    handmade = torch.ones(problem.space.size)
    result = surface.line(problem, handmade, steps=3, use_cache=False)
    with pytest.raises(NotImplementedError, match="kind 'user'"):
        snippet.surface_code(result, {"workspace": "tiny"})
    mask = problem.space.mask(kinds=["weight"])
    masked = directions.random(problem, count=1, mask=mask, seed=9)
    result = surface.line(problem, masked[0], steps=3, use_cache=False)
    with pytest.raises(NotImplementedError, match="masked"):
        snippet.surface_code(result, {"workspace": "tiny"})
    with pytest.raises(ValueError, match="workspace"):
        snippet.problem_code({"workspace": ""})


def test_spec_and_model_b_sources():
    lines = snippet.problem_code({"workspace": "spec:examples/cnn.py:build", "model": "B", "subset": 256})
    assert lines == [
        "from landscape_core import spec",
        "ws = spec.load_spec('examples/cnn.py:build')",
        "problem = ws.compare  # model B",
        "problem = problem.subset(256, seed=0)  # the dashboard's evaluation subset",
    ]


def test_hessian_plane_snippet(demo_ws):
    from landscape_core import hessian

    problem = demo_ws.problem
    spectrum = hessian.top_eigenvalues(problem, k=1, which="both", seed=0)
    basis = directions.register(
        spectrum.vectors.to(problem.device, problem.dtype), {"kind": "hessian", "k": 1, "which": "both", "seed": 0}
    )
    result = surface.plane(problem, basis[0], basis[1], span=(-0.3, 0.3), steps=3, use_cache=False)
    code = snippet.surface_code(result, {"workspace": "tiny"})
    assert "hessian.top_eigenvalues(problem, k=1, which='both', seed=0)" in code
    np.testing.assert_array_equal(_run(code).values["train_loss"], result.values["train_loss"])


def test_uploaded_workspaces_have_no_recipe():
    with pytest.raises(NotImplementedError, match="write a spec"):
        snippet.problem_code({"workspace": "upload:mine:abc123"})
    with pytest.raises(snippet.NoCodeError):  # the page tells this apart: it shows a spec instead
        snippet.problem_code({"workspace": "upload:program net.pt2:abc123", "model": "A"})


@pytest.mark.parametrize(
    ("loss", "loss_code"),
    [(torch.nn.functional.cross_entropy, "F.cross_entropy"), (lambda out, y: (out - y).abs().mean(), "my_loss")],
)
def test_spec_for_an_upload_names_its_architecture_loss_and_shapes(loss, loss_code):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(20)], torch.nn.Linear(3, 2))
    X = torch.randn(10, 3)
    y = torch.randint(0, 2, (10,)) if loss_code != "my_loss" else torch.randn(10, 2)
    problem = Problem(model, loss, train=(X, y))
    code = snippet.spec_for(problem, "my upload")
    compile(code, "spec.py", "exec")  # a valid Python file
    assert code.startswith('"""A spec for my upload:')
    assert f"(Sequential, {problem.space.size:,} parameters)" in code
    assert "#     (0): Linear(in_features=3, out_features=3, bias=True)" in code
    assert "#   ..." in code and code.count("\n#   ") == 14  # a long architecture is shortened
    assert f"return Problem(model, {loss_code}" in code
    compile(snippet.spec_for(problem, 'epoch_1.pt"""\nimport os'), "spec.py", "exec")  # a file name as typed
    compile(snippet.spec_for(problem, "C:\\x\\N.pt"), "spec.py", "exec")  # backslashes: no escape sequence
    assert "X (n, 3), y (n)" in code if loss_code != "my_loss" else "X (n, 3), y (n, 2)" in code
