"""End-to-end: the dashboard in a real browser (Debian's Chromium driven by Playwright).

A module-scoped fixture warms the demos in this test session's cache, starts
``streamlit run app.py --server.headless true`` on a free port, and waits for
``/_stcore/health``. Every wait is on the app's state (script run state, elements
appearing), never a sleep; a wait for a computation has no total time limit and fails only
when the app stops showing progress (``browser.wait_while_working``). Screenshots of each page go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import CHROMIUM, ROOT, demo_server, wait_for_app_run, wait_while_working

from dashboard_ui.charts import PLANE_SIDE_PAIR

SHOTS = ROOT / "test-output" / "screenshots"
DOWNLOAD_GUARD_MS = 900_000  # a hang guard, not a schedule: the file is rendered on click (vl-convert)
CHART = '[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]'
WARM = ("digits-mlp", "digits-seeds", "digits-bn-cnn", "logistic-blobs")
# url path -> whether the page must draw a chart with its defaults
PAGES = {
    "": True,  # Surface (default page)
    "interpolation": True,
    "sharpness": True,
    "trajectory": True,
    "compare": True,
    "embedding": True,
    "text": True,
    "your_model": False,
    "guide": False,
}

OWN_PAGES = ("", "compare")  # this frame's pages: a chart is required with the defaults

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def app_url():
    with demo_server(WARM, "streamlit-e2e.log") as url:
        yield url


def open_page(page, url: str, path: str) -> None:
    page.goto(f"{url}/{path}")
    wait_for_app_run(page)
    settle(page)


def settle(page) -> None:
    """Widgets whose code is still loading show grey skeletons: wait until none is left."""
    wait_while_working(page, page.locator('[data-testid="stSkeleton"]'), state="detached")


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


def nav_paths(page) -> list[str]:
    links = page.locator('[data-testid="stSidebarNavLink"]')
    wait_while_working(page, links)
    return [re.sub(r"^https?://[^/]+/?", "", links.nth(i).get_attribute("href") or "") for i in range(links.count())]


def test_every_page_renders_without_exception(app_url, page):
    # the first visit of this server goes straight to a page, not to "/": it must still get
    # the app's navigation and sidebar (Streamlit's legacy pages/ folder mode is overridden)
    open_page(page, app_url, "guide")
    wait_while_working(page, page.get_by_text("Workspace", exact=True))
    paths = nav_paths(page)
    assert paths[0] == "" and "compare" in paths and "guide" in paths
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems, slow = [], []
    for path in paths:
        open_page(page, app_url, path)
        try:
            if PAGES.get(path, False):
                # a chart, or (for a page whose default job is long) its running job widget
                wanted = CHART if path in OWN_PAGES else f'{CHART}, [data-testid="stProgress"]'
                wait_while_working(page, page.locator(wanted))
                if page.locator(CHART).count() == 0:
                    slow.append(path)
            no_exception(page)
        except Exception as exc:  # record, screenshot, and go on to the next page
            problems.append(f"/{path}: {str(exc).splitlines()[0]}")
        settle(page)
        page.screenshot(path=str(SHOTS / f"{path or 'surface'}.png"), full_page=True)
    assert not problems, problems
    if slow:
        print(f"pages still computing their default result when screenshotted: {slow}")


def test_small_job_runs_to_completion_then_download(app_url, page):
    open_page(page, app_url, "")
    # the coarse pass, then the full plane; done when no progress bar is left
    wait_while_working(page, page.locator('[data-testid="stVegaLiteChart"]'))
    wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
    wait_for_app_run(page)
    no_exception(page)
    readout = page.get_by_text(re.compile(r"train loss at the base point")).first
    assert readout.is_visible()
    # as drawn by the browser: each map keeps its square plot (axes, legend and title around it), neither
    # stretched to the column nor shrunk to fit it
    side = PLANE_SIDE_PAIR  # two splits, two maps side by side
    for box in [page.locator('[data-testid="stVegaLiteChart"]').nth(i).bounding_box() for i in range(2)]:
        assert side + 40 <= box["height"] <= side + 160 and side + 40 <= box["width"] <= side + 260, box
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "surface-finished.png"), full_page=True)
    with page.expect_download(timeout=DOWNLOAD_GUARD_MS) as info:
        page.get_by_test_id("stDownloadButton").filter(has_text="CSV").first.click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    assert Path(download.path()).read_text().startswith("alpha,beta,quantity,value")
    with page.expect_download(timeout=DOWNLOAD_GUARD_MS) as info:
        page.get_by_test_id("stDownloadButton").filter(has_text="PNG").first.click()
    assert Path(info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_large_job_can_be_cancelled(app_url, page):
    open_page(page, app_url, "")
    # the BatchNorm CNN demo: a 101 x 101 plane is minutes of CPU work (the MLP demo's takes seconds)
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="digits-bn-cnn").click()
    wait_while_working(
        page, page.get_by_test_id("stSidebar").get_by_text(re.compile(r"Model A: .* - 3,866 parameters"))
    )
    wait_for_app_run(page)
    page.get_by_label("Seed").fill("7")
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Steps per axis").get_by_role("slider")
    slider.focus()
    slider.press("End")
    page.get_by_role("button", name="Run", exact=True).click()
    progress = page.get_by_text(re.compile(r"101x101 plane: [\d,]+ of 10,201 points"))
    wait_while_working(page, progress)  # after the coarse 11 x 11 pass, however long it takes under load
    page.get_by_role("button", name="Cancel").first.click()
    wait_while_working(
        page,
        page.get_by_text(re.compile(r"101x101 plane: cancelled; kept [\d,]+ of 10,201 points; Run resumes from there")),
    )
    wait_for_app_run(page)
    no_exception(page)
    assert page.get_by_role("button", name="Run again").is_visible()
    assert page.get_by_test_id("stVegaLiteChart").count() >= 1  # the coarse pass stays on screen
    settle(page)
    page.screenshot(path=str(SHOTS / "surface-cancelled.png"), full_page=True)
