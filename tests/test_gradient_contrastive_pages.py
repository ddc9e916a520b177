"""AppTest runs of issue 15's parts 2 and 3 on the pages: the gradient-norm map on Surface, the
gradient column and the contrastive section on the Text page; the numbers are the library's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.syspath_prepend(str(ROOT))


def test_surface_gradient_norm_map_is_the_library_on_the_same_plane():
    from landscape_core import demos, directions, gradient_norm

    at = AppTest.from_file(str(ROOT / "pages" / "surface.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = "digits-mlp"
    at.session_state["ui_subset"] = 256
    at.session_state["surface_steps"] = 11
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    next(b for b in at.button if b.label.startswith("Run: gradient norm")).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    text = next(m.value for m in at.markdown if m.value.startswith("Gradient norm at the base point"))
    problem = demos.load("digits-mlp").problem.subset(256, seed=0)
    d = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    span = at.slider(key="surface_span").value
    grads = gradient_norm.plane(problem, d[0], d[1], span=(-span, span), steps=11)
    assert f"**{grads.center_value('train_grad_norm'):.3g}**" in text
    assert np.isfinite(grads.values["train_grad_norm"]).all()


def test_text_page_gradient_column_and_contrastive_section():
    from landscape_core import demos, embedding_motion

    at = AppTest.from_file(str(ROOT / "pages" / "text.py"), default_timeout=1800)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    ranking = at.dataframe[0].value
    assert "gradient norm ||dL/dE||" in ranking.columns and (ranking["gradient norm ||dL/dE||"] > 0).all()
    readout = next(m.value for m in at.markdown if "is the flatter encoder" in m.value)
    ws = demos.load("text-contrastive")
    m = embedding_motion.motion(ws.problem, ws.encodings["val"].ids[:150], 0.05, 8, 0)
    assert f"median movement **{np.median(m.average):.3g}**" in readout
    moved = next(d.value for d in at.dataframe if "average movement" in d.value.columns)
    assert moved["average movement"].is_monotonic_decreasing
