"""Every CSV download button of every page reads back (csv and pandas) to the numbers of its NPZ button.

The pages run in AppTest with a recording ``download_button``: for each download name, the CSV
bytes are decoded by ``test_csv_exports.check_csv_against_npz`` against the result that the NPZ
button of the same name holds. Also drawn here: a square plane stays square with one data split.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest
from test_csv_exports import check_csv_against_npz

from landscape_core.density import Density
from landscape_core.fragility import EmbeddingMap, Fragility
from landscape_core.hessian import SliceCurvature, Spectrum
from landscape_core.interpolation import Path as PathResult
from landscape_core.results import Surface
from landscape_core.sharpness import Sharpness
from landscape_core.topology import Persistence
from landscape_core.trace import TraceEstimate
from landscape_core.trajectory import Trajectory
from landscape_core.trajectory_plane import ProjectionGap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {
    cls.__name__: cls
    for cls in (
        Surface,
        PathResult,
        Spectrum,
        TraceEstimate,
        Density,
        SliceCurvature,
        Sharpness,
        Trajectory,
        ProjectionGap,
        Fragility,
        EmbeddingMap,
        Persistence,
    )
}

pytestmark = pytest.mark.slow


@pytest.fixture
def downloads(monkeypatch):
    """``{file name: bytes or str}`` of every download button drawn while the test runs."""
    files = {}
    original = DeltaGenerator.download_button

    def recording(self, label, data, file_name=None, *args, **kwargs):
        files[file_name] = data() if callable(data) else data
        return original(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    return files


def _page(name: str, workspace: str | None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=1800)
    if workspace:
        at.session_state["ui_workspace"] = workspace
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _result(npz: bytes):
    with np.load(io.BytesIO(npz), allow_pickle=False) as z:
        kind = json.loads(z["__json__"].tobytes().decode())["__type__"]
    return RESULTS[kind].from_bytes(npz)


def _check_all(files: dict) -> list[str]:
    checked = []
    for name, data in files.items():
        if not name.endswith(".csv") or name == "compare_metrics.csv":
            continue
        npz = files[name.removesuffix(".csv") + ".npz"]
        text = data.decode() if isinstance(data, bytes) else data
        check_csv_against_npz(_result(npz), text)
        assert "np.float64" not in text
        checked.append(name)
    return checked


PAGES = [
    ("surface", "logistic-blobs", {}, {"plane_train_loss.csv"}),
    ("surface", "logistic-blobs", {"surface_shape": "1D lines", "surface_steps": 11}, {"lines_loss.csv"}),
    ("interpolation", "digits-mlp", {"ui_subset": 256, "interp_steps": 5}, {"interpolation_recompute.csv"}),
    (
        "sharpness",
        "logistic-blobs",
        {"sharp_samples": 4, "sharp_budget": 12, "sharp_iters": 6},
        {"eigenvalues.csv", "trace.csv", "density.csv", "epsilon_sharpness.csv", "average_sharpness.csv"},
    ),
    (
        "trajectory",
        "digits-mlp",
        {"ui_subset": 256, "traj_steps": 11},
        {"trajectory_pca.csv", "projection_gap.csv", "trajectory_plane.csv", "trajectory_umap.csv"},
    ),
    ("compare", "digits-mlp", {"ui_subset": 256, "compare_steps": 11}, {"compare_planes.csv"}),
    ("text", "text-sentiment", {"text_n": 20, "text_samples": 2, "text_steps": 2}, {"text_fragility_A.csv"}),
]


@pytest.mark.parametrize("page, workspace, state, wanted", PAGES, ids=[f"{p[0]}-{i}" for i, p in enumerate(PAGES)])
def test_page_csv_downloads_equal_their_npz(downloads, page, workspace, state, wanted):
    _page(page, workspace, **state)
    checked = set(_check_all(downloads))
    assert wanted <= checked, (wanted - checked, sorted(downloads))


def test_a_square_plane_stays_square_with_one_split(downloads):
    """With one data split the heatmap is not stretched to the page width."""
    at = _page("surface", "digits-mlp", ui_subset=256, ui_splits=["train"], surface_steps=11)
    charts = at.get("vega_lite_chart")
    specs = [json.loads(c.proto.spec) for c in charts]
    heat = [s for s in specs if "layer" in s and s["layer"][0].get("mark", {}).get("type") == "rect"]
    titles = [h["title"]["text"] for h in heat]
    assert sum(t.startswith("train loss on the plane") for t in titles) == 1, titles  # one split: one surface
    for h in heat:  # the surface, and its basins map under it
        assert isinstance(h["width"], int), h["title"]  # its own size, not the column's width ("container")
        assert h["width"] == h["height"], h["title"]  # alpha and beta over the same span: a square
