"""AppTest runs of the Embedding principle page and the topology sections of Surface and Compare.

Each page file runs on its own with the sidebar's state in session state (a demo, a 256-sample
subset); jobs are waited on synchronously. The numbers shown are checked against the library
called directly.
"""

from __future__ import annotations

import numpy as np
import pytest
from apptest import open_page
from streamlit.testing.v1 import AppTest

TIMEOUT = 600

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "500")


def _page(name: str, workspace: str, **state) -> AppTest:
    return open_page(name, workspace, 256, TIMEOUT, **state)


def _markdown(at: AppTest, start: str) -> str:
    return next(m.value for m in at.markdown if m.value.startswith(start))


def test_embedding_page_on_the_digits_demo():
    at = _page("embedding", "digits-mlp", embedding_width=136, embedding_steps=11, embedding_k=2)
    assert at.title[0].value.startswith("Embedding principle")
    losses = at.dataframe[0].value
    assert losses.loc["parameters", "widened A"] == 9610 + 8 * (64 + 1 + 10)
    assert losses.loc["train loss", "widened A"] == pytest.approx(losses.loc["train loss", "model A"], rel=1e-6)
    assert np.isfinite(losses.loc["train loss", "wide, trained from scratch"])
    spectra = at.dataframe[1].value
    assert list(spectra.index) == ["model A", "widened A", "wide, trained from scratch"]
    split = at.dataframe[2].value.set_index("direction")
    assert split.loc["outgoing", "curvature d^T H d"] == 0.0  # exactly flat: every output is unchanged
    assert "new flat direction" in _markdown(at, "**Outgoing split direction**")
    assert _markdown(at, "**Smallest eigenvalue**")
    assert "Trained from scratch with model A's recipe" in _markdown(at, "Trained from scratch with")
    assert len(at.get("vega_lite_chart")) == 4  # spectra, split plane, two random planes
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"CSV", "NPZ", "Settings", "PNG", "SVG"} <= labels


def test_embedding_page_names_why_no_layer_can_be_widened():
    at = _page("embedding", "digits-bn-cnn")
    assert "No layer of this model can be widened" in at.warning[0].value
    reasons = " ".join(m.value for m in at.markdown)
    assert "BatchNorm2d '1'" in reasons and "last layer" in reasons


def test_surface_page_counts_basins_and_marks_them():
    from landscape_core import topology

    at = _page("surface", "digits-mlp", surface_steps=11, surface_span=3.0)
    readout = _markdown(at, "**")
    assert readout
    basins = next(d.value for d in at.dataframe if "barrier to the deepest" in d.value.columns)
    text = next(m.value for m in at.markdown if "persist above" in m.value)
    count = int(text.split("**")[1].split()[0])
    assert count == len(basins) >= 1
    assert basins["floor"].iloc[0] == basins["floor"].min()
    at.slider(key="surface_topology_threshold").set_value(0.0)
    at.run()
    everything = next(d.value for d in at.dataframe if "barrier to the deepest" in d.value.columns)
    assert len(everything) >= count
    # the page's numbers are the library's on the page's own plane
    from landscape_core import demos, directions, surface

    problem = demos.load("digits-mlp").problem.subset(256, seed=0)
    d = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    plane = surface.plane(problem, d[0], d[1], span=(-3.0, 3.0), steps=11, splits=["train", "val"])
    assert len(everything) == len(topology.persistence(plane, "train_loss").pairs)


def test_surface_hessian_plane_of_a_saddle_has_two_basins_split_at_the_base_point():
    """digits-mlp's model A has a small negative eigenvalue: on the largest/smallest eigenvector plane the loss
    falls on both sides along the smallest, so two basins meet at the base point."""
    at = _page("surface", "digits-mlp", surface_steps=11, surface_kind="hessian-both", surface_topology_threshold=0.0)
    basins = next(d.value for d in at.dataframe if "barrier to the deepest" in d.value.columns)
    text = next(m.value for m in at.markdown if "persist above" in m.value)
    assert len(basins) == 2 and "crosses the base point itself" in text
    assert float(basins["saddle alpha"].iloc[1]) == 0.0 and float(basins["saddle beta"].iloc[1]) == 0.0


def test_compare_page_shows_both_diagrams_and_the_bottleneck_distance():
    at = _page("compare", "digits-mlp", compare_steps=11)
    metric = next(m for m in at.metric if m.label == "Bottleneck distance")
    assert float(metric.value) >= 0
    table = next(d.value for d in at.dataframe if "basins above" in d.value.columns)
    assert list(table["model"]) == ["small batch", "large batch"]
    assert len(at.get("vega_lite_chart")) == 3  # the linked A, B and difference view, lines, diagrams
