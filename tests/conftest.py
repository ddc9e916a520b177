"""Shared fixtures: an isolated disk cache per test session, float64 helpers."""

import os
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="landscape-test-cache-")
os.environ.setdefault("LANDSCAPE_CACHE_DIR", _CACHE)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A private, empty cache directory for one test."""
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"
