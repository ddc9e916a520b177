"""A shared link in Chromium: settings made on Surface (and on Trajectory) go into the URL, the URL
opened in a fresh browser context shows the same widgets and the same result, one press of the
back button returns to the previous page's URL, and back and forward on one page step through its
settings. Waits are on the app's state (``tests/browser.py``), never on time.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser import CHROMIUM, ROOT, demo_server, wait_for_app_run, wait_while_working

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")
SHOTS = ROOT / "test-output" / "screenshots"
READOUT = re.compile(r"train loss at the base point")


@pytest.fixture(scope="module")
def app_url():
    with demo_server(["logistic-blobs"], "streamlit-links-e2e.log") as url:
        yield url


def _context(browser):
    return browser.new_context(viewport={"width": 1400, "height": 2200})


def _surface_done(page) -> str:
    """Wait for the plane to be drawn and no job to run; the readout's text."""
    wait_while_working(page, page.locator('[data-testid="stVegaLiteChart"]'))
    wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
    wait_for_app_run(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    readout = page.get_by_text(READOUT).first
    wait_while_working(page, readout)
    return readout.inner_text()


def _widgets(page) -> dict:
    steps = page.locator('[data-testid="stSlider"]').filter(has_text="Steps per axis")
    return {
        "seed": page.get_by_label("Seed").input_value(),
        "steps": steps.get_by_test_id("stSliderThumbValue").inner_text(),
        "workspace": page.get_by_test_id("stSidebar").get_by_role("combobox", name="Problem").input_value(),
        "title": page.locator("h1").first.inner_text(),
    }


def _query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def test_a_link_reopens_the_view_in_a_fresh_browser_and_back_returns(app_url, browser):
    context = _context(browser)
    page = context.new_page()
    page.goto(f"{app_url}/?workspace=logistic-blobs&surface_steps=11")  # a link with two settings
    first = _surface_done(page)
    page.wait_for_url(re.compile(r"surface_seed=0"))  # the run wrote the whole view into the URL
    before = page.url
    page.get_by_label("Seed").fill("5")
    page.get_by_role("button", name="Run", exact=True).click()
    wait_while_working(page, page.get_by_label("Seed"))
    page.wait_for_url(re.compile(r"surface_seed=5"))  # the URL follows the run
    readout = _surface_done(page)
    shared = page.url
    query = _query(shared)
    assert query["workspace"] == "logistic-blobs" and query["surface_steps"] == "11"
    mine = _widgets(page)
    assert mine["seed"] == "5" and mine["steps"] == "11" and "logistic-blobs" in mine["workspace"]

    # the colleague: a fresh browser context (no cookies, no session) opens the link
    other = _context(browser)
    theirs = other.new_page()
    theirs.goto(shared)
    assert _surface_done(theirs) == readout
    assert _widgets(theirs) == mine
    SHOTS.mkdir(parents=True, exist_ok=True)
    theirs.screenshot(path=str(SHOTS / "link-opened.png"), full_page=True)
    other.close()

    # another page, then one back: the previous page's URL and view. The page switch adds one history
    # entry, which already carries the URL's settings (Streamlit empties the query string on a switch;
    # the app puts it back before the navigation pushes the entry), so no bare entry is left for back
    entries = page.evaluate("history.length")
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Guide").click()
    page.wait_for_url(re.compile(r"/guide\?workspace="), wait_until="commit")
    wait_for_app_run(page)
    assert urlparse(page.url).path == "/guide" and _query(page.url) == query
    assert page.evaluate("history.length") == entries + 1
    page.go_back(wait_until="commit")
    assert page.url == shared
    assert _surface_done(page) == readout
    assert _widgets(page) == mine
    assert page.url == shared  # the run that back started wrote nothing over it

    # back once more: the entry before the Run (seed 0) and its view; forward: seed 5 again
    page.go_back(wait_until="commit")
    assert page.url == before
    wait_while_working(page, page.get_by_text(first, exact=True))
    assert _surface_done(page) == first and _widgets(page)["seed"] == "0"
    page.go_forward(wait_until="commit")
    assert page.url == shared
    wait_while_working(page, page.get_by_text(readout, exact=True))
    assert _surface_done(page) == readout and _widgets(page) == mine
    assert page.url == shared
    context.close()


def _trajectory_done(page) -> str:
    """Wait for the views, the plane and the gap table with no job running; the PCA readout's text."""
    wait_while_working(page, page.get_by_text("How faithful is the picture?"))
    wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
    wait_for_app_run(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    readout = page.get_by_text(re.compile(r"^PCA \(")).first
    wait_while_working(page, readout)
    return readout.inner_text()


def test_a_trajectory_link_reopens_the_view_in_a_fresh_browser(app_url, browser):
    context = _context(browser)
    page = context.new_page()
    page.goto(f"{app_url}/trajectory?workspace=logistic-blobs&traj_steps=11&traj_umap=false&traj_reference=first")
    _trajectory_done(page)
    page.get_by_role("combobox", name="PCA", exact=True).click()  # the PCA variant: the uncentred one
    page.get_by_role("option", name="uncentred, every parameter").click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.wait_for_url(re.compile(r"traj_pca=uncentred"))  # the URL follows the run
    readout = _trajectory_done(page)
    shared = page.url
    query = _query(shared)
    assert query["traj_reference"] == "first" and query["traj_steps"] == "11" and query["traj_umap"] == "false"
    assert "uncentred" in readout

    other = _context(browser)
    theirs = other.new_page()
    theirs.goto(shared)
    assert _trajectory_done(theirs) == readout
    for label in ("PCA reference point", "PCA"):
        box = {p: p.get_by_role("combobox", name=label, exact=True).input_value() for p in (page, theirs)}
        assert box[theirs] == box[page], label
    assert "uncentred" in box[page] and "first" in readout
    SHOTS.mkdir(parents=True, exist_ok=True)
    theirs.screenshot(path=str(SHOTS / "link-opened-trajectory.png"), full_page=True)
    other.close()
    context.close()
