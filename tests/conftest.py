"""Shared fixtures: an isolated disk cache per test session, one torch thread, and for the
browser tests a headless Chromium (``browser``, per module) and a fresh page (``page``)."""

import os
import tempfile

import pytest

from landscape_core.threads import single_thread

_CACHE = tempfile.mkdtemp(prefix="landscape-test-cache-")
os.environ.setdefault("LANDSCAPE_CACHE_DIR", _CACHE)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A private, empty cache directory for one test (warnings already given are forgotten)."""
    from landscape_core import cache

    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path / "cache"))
    cache.reset()
    yield tmp_path / "cache"
    cache.reset()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a whole test module, restored after it.

    Tiny models and tensors run fastest, and steadiest on a busy two-core machine, on one
    thread (see ``landscape_core.threads``). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    with single_thread():
        yield


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (``tests/browser.py``) for the browser tests of one module."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from browser import launch_chromium

    with sync_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context (no cookies, no history), 1400x2200, downloads accepted."""
    context = browser.new_context(viewport={"width": 1400, "height": 2200}, accept_downloads=True)
    yield context.new_page()
    context.close()
