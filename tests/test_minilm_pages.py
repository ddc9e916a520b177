"""The dashboard's pages on a real transformer: the MiniLM spec's workspace (AppTest, small settings).

Each page runs on its own with the spec named on the command line and picked in session state,
on 16 training sentences and a 4-sentence evaluation subset, so that a page's job is seconds of
forward passes through the 22.7M-parameter model. Runs when the extra "text" is installed.
"""

from pathlib import Path

import numpy as np
import pytest
from apptest import open_page
from streamlit.testing.v1 import AppTest

from landscape_core import minilm

ROOT = Path(__file__).resolve().parents[1]
SPEC = f"{ROOT / 'examples' / 'minilm_sentiment_spec.py'}:build"
TIMEOUT = 1800  # a hang guard for one script run; jobs are waited on until done (LANDSCAPE_JOB_WAIT)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not minilm.minilm_available()[0], reason=minilm.minilm_available()[1]),
]


@pytest.fixture(autouse=True)
def minilm_spec(monkeypatch, fresh_cache):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.setenv("LANDSCAPE_MINILM_TRAIN", "16")
    monkeypatch.setattr("sys.argv", ["app.py", "--spec", SPEC])
    monkeypatch.syspath_prepend(str(ROOT))


def page(name: str, **state) -> AppTest:
    return open_page(name, f"spec:{SPEC}", 4, TIMEOUT, **state)


def test_surface_page_draws_minilm_lines():
    at = page("surface", surface_shape="1D lines", surface_steps=11, surface_lines=1)
    assert len(at.get("vega_lite_chart")) >= 1
    assert {b.proto.label for b in at.get("download_button")} >= {"CSV", "NPZ"}


def test_interpolation_page_joins_head_only_and_last_block_models():
    at = page("interpolation", interp_steps=5)
    assert len(at.get("vega_lite_chart")) >= 1
    text = " ".join(m.value for m in at.markdown)
    assert "barrier" in text.lower()


def test_sharpness_page_finds_the_top_eigenvalue_of_minilm():
    at = page("sharpness", sharp_parts=["eigenvalues"], sharp_k=1, sharp_which="largest", sharp_tol=1e-2)
    spectrum = at.dataframe[0].value
    assert len(spectrum) == 1 and np.isfinite(spectrum["eigenvalue"]).all()


def test_compare_page_shows_both_minilm_models():
    at = page("compare", compare_steps=11, compare_lines=2, compare_hessian=False)
    assert len(at.get("vega_lite_chart")) >= 2  # A and B on one colour scale
    table = at.dataframe[0].value
    assert len(table) >= 2


def test_text_page_ranks_the_spec_sentences_not_the_demo():
    at = page("text", text_n=5, text_samples=2, text_steps=1, text_radii="up to 10% of the embedding norm")
    assert not [m.value for m in at.info if "not a text model" in m.value]  # the spec's MiniLM, not the demo
    ws = minilm.minilm_workspace(epochs=3, max_train=16, max_val=8)
    ranking = at.dataframe[0].value
    assert set(ranking["text"]) <= set(ws.texts["val"][:5]) and len(ranking) >= 1
    assert np.isfinite(ranking["fragility score"]).all()
    assert len(at.get("vega_lite_chart")) >= 4  # curves and maps of A and B
