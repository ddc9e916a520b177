"""The dashboard under the dark theme in Chromium (``streamlit run --theme.base dark``): the
Interpolation page draws its charts on a dark page, and a screenshot is kept for a person to
look at (``test-output/screenshots/interpolation-dark.png``). Waits are on the app's state.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser import CHROMIUM, ROOT, launch_chromium, streamlit_server, wait_for_app_run, wait_while_working

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")
SHOTS = ROOT / "test-output" / "screenshots"


def _luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_interpolation_page_in_the_dark_theme():
    env = {"LANDSCAPE_CACHE_DIR": os.environ["LANDSCAPE_CACHE_DIR"]}
    warm = "from landscape_core import demos; demos.load('logistic-blobs')"
    subprocess.run([sys.executable, "-c", warm], cwd=ROOT, env={**os.environ, **env}, check=True, timeout=600)
    with streamlit_server(["--theme.base", "dark"], "streamlit-dark-e2e.log", env) as url:
        with sync_api.sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.goto(f"{url}/interpolation?workspace=logistic-blobs&interp_steps=15")
            wait_for_app_run(page)
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            wait_while_working(page, charts.nth(1))  # loss and accuracy along the path
            wait_while_working(page, page.locator('[data-testid="stProgress"]'), state="detached")
            wait_for_app_run(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            background = page.locator('[data-testid="stApp"]').evaluate("e => getComputedStyle(e).backgroundColor")
            assert _luminance(background) < 0.2, background
            SHOTS.mkdir(parents=True, exist_ok=True)
            charts.first.screenshot(path=str(SHOTS / "interpolation-dark-chart.png"))
            page.screenshot(path=str(SHOTS / "interpolation-dark.png"), full_page=True)
            browser.close()
