"""The Surface page's estimate before Run and its labelled preview while the exact grid runs."""

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.slow


def test_surface_page_shows_the_estimate_and_a_labelled_preview_first(monkeypatch):
    import landscape_core.surface as surface_mod

    release = threading.Event()
    real_plane = surface_mod.plane

    def held_plane(*args, **kwargs):  # the exact grid waits until the preview has been seen
        cancel = kwargs.get("cancel")
        if not (cancel is not None and cancel.is_set()):  # the page's cache look-up passes through
            release.wait(timeout=600)
        return real_plane(*args, **kwargs)

    monkeypatch.setattr(surface_mod, "plane", held_plane)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "20")  # the preview finishes well within; the held grid does not
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["surface_seed"] = 4242  # a plane no other test has computed (jobs are shared by key)
    try:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        captions = [c.value for c in at.caption]
        estimate = [c for c in captions if c.startswith("Estimated time on this machine:")]
        assert estimate and "ms per point" in estimate[0]
        assert "Before you change Steps and Run: 11 steps about" in estimate[0] and "101 steps about" in estimate[0]
        preview = [c for c in captions if c.startswith("Preview: a ")]
        assert preview, captions
        assert "train samples" in preview[0] and "standard error of the loss" in preview[0]
        assert "The exact grid on all samples follows." in preview[0]
        assert len(at.get("vega_lite_chart")) >= 1  # the preview is drawn
    finally:
        release.set()
        from landscape_core import jobs

        for job in jobs.registry().jobs():  # let the held grid finish: no worker outlives the test
            job.cancel()
            assert job.wait(timeout=300)
