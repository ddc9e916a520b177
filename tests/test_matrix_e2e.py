"""A few cells of the page x workspace matrix in a real browser (Chromium via Playwright).

What AppTest cannot show: the browser keeps a widget's value (and sends it back) across
workspace switches, and widgets leave the page on navigation. Cells: an upload of three state
dicts and data opened on Interpolation and Surface (the snippet error of issue 17); the
Data splits selection across workspace switches (issue 18, item 2); Surface settings across a
visit to the Guide (issue 18, item 4). Every wait is on the app's state, never a sleep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import workspace_kinds as wk
from browser import CHROMIUM, ROOT, demo_server, wait_for_app_run

SHOTS = ROOT / "test-output" / "screenshots"
CHART = '[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]'
WARM = ("digits-mlp", "digits-bn-cnn", "logistic-blobs")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return wk.make_files(tmp_path_factory.mktemp("matrix_e2e"))


@pytest.fixture(scope="module")
def app_url(files):
    with demo_server(WARM, "streamlit-matrix-e2e.log") as url:
        yield url


def open_page(page, url: str, path: str) -> None:
    page.goto(f"{url}/{path}")
    wait_for_app_run(page)
    page.get_by_test_id("stSidebar").get_by_text("Workspace", exact=True).wait_for(timeout=60_000)


def navigate(page, title: str) -> None:
    """Go to another page through the sidebar's navigation, as a user does (same session)."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    wait_for_app_run(page)


def clean(page) -> None:
    """No exception box, no error alert, no traceback text."""
    shown = page.locator('[data-testid="stException"]')
    assert shown.count() == 0, shown.first.inner_text()
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()
    assert "Traceback (most recent call last)" not in page.locator('[data-testid="stMain"]').inner_text()


def pick_workspace(page, label: str) -> None:
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name=label, exact=True).click()
    wait_for_app_run(page)


def splits_shown(page) -> list[str]:
    """The Data splits chips as the browser shows them, e.g. ['train (1347 samples)', 'val (450 samples)']."""
    box = page.get_by_test_id("stSidebar").get_by_test_id("stMultiSelect")
    return re.findall(r"(?:train|val) \(\d+ samples\)", box.inner_text())


def test_splits_follow_each_workspace_in_the_browser(app_url, page):
    open_page(page, app_url, "guide")
    assert splits_shown(page) == ["train (1347 samples)", "val (450 samples)"]
    pick_workspace(page, "logistic-blobs")
    page.get_by_text("val (200 samples)").first.wait_for(timeout=60_000)
    assert splits_shown(page) == ["train (400 samples)", "val (200 samples)"]
    pick_workspace(page, "digits-mlp")
    page.get_by_text("val (450 samples)").first.wait_for(timeout=60_000)
    assert splits_shown(page) == ["train (1347 samples)", "val (450 samples)"]
    pick_workspace(page, "digits-bn-cnn")
    page.get_by_text("Model A: ").filter(has_text="3,866 parameters").first.wait_for(timeout=120_000)
    wait_for_app_run(page)
    assert splits_shown(page) == ["train (1347 samples)", "val (450 samples)"]
    clean(page)


def test_surface_settings_survive_a_visit_to_the_guide(app_url, page):
    open_page(page, app_url, "guide")
    pick_workspace(page, "logistic-blobs")
    navigate(page, "Surface")
    page.get_by_label("Seed").fill("7")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Steps per axis").get_by_role("slider")
    slider.focus()
    slider.press("End")  # 101
    page.get_by_role("button", name="Run", exact=True).click()
    wait_for_app_run(page)
    steps = page.locator('[data-testid="stSlider"]').filter(has_text="Steps per axis")
    assert steps.get_by_test_id("stSliderThumbValue").inner_text() == "101"  # what the user set
    navigate(page, "Guide")
    page.get_by_text("Guide: reading loss landscapes").wait_for()
    navigate(page, "Surface")
    page.locator(CHART).first.wait_for(timeout=120_000)
    assert page.get_by_label("Seed").input_value() == "7"
    steps = page.locator('[data-testid="stSlider"]').filter(has_text="Steps per axis")
    assert steps.get_by_test_id("stSliderThumbValue").inner_text() == "101"
    clean(page)


def _upload(page, form_index: int, groups: list[list[Path]], button: str) -> None:
    form = page.locator('[data-testid="stForm"]').nth(form_index)
    for i, group in enumerate(groups):
        form.locator('input[type="file"]').nth(i).set_input_files([str(p) for p in group])
        for p in group:
            form.get_by_text(p.name).first.wait_for()
    form.get_by_role("button", name=button, exact=True).click()
    wait_for_app_run(page)


def test_uploaded_state_dicts_and_data_on_interpolation_and_surface(app_url, page, files):
    open_page(page, app_url, "your_model")  # on digits-mlp, the first demo
    weights = [files["folder"] / f"{name}.pt" for name in wk.UPLOADED_CHECKPOINTS]
    _upload(page, 0, [weights, [files["folder"] / "train.pt"]], "Check and open")
    page.get_by_text("Accepted:").first.wait_for(timeout=120_000)
    clean(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    # Trajectory, the report's other page, is an AppTest cell: its UMAP view compiles for about two
    # minutes in every new server process. Surface shows its snippet after the coarse pass.
    for title, path in (("Interpolation", "interpolation"), ("Surface", "surface")):
        navigate(page, title)
        page.locator(CHART).first.wait_for(timeout=300_000)
        snippet = page.get_by_text("Copy as Python: recompute this result with landscape_core").first
        snippet.wait_for(timeout=300_000)
        wait_for_app_run(page)
        clean(page)
        snippet.click()
        page.get_by_text("This result comes from uploaded files").first.wait_for()
        code = page.locator('[data-testid="stCode"]').filter(has_text="def build():").first.inner_text()
        assert "9,610 parameters" in code and "Linear(in_features=64, out_features=128" in code
        page.screenshot(path=str(SHOTS / f"matrix_uploads_{path}.png"), full_page=True)
