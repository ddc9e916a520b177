"""Shared fixtures: an isolated disk cache per test session, float64 helpers."""

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
