"""The dashboard's Surface and Compare pages on ``examples/resnet_spec.py`` (AppTest, small settings).

ResNet-20 with and without shortcuts (269,722 parameters each, BatchNorm), trained two epochs on 16
generated images in this test's folder, evaluated on a 4-image subset so that an 11x11 plane of
both nets is seconds of forward passes.
"""

from pathlib import Path

import numpy as np
import pytest
from apptest import open_page
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT / 'examples' / 'resnet_spec.py'}:build"
TIMEOUT = 1800  # a hang guard for one script run; jobs are waited on until done (LANDSCAPE_JOB_WAIT)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def resnet_spec(monkeypatch, fresh_cache, tmp_path):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.setenv("LANDSCAPE_RESNET_TRAIN", "16")
    monkeypatch.setenv("LANDSCAPE_RESNET_EPOCHS", "2")
    monkeypatch.setenv("LANDSCAPE_EXAMPLES_DIR", str(tmp_path / "examples"))
    monkeypatch.setattr("sys.argv", ["app.py", "--spec", SPEC])
    monkeypatch.syspath_prepend(str(ROOT))


def page(name: str, **state) -> AppTest:
    return open_page(name, f"spec:{SPEC}", 4, TIMEOUT, **state)


def test_surface_page_draws_the_resnet_plane():
    at = page("surface", surface_shape="2D plane", surface_steps=11)
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 1
    assert {b.proto.label for b in at.get("download_button")} >= {"CSV", "NPZ"}
    shown = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    assert any("ResNet-20" in s for s in shown), shown  # the spec's workspace, not a demo


def test_compare_page_shows_resnet_with_and_without_shortcuts():
    at = page("compare", compare_steps=11, compare_lines=2, compare_hessian=False)
    assert len(at.get("vega_lite_chart")) >= 2  # A and B on one colour scale
    table = at.dataframe[0].value
    assert len(table) >= 2
    numbers = table.select_dtypes("number").to_numpy(dtype=float)
    assert np.isfinite(numbers).any()
