"""The Interpolation and Sharpness pages show a labelled preview while the exact result runs, then
the exact result without it; a cached result opens without a preview."""

import re
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[1] / "pages"

pytestmark = pytest.mark.slow


def held(module, name: str, monkeypatch) -> threading.Event:
    """``module.name`` made to wait (up to 600 s) until the returned event is set, then run."""
    release = threading.Event()
    real = getattr(module, name)

    def waiting(*args, **kwargs):
        release.wait(timeout=600)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, waiting)
    return release


def finish_jobs() -> None:
    from landscape_core import jobs

    for job in jobs.registry().jobs():
        assert job.wait(timeout=600)


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=600)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_interpolation_shows_a_labelled_preview_then_the_exact_path(monkeypatch):
    from landscape_core import path_preview

    release = held(path_preview, "refine_path", monkeypatch)  # the exact path waits until the preview is seen
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "60")  # the preview finishes well within; the held path does not
    state = {"ui_workspace": "digits-bn-cnn", "interp_steps": 9, "interp_bn_all": False}
    try:
        at = page("interpolation", **state)
        captions = [c.value for c in at.caption]
        label = next((c for c in captions if c.startswith("Preview: 5 points of the path on ")), None)
        assert label is not None, captions
        assert "train samples" in label and "standard error of the loss" in label
        assert "BatchNorm statistics recomputed at each alpha on the preview's" in label
        assert "The exact path on all samples follows" in label
        assert any(c.startswith("Preview barrier (train)") and "not the exact path" in c for c in captions)
        assert len(at.get("vega_lite_chart")) == 1  # the preview's loss along the path
        assert not at.dataframe and not at.get("download_button")  # no barrier table, nothing to download
    finally:
        release.set()
        finish_jobs()
    at.run()  # the finished exact path replaces the preview
    assert not at.exception
    assert not any(c.value.startswith("Preview") for c in at.caption)
    assert at.dataframe and "loss barrier (Entezari et al. 2022)" in at.dataframe[0].value.columns

    from landscape_core import jobs

    calls = []
    monkeypatch.setattr(path_preview, "preview_path", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(jobs, "_REGISTRY", None)  # no finished job serves it: only the disk cache
    again = page("interpolation", **state)  # a new session on the warm cache: no preview is computed
    assert not calls and again.dataframe
    assert not any(c.value.startswith("Preview") for c in again.caption)


def test_sharpness_shows_a_labelled_preview_while_the_exact_measures_run(monkeypatch):
    from landscape_core import curvature_parts

    release = held(curvature_parts, "compute", monkeypatch)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "10")  # the held parts are still running after it
    state = {"ui_workspace": "digits-mlp", "sharp_parts": ["trace", "sharpness"], "sharp_seed": 4141}
    try:
        at = page("sharpness", **state)
        assert any(m.value == "#### Preview: average sharpness on a data subset" for m in at.markdown)
        rise = next(m.value for m in at.markdown if m.value.startswith("Under random Gaussian noise"))
        assert "+/-" in rise
        label = next(c.value for c in at.caption if c.value.startswith("Preview: "))
        assert re.search(r"\d+ noise draws on [\d,]+ of 1,\d{3} train samples", label), label
        assert "standard error counts both" in label
    finally:
        release.set()
        finish_jobs()
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "600")
    at.run()
    assert not at.exception
    assert not any("Preview" in m.value for m in at.markdown)
    assert len(at.dataframe) == 1  # the exact sharpness table
