"""AppTest of the Your model page: the spec in use, the template without one, a failing spec shown readably."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")

SPEC = """
import torch
import torch.nn.functional as F
from landscape_core import Problem


def build():
    torch.manual_seed(0)
    X = torch.randn(40, 3)
    return Problem(torch.nn.Sequential(torch.nn.Linear(3, 2)), F.cross_entropy, train=(X, (X[:, 0] > 0).long()))


def broken():
    raise FileNotFoundError("weights/final.pt is missing")
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "page_spec.py"
    path.write_text(SPEC)
    return path


def _page(monkeypatch, argv) -> AppTest:
    monkeypatch.setattr(sys, "argv", ["app.py", *argv])
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")  # until the job is done
    at = AppTest.from_file(APP, default_timeout=1800)
    at.run()
    at.switch_page("pages/your_model.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_shows_the_spec_in_use(monkeypatch, spec_file):
    at = _page(monkeypatch, ["--spec", f"{spec_file}:build"])
    assert at.title[0].value == "Your model"
    assert any("spec page_spec.py:build" in s.value and "8 parameters" in s.value for s in at.success)
    assert any("def broken()" in c.value for c in at.code)  # the spec's source
    assert any("Expected state-dict keys" in e.label for e in at.expander)
    assert not at.error


def test_page_shows_a_failing_spec_readably(monkeypatch, spec_file):
    at = _page(monkeypatch, ["--spec", f"{spec_file}:broken"])
    messages = [e.value for e in at.error]
    assert any("raised FileNotFoundError: weights/final.pt is missing" in m for m in messages)
    tracebacks = [c.value for c in at.code if "Traceback" in c.value]
    assert tracebacks and 'raise FileNotFoundError("weights/final.pt is missing")' in tracebacks[0]
