"""Spec loading: files, modules, wrapping, and every way a spec can fail, with a readable answer."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_core.problem import Problem
from landscape_core.spec import (
    TEMPLATE,
    SpecError,
    SpecNotFound,
    SpecReturnError,
    load_spec,
    parse_target,
    spec_source_text,
)
from landscape_core.workspace import Workspace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = """
import torch
import torch.nn.functional as F
from landscape_core import Problem
from landscape_core.workspace import Checkpoint, Workspace


def _problem(scale=1.0):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    X = torch.randn(20, 3)
    y = (X[:, 0] > 0).long()
    return Problem(model, F.cross_entropy, train=(X * scale, y))


def build():
    return _problem()


def build_workspace(scale=1.0):
    problem = _problem(scale)
    ckpts = [Checkpoint("start", problem.theta0 * 0.5, step=1), Checkpoint("end", problem.theta0, step=2)]
    return Workspace("tiny", problem, checkpoints=ckpts, description="a tiny spec")


def build_raises():
    helper()


def helper():
    raise RuntimeError("the data folder /nowhere is missing")


def build_wrong():
    return {"model": 1}


def build_tuple():
    return _problem(), []


not_a_function = 3
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny_spec.py"
    path.write_text(TINY)
    return path


def test_file_spec_returning_problem_is_wrapped(spec_file):
    ws = load_spec(f"{spec_file}:build")
    assert isinstance(ws, Workspace)
    assert isinstance(ws.problem, Problem)
    assert ws.name == "spec tiny_spec.py:build"
    assert ws.checkpoints == []


def test_default_function_is_build(spec_file):
    assert load_spec(str(spec_file)).problem.space.size == 8


def test_workspace_is_returned_as_is_and_kwargs_are_passed(spec_file):
    ws = load_spec(f"{spec_file}:build_workspace", scale=2.0)
    assert ws.name == "tiny"
    assert [c.name for c in ws.checkpoints] == ["start", "end"]
    assert ws.problem.splits["train"].X.abs().max() > 2.0


def test_module_spec(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "specs.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    ws = load_spec("mypkg.specs:build_workspace")
    assert ws.name == "tiny"
    assert spec_source_text("mypkg.specs:build") == TINY
    sys.modules.pop("mypkg.specs", None)
    sys.modules.pop("mypkg", None)


def test_sibling_imports_work(tmp_path):
    (tmp_path / "helpers_for_spec.py").write_text("SIZE = 5\n")
    (tmp_path / "s.py").write_text(
        TINY + "\nfrom helpers_for_spec import SIZE\n\ndef sized():\n    assert SIZE == 5\n    return _problem()\n"
    )
    assert load_spec(f"{tmp_path / 's.py'}:sized").problem is not None
    assert str(tmp_path) not in sys.path  # the folder is only on the path while importing


def test_parse_target():
    t = parse_target("examples/digits_cnn_spec.py:build")
    assert (t.source, t.function, t.is_file) == ("examples/digits_cnn_spec.py", "build", True)
    t = parse_target("pkg.mod")
    assert (t.source, t.function, t.is_file) == ("pkg.mod", "build", False)
    assert parse_target("pkg.mod:make").label == "pkg.mod:make"
    with pytest.raises(SpecNotFound, match="not a Python identifier"):
        parse_target("spec.py:not-a-name")
    with pytest.raises(SpecNotFound, match="neither a .py file nor a dotted module"):
        parse_target("some thing:build")


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="spec file .* does not exist"):
        load_spec(f"{tmp_path / 'nope.py'}:build")


def test_missing_module_says_so():
    with pytest.raises(SpecNotFound, match="cannot be found"):
        load_spec("no_such_package_xyz.specs:build")


def test_missing_function_lists_callables(spec_file):
    with pytest.raises(SpecNotFound, match="has no function 'make'.*'build'"):
        load_spec(f"{spec_file}:make")


def test_not_callable(spec_file):
    with pytest.raises(SpecReturnError, match="is a int, not a function"):
        load_spec(f"{spec_file}:not_a_function")


