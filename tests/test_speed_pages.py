"""The first picture on the Surface and Compare pages: the estimate before Run, a labelled preview
on a data subset, then the exact grid filling in coarse to fine, then the exact grid (cached)."""

import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
HOLD = 600.0  # seconds: a hang guard for events, never a schedule

pytestmark = pytest.mark.slow


class HeldGrid:
    """``preview.refine_plane`` of the pages' exact grids (``use_cache=True``) held by events:
    not started until ``start``, then after its first pass (``first_pass``) until ``release``.
    The previews' own subset grids (no cache) pass through."""

    def __init__(self, monkeypatch):
        import landscape_core.preview as preview_mod
        from dashboard_ui import ui

        self.start, self.first_pass, self.release = threading.Event(), threading.Event(), threading.Event()
        self.real = preview_mod.refine_plane
        monkeypatch.setattr(preview_mod, "refine_plane", self)
        # AppTest polls no job panel while the test holds a grid: no job may cancel itself as unwatched
        monkeypatch.setattr(ui, "ORPHAN_SECONDS", HOLD)

    def __call__(self, *args, **kwargs):
        if not kwargs.get("use_cache"):
            return self.real(*args, **kwargs)
        assert self.start.wait(HOLD)
        publish = kwargs.pop("on_level")

        def on_level(picture):
            publish(picture)
            if picture.settings["level"] == 0:
                self.first_pass.set()
                assert self.release.wait(HOLD)

        return self.real(*args, on_level=on_level, **kwargs)

    def let_go(self):
        """Release every hold, cancel every job and wait for it: no worker outlives the test."""
        from landscape_core import jobs

        self.start.set()
        self.release.set()
        for job in jobs.registry().jobs():
            job.cancel()
            assert job.wait(timeout=HOLD)


def _captions(at) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [c.value for c in at.caption]


def test_surface_page_shows_the_estimate_a_labelled_preview_then_the_grid_filling_in(monkeypatch):
    from landscape_core import jobs
    from landscape_core.defaults import SURFACE
    from landscape_core.execution import Runner
    from landscape_core.preview import refinement_levels

    grid = f"Exact {SURFACE.steps}x{SURFACE.steps} grid"
    held = HeldGrid(monkeypatch)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "20")  # the preview finishes well within; the held grid does not
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["surface_seed"] = 4242  # a plane no other test has computed (jobs are shared by key)
    try:
        at.run()
        captions = _captions(at)
        estimate = [c for c in captions if c.startswith("Estimated time on this machine:")]
        assert estimate and "ms per point" in estimate[0]
        assert "Before you change Steps and Run: 11 steps about" in estimate[0] and "101 steps about" in estimate[0]
        preview = [c for c in captions if c.startswith("Preview: a ")]
        assert preview, captions
        assert "train samples" in preview[0] and "standard error of the loss" in preview[0]
        assert "The exact grid on all samples follows." in preview[0]
        assert len(at.get("vega_lite_chart")) >= 1  # the preview is drawn
        assert not at.get("download_button")  # a preview is not offered as a result
        assert not held.first_pass.is_set()  # the preview came before any cell of the exact grid

        monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "0")
        held.start.set()
        assert held.first_pass.wait(HOLD)
        at.run()
        captions = _captions(at)
        filling = [c for c in captions if c.startswith(f"{grid} on all samples, filling in coarse to fine")]
        assert filling and f"pass 1 of {len(refinement_levels(SURFACE.steps))}," in filling[0], captions
        assert not [c for c in captions if c.startswith("Preview: a ")]
        assert len(at.get("vega_lite_chart")) >= 1 and not at.get("download_button")

        held.release.set()
        for job in jobs.registry().jobs():
            assert job.wait(timeout=HOLD)
        at.run()
        captions = _captions(at)
        assert not [c for c in captions if c.startswith(("Preview: a ", grid))]
        assert {"CSV", "NPZ", "PNG"} <= {b.proto.label for b in at.get("download_button")}

        counted = []
        real_outputs = Runner.outputs
        monkeypatch.setattr(Runner, "outputs", lambda *a, **k: counted.append(1) or real_outputs(*a, **k))
        again = AppTest.from_file(APP, default_timeout=300)
        again.session_state["surface_seed"] = 4242
        again.run()
        captions = _captions(again)
        assert not counted  # the finished grid was cached under the plane's key: nothing evaluated
        assert not [c for c in captions if c.startswith(("Preview: a ", grid, "Estimated time"))]
        assert {"CSV", "NPZ", "PNG"} <= {b.proto.label for b in again.get("download_button")}
    finally:
        held.let_go()


def test_compare_page_shows_both_models_labelled_previews_first(monkeypatch):
    held = HeldGrid(monkeypatch)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "20")
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "compare.py"), default_timeout=300)
    at.session_state["compare_seed"] = 4243  # planes no other test has computed
    try:
        at.run()
        captions = _captions(at)
        preview = [c for c in captions if c.startswith("Preview: a ")]
        assert len(preview) == 2, captions  # model A and model B
        for caption in preview:
            assert "train samples" in caption and "standard error of the loss" in caption
        assert any(c.startswith("The difference B - A, the linked view and the downloads follow") for c in captions)
        assert len(at.get("vega_lite_chart")) >= 2
        assert not held.first_pass.is_set()
    finally:
        held.let_go()


def test_trajectory_page_shows_a_labelled_preview_of_the_pca_plane_then_the_grid_filling_in(monkeypatch):
    from landscape_core import jobs
    from landscape_core.preview import refinement_levels

    held = HeldGrid(monkeypatch)
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "20")
    at = AppTest.from_file(str(Path(APP).parent / "pages" / "trajectory.py"), default_timeout=300)
    at.session_state["ui_workspace"] = "logistic-blobs"
    at.session_state["traj_umap"] = False
    at.session_state["traj_steps"] = 11
    at.session_state["traj_margin"] = 0.35  # a plane no other test has computed
    try:
        at.run()
        captions = _captions(at)
        preview = [c for c in captions if c.startswith("Preview: a ")]
        assert len(preview) == 1, captions
        assert "of 400 train samples" in preview[0] and "standard error of the loss" in preview[0]
        assert not held.first_pass.is_set()
        assert not [e for e in at.expander if e.label == "Downloads: the PCA-plane surface"]

        monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "0")
        held.start.set()
        assert held.first_pass.wait(HOLD)
        at.run()
        captions = _captions(at)
        filling = [c for c in captions if c.startswith("Exact 11x11 grid on all samples, filling in")]
        assert filling and f"pass 1 of {len(refinement_levels(11))}," in filling[0], captions

        held.release.set()
        for job in jobs.registry().jobs():
            assert job.wait(timeout=HOLD)
        at.run()
        captions = _captions(at)
        assert not [c for c in captions if c.startswith(("Preview: a ", "Exact 11x11"))]
        assert [e for e in at.expander if e.label == "Downloads: the PCA-plane surface"]
    finally:
        held.let_go()
