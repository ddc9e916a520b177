"""The two real-model examples in a real browser: ResNet-20 on Surface and Compare, MiniLM on
Surface, Compare and Text. Each page is waited on until its first chart (a preview while the full
grid is still computing) or its job's progress bar shows, checked for exceptions and error boxes,
and screenshotted to ``test-output/screenshots/real-*.png`` (looked at by a person).

Small sizes so that a loaded machine finishes: ResNet-20 trained two epochs on 64 generated images,
MiniLM's head on 16 sentences. Waits are on the app's state, with no total time limit
(``browser.wait_while_working`` fails only when nothing changes for five minutes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import CHROMIUM, ROOT, launch_chromium, streamlit_server, wait_for_app_run, wait_while_working

from landscape_core import minilm

SHOTS = ROOT / "test-output" / "screenshots"
CHART = '[data-testid="stVegaLiteChart"], [data-testid="stPlotlyChart"]'
EXAMPLES = ROOT / "examples"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]
sync_api = pytest.importorskip("playwright.sync_api")


def visit(page, url: str, path: str, shot: str) -> None:
    page.goto(f"{url}/{path}")
    wait_for_app_run(page)
    # the first chart (a preview, refined while the job runs), or the running job's progress bar
    wait_while_working(page, page.locator(f'{CHART}, [data-testid="stProgress"]'))
    wait_while_working(page, page.locator('[data-testid="stSkeleton"]'), state="detached")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / shot), full_page=True)
    errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()
    assert page.locator(f'{CHART}, [data-testid="stProgress"]').count() >= 1


def open_spec(spec: str, env: dict, pages: list[tuple[str, str]], log: str) -> None:
    with streamlit_server(["--", "--spec", spec], log, env) as url, sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1800}).new_page()
            for path, shot in pages:
                visit(page, url, path, shot)
        finally:
            browser.close()


def test_resnet_example_in_the_browser(tmp_path):
    env = {"LANDSCAPE_RESNET_TRAIN": "64", "LANDSCAPE_RESNET_EPOCHS": "2", "LANDSCAPE_EXAMPLES_DIR": str(tmp_path)}
    pages = [("", "real-resnet-surface.png"), ("compare", "real-resnet-compare.png")]
    open_spec(f"{EXAMPLES / 'resnet_spec.py'}:build", env, pages, "streamlit-resnet.log")


@pytest.mark.skipif(not minilm.minilm_available()[0], reason=minilm.minilm_available()[1])
def test_minilm_example_in_the_browser():
    env = {"LANDSCAPE_MINILM_TRAIN": "16"}
    pages = [("", "real-minilm-surface.png"), ("compare", "real-minilm-compare.png"), ("text", "real-minilm-text.png")]
    open_spec(f"{EXAMPLES / 'minilm_sentiment_spec.py'}:build", env, pages, "streamlit-minilm.log")