def test_spec_that_raises_carries_its_traceback(spec_file):
    with pytest.raises(SpecError) as info:
        load_spec(f"{spec_file}:build_raises")
    err = info.value
    assert "raised RuntimeError: the data folder /nowhere is missing" in str(err)
    assert err.traceback is not None
    assert "tiny_spec.py" in err.traceback and "in helper" in err.traceback
    assert 'raise RuntimeError("the data folder /nowhere is missing")' in err.traceback
    assert "landscape_core/spec.py" not in err.traceback  # loader frames removed
    assert "\n" not in str(err)  # one sentence for the UI; details in the expander


def test_spec_that_fails_to_import_carries_its_traceback(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\nx = 1 / 0\n")
    with pytest.raises(SpecError, match="importing the spec file broken.py raised ZeroDivisionError") as info:
        load_spec(str(path))
    assert "broken.py" in info.value.traceback and "x = 1 / 0" in info.value.traceback
    path.write_text("def build(:\n")
    with pytest.raises(SpecError, match="SyntaxError"):
        load_spec(str(path))


def test_wrong_return_type_names_it(spec_file):
    with pytest.raises(TypeError, match="returned a dict; it must return a landscape_core Workspace or Problem"):
        load_spec(f"{spec_file}:build_wrong")
    with pytest.raises(SpecReturnError, match="returned a tuple.*return Workspace"):
        load_spec(f"{spec_file}:build_tuple")


def test_template_is_a_valid_spec_shape():
    compile(TEMPLATE, "template.py", "exec")
    assert "def build()" in TEMPLATE


def test_examples_custom_loss_spec():
    """The custom loss and the Brier metric equal a float64 computation at theta0."""
    ws = load_spec(f"{EXAMPLES / 'custom_loss_spec.py'}:build")
    problem = ws.problem
    assert set(problem.metrics) == {"accuracy", "brier"}
    assert len(ws.checkpoints) == 4
    X, y = problem.splits["train"].X, problem.splits["train"].y
    with torch.no_grad():
        logits = problem.forward(problem.theta0, X).double()
    p = logits.softmax(-1).numpy()
    onehot = np.eye(2)[y.numpy()]
    brier = ((p - onehot) ** 2).sum(-1).mean()
    smoothed = 0.9 * onehot + 0.05
    ce = -(smoothed * np.log(p)).sum(-1).mean()
    assert problem.base["train_brier"] == pytest.approx(brier, rel=1e-5)
    assert problem.base["train_loss"] == pytest.approx(ce, rel=1e-5)


def test_examples_digits_cnn_spec_writes_and_reads_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_EXAMPLES_DIR", str(tmp_path))
    ws = load_spec(f"{EXAMPLES / 'digits_cnn_spec.py'}:build")
    files = sorted(p.name for p in (tmp_path / "digits_cnn").iterdir())
    assert len(files) == 8 and all(f.endswith(".pt") for f in files)
    assert [c.name for c in ws.checkpoints] == [f"epoch_{i}" for i in range(1, 9)]  # natural order
    assert [c.step for c in ws.checkpoints] == list(range(1, 9))
    assert torch.equal(ws.checkpoints[-1].theta, ws.problem.theta0)
    assert ws.problem.base["val_accuracy"] > 0.8
    again = load_spec(f"{EXAMPLES / 'digits_cnn_spec.py'}:build")  # second use only reads the folder
    assert torch.equal(again.problem.theta0, ws.problem.theta0)


def test_spec_calling_sys_exit_does_not_end_the_process(tmp_path):
    path = tmp_path / "exiting.py"
    path.write_text("import sys\n\ndef build():\n    sys.exit('usage: exiting.py DATA')\n")
    with pytest.raises(SpecError, match="raised SystemExit: usage: exiting.py DATA"):
        load_spec(str(path))


def test_example_docstrings_state_the_true_parameter_count():
    """Every "N parameters" a docstring of examples/ states is the count of the model it describes."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("digits_cnn_spec_doc", EXAMPLES / "digits_cnn_spec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stated = re.search(r"([\d,]+) parameters", module.make_model.__doc__)
    assert stated, module.make_model.__doc__
    assert int(stated.group(1).replace(",", "")) == sum(p.numel() for p in module.make_model().parameters())
