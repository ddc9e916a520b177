"""AppTest of the Text embeddings page, run on its own (it falls back to the text demo)."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")  # until the job is done, however long that takes
    monkeypatch.syspath_prepend(str(ROOT))


def test_text_page_defaults_draw_ranking_curves_map_and_downloads():
    at = AppTest.from_file(str(ROOT / "pages" / "text.py"), default_timeout=1800)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith("Text embeddings")
    tables = at.dataframe
    assert len(tables) == 4  # the fragility ranking of model A and of model B, then the contrastive encoders' motion
    assert all("average movement" in t.value.columns for t in tables[2:])
    ranking = tables[0].value
    assert {"text", "label", "prediction", "fragility score"} <= set(ranking.columns)
    assert ranking["fragility score"].is_monotonic_decreasing
    assert len(at.get("vega_lite_chart")) >= 5  # curves A, B; maps A, B; A vs B; embedding line
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"CSV", "NPZ", "Settings"} <= labels
    assert not at.error
    # the readout names the input the table puts first: with the toggle on, one the model gets right
    assert at.toggle(key="text_only_correct").value is True
    readout = next(m.value for m in at.markdown if "Most fragile input" in m.value)
    assert "Most fragile input it classifies right" in readout
    assert f'"{ranking["text"].iloc[0]}"' in readout
    assert (ranking["label"] == ranking["prediction"]).all()
    at.toggle(key="text_only_correct").set_value(False).run()
    everything = at.dataframe[0].value
    readout = next(m.value for m in at.markdown if "Most fragile input" in m.value)
    assert "Most fragile input:" in readout and f'"{everything["text"].iloc[0]}"' in readout


def test_text_page_on_the_text_workspace_with_the_relative_score():
    at = AppTest.from_file(str(ROOT / "pages" / "text.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = "text-sentiment"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.info  # the sidebar's workspace is a text model: no fallback note
    before = at.dataframe[0].value
    at.radio(key="text_score").set_value("keskar")
    at.number_input(key="text_n").set_value(60)
    at.checkbox(key="text_hessian").check()
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    after = at.dataframe[0].value
    assert "wrong from radius" in after.columns and after["fragility score"].is_monotonic_decreasing
    assert list(after["text"]) != list(before["text"])
    assert (after["input-Hessian lambda_max"] > -1e-6).all()  # PSD: cross-entropy of logits linear in E
